"""Convergence verification with a 2^k sieve: only residues that do not drop need work.

A start value n = 2^k a + b whose residue b is sieved out (see
steptables.build_sieve) drops below itself within k steps of T, with a glide
of at most `glide_max`, for every n >= `exact_from`. Such values are covered
without being touched once the chunk's running maximum glide has reached
`glide_max`: from then on none of them can be a (strict) glide record, so
the glide records and the maximum stay those of the plain computation. Until
then, and wherever the sieve's conditions do not hold, every value is
followed. Survivors start from 3^c a + T^k(b) after k steps, taken a by a
and residue by residue. The sieve then goes `extra` bits further for each
start value (steptables.build_sieve_extension: a table indexed by c and
v mod 2^extra, no table of the deeper residues), which sieves out about 55%
of the table's survivors at 12 bits and moves the others `extra` steps on;
a batch of table entries keeps its survivors without a branch per entry.
Survivors continue by rounds of one odd step and all its
halvings (glidewalk; one word while the values fit, two survivors at a time
so that their rounds overlap), so the glide is exact and records are taken
in order of n.

From n >= (3S + 1)/2 in a range from S, n = 3m + 2 and n = 9m + 4 are
skipped too (the 3^2 sieve, see the note at the end of this module).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcthreads.backends import kernelcache
from hpcthreads.backends.cpukernels import BLOCK_BITS, SIEVE_MASK, SIEVE_SHIFT, grow, put
from hpcthreads.backends.glidewalk import glide_pair, glide_pair2, glide_rest
from hpcthreads.backends.wideops import (
    OK,
    ONE,
    OVERFLOW,
    TOO_LONG,
    U64,
    ZERO,
    mul_add,
    next_start,
    shift_right,
)

kernelcache.configure()

# Survivors' first step 3^c a + d stays inside 128 bits for n below 2^(64+12)
SIEVE_LIMIT_HI = U64(1 << 12)
PACK_SHIFT = U64(56)
PACK_MASK = U64((1 << 56) - 1)
# Table entries per batch of the survivor scan
BATCH = 256
# Bit r (r < 18): keep n with n mod 9 = r mod 9; the 3^2 sieve drops 2, 5, 8 (n = 3m + 2) and 4
KEEP_ALL = U64((1 << 18) - 1)
KEEP_MOD9 = U64(sum(1 << r for r in range(18) if r % 9 not in (2, 4, 5, 8)))
# Scan state: list lengths, the running maximum glide, the start values walked
NG, NL, NO, BEST, WALKED = range(5)


@njit(cache=True)
def verify_range(
    shi, slo, count, max_steps, cold, pow3, sres, spacked, sbits, kill, ce, de, extra, glide_max, exact_from,
    sres9, skip_ahi, skip_alo,
):  # fmt: skip
    """Convergence check of [start, start+count).

    Returns (glide_records, too_long, overflows, walked): chunk-local glide
    records as rows (offset, 0, glide), the offsets that exceeded `max_steps`
    or would leave 128 bits, and how many start values the sieve left to
    walk (`counts_as_walked`).
    """
    grec = np.zeros((64, 3), np.uint64)
    long_ = np.zeros((8, 3), np.uint64)
    over = np.zeros((8, 3), np.uint64)
    state = np.zeros(5, np.int64)
    state[BEST] = -1
    i = np.int64(0)  # not the literal 0: one compiled scan_verify, not two
    while True:
        i = scan_verify(
            shi, slo, i, count, max_steps, cold, pow3, sres, spacked, sbits, kill, ce, de, extra,
            glide_max, exact_from, sres9, skip_ahi, skip_alo, grec, long_, over, state,
        )  # fmt: skip
        if i >= count:
            break
        grec = grow(grec, state[NG])
        long_ = grow(long_, state[NL])
        over = grow(over, state[NO])
    walked = state[WALKED]
    return grec[: state[NG]].copy(), long_[: state[NL], 0].copy(), over[: state[NO], 0].copy(), walked


@njit(cache=True)
def scan_verify(
    shi, slo, first, count, max_steps, cold, pow3, sres, spacked, sbits, kill, ce, de, extra,
    glide_max, exact_from, sres9, skip_ahi, skip_alo, grec, long_, over, state,
):  # fmt: skip
    """The loop of `verify_range` from offset `first`; returns where it stopped.

    Every value is followed until the sieve applies (the running maximum glide
    has reached `glide_max` and n >= `exact_from`), only survivors after.
    """
    bits = U64(BLOCK_BITS)
    mask = U64((1 << BLOCK_BITS) - 1)
    ng, nl, no, best = state[NG], state[NL], state[NO], state[BEST]
    # The last start value decides whether the sieve's first step fits in 128 bits
    ehi, elo = shi, slo + U64(count - 1)
    if elo < slo:
        ehi += ONE
    sieve_ok = sres.shape[0] > 0 and max_steps >= glide_max and ehi < SIEVE_LIMIT_HI
    nhi, nlo = shi, slo + U64(first)
    if nlo < slo:
        nhi += ONE
    walked = state[WALKED]
    i = first
    while i < count:
        if ng == grec.shape[0] or nl == long_.shape[0] or no == over.shape[0]:
            break
        sieved = sieve_ok and (nhi != ZERO or nlo >= exact_from)
        if sieved and best >= glide_max:
            state[WALKED] = walked
            state[NG], state[NL], state[NO], state[BEST] = ng, nl, no, best
            return scan_survivors(
                shi, slo, i, count, max_steps, pow3, sres, spacked, sbits, kill, ce, de, extra,
                sres9, skip_ahi, skip_alo, grec, long_, over, state,
            )  # fmt: skip
        if sieved:
            walked += counts_as_walked(nhi, nlo, pow3, sres, spacked, sbits, kill, extra, skip_ahi, skip_alo)
        else:
            walked += 1
        status = OK
        glide = 0
        if nhi == ZERO and nlo == ONE:
            glide = -1  # glide(1) = 0 by definition
        else:
            # The block table's glide sieve: n drops within its first block
            sieve = cold[2 * (nlo & mask) + ONE]
            if (sieve >> SIEVE_SHIFT) != ZERO and (nhi != ZERO or (nlo >> bits) >= (sieve & SIEVE_MASK)):
                glide = np.int64(sieve >> SIEVE_SHIFT)
            else:
                status, glide = glide_rest(nhi, nlo, nhi, nlo, np.int64(0), max_steps)
        if glide == -1:
            glide = 0
        if status == OK and glide > max_steps:
            status = TOO_LONG
        if status == TOO_LONG:
            nl = put(long_, nl, U64(i), ZERO, ZERO)
        elif status == OVERFLOW:
            no = put(over, no, U64(i), ZERO, ZERO)
        elif glide > best:
            best = glide
            ng = put(grec, ng, U64(i), ZERO, U64(glide))
        nhi, nlo = next_start(nhi, nlo)
        i += 1
    state[NG], state[NL], state[NO], state[BEST], state[WALKED] = ng, nl, no, best, walked
    return i


@njit(cache=True)
def scan_survivors(
    shi, slo, first, count, max_steps, pow3, sres, spacked, sbits, kill, ce, de, extra,
    sres9, skip_ahi, skip_alo, grec, long_, over, state,
):  # fmt: skip
    """The survivors of the sieve from offset `first`; returns where it stopped.

    Start values n = 2^k a + b are taken a by a, and for each a residue by
    residue, a batch of table entries at a time: n and its value after k
    steps, 3^c a + d, are one shift and one multiply-add from the entry; the
    extension (steptables.build_sieve_extension) then sieves out the pairs
    that drop within `extra` more steps and moves the others on by those
    steps. The batch keeps the rest, in order, without a branch per entry.
    Its values go by pairs; the pair's results are then taken first, second.

    From a = `skip_a` on, the batch also drops n = 3m + 2 and n = 9m + 4
    (see "The 3^2 sieve" at the end of this module): n mod 9 is a's share,
    (2^k a) mod 9, plus the entry's b mod 9 (`sres9`).
    """
    sshift = U64(sbits)
    back = U64(64) - sshift
    smask = (ONE << sshift) - ONE
    ext = U64(extra)
    emask = (ONE << ext) - ONE
    nsurv = sres.shape[0]
    ng, nl, no, best, walked = state[NG], state[NL], state[NO], state[BEST], state[WALKED]
    nhi, nlo = shi, slo + U64(first)
    if nlo < slo:
        nhi += ONE
    ehi, elo = shi, slo + U64(count)  # the end of the chunk (exclusive)
    if elo < slo:
        ehi += ONE
    ahi, alo = nhi >> sshift, (nlo >> sshift) | (nhi << back)
    lasthi, lastlo = ehi >> sshift, (elo >> sshift) | (ehi << back)  # a of the end
    idx = residue_index(sres, nlo & smask)
    batch_b = np.empty(BATCH, np.uint64)
    batch_hi = np.empty(BATCH, np.uint64)
    batch_lo = np.empty(BATCH, np.uint64)
    batch_steps = np.empty(BATCH, np.int64)
    two_k9 = U64(1 << (sbits % 6)) % U64(9)  # 2^k mod 9 (2 has order 6 mod 9)
    a9 = (ahi % U64(9) * U64(7) + alo % U64(9)) % U64(9)  # 2^64 = 7 (mod 9)
    while True:
        base9 = two_k9 * a9 % U64(9)
        skip = ahi > skip_ahi or (ahi == skip_ahi and alo >= skip_alo)
        keep9 = KEEP_MOD9 if skip else KEEP_ALL
        # Residues of this a: all, or those below the end's residue for the last a
        stop = nsurv
        if ahi == lasthi and alo == lastlo:
            stop = residue_index(sres, elo & smask)
        hbase, lbase = (ahi << sshift) | (alo >> back), alo << sshift
        while idx < stop:
            kept = 0
            for j in range(idx, min(stop, idx + BATCH)):
                entry = spacked[j]
                c = entry >> PACK_SHIFT
                vhi, vlo = mul_add(ahi, alo, pow3[c], entry & PACK_MASK)
                r = vlo & emask
                if extra:
                    vhi, vlo = shift_right(vhi, vlo, ext)
                vhi, vlo = mul_add(vhi, vlo, pow3[ce[r]], de[r])
                batch_b[kept] = sres[j]
                batch_hi[kept] = vhi
                batch_lo[kept] = vlo
                batch_steps[kept] = np.int64(sbits + extra) + np.int64(c) + np.int64(ce[r])
                alive = np.int64((keep9 >> (base9 + U64(sres9[j]))) & ONE)
                kept += alive - (alive & np.int64(kill[(c << ext) | r]))
            idx = min(stop, idx + BATCH)
            for q in range(0, kept, 2):
                b1, vhi, vlo, steps = batch_b[q], batch_hi[q], batch_lo[q], batch_steps[q]
                pair = q + 1 < kept
                b2 = ZERO
                if pair:
                    b2, whi, wlo = batch_b[q + 1], batch_hi[q + 1], batch_lo[q + 1]
                    steps2 = batch_steps[q + 1]
                    if hbase == ZERO and vhi == ZERO and whi == ZERO:
                        st1, g1, st2, g2 = glide_pair(
                            lbase | b1, vlo, steps, lbase | b2, wlo, steps2, max_steps
                        )  # fmt: skip
                    else:
                        st1, g1, st2, g2 = glide_pair2(
                            hbase, lbase | b1, vhi, vlo, steps, hbase, lbase | b2, whi, wlo, steps2, max_steps
                        )
                else:
                    st1, g1 = glide_rest(hbase, lbase | b1, vhi, vlo, steps, max_steps)
                    st2, g2 = OK, np.int64(0)
                walked += 2 if pair else 1
                if st1 == OK and g1 <= best and st2 == OK and g2 <= best:
                    continue
                # In order: the first value, then the second of a pair
                for k in range(2 if pair else 1):
                    status, glide, b = (st1, g1, b1) if k == 0 else (st2, g2, b2)
                    if status == OK and glide <= best:
                        continue
                    if status == OK and glide > max_steps:
                        status = TOO_LONG
                    i = np.int64((lbase | b) - slo)  # offsets are below 2^63
                    if status == TOO_LONG:
                        nl = put(long_, nl, U64(i), ZERO, ZERO)
                    elif status == OVERFLOW:
                        no = put(over, no, U64(i), ZERO, ZERO)
                    else:
                        best = glide
                        ng = put(grec, ng, U64(i), ZERO, U64(glide))
                    if ng == grec.shape[0] or nl == long_.shape[0] or no == over.shape[0]:
                        # A pair's second value is walked again (and counted) from i + 1
                        walked -= 1 if pair and k == 0 else 0
                        state[NG], state[NL], state[NO], state[BEST], state[WALKED] = ng, nl, no, best, walked
                        return i + 1
        if ahi == lasthi and alo == lastlo:
            break
        idx = 0
        alo += ONE
        if alo == ZERO:
            ahi += ONE
        a9 += ONE
        if a9 == U64(9):
            a9 = ZERO
    state[NG], state[NL], state[NO], state[BEST], state[WALKED] = ng, nl, no, best, walked
    return count


@njit(cache=True)
def counts_as_walked(nhi, nlo, pow3, sres, spacked, sbits, kill, extra, skip_ahi, skip_alo):
    """1 when n survives the sieve (table, extension and 3^2 sieve), else 0.

    Where the sieve applies, `walked` counts its survivors whether or not the
    chunk's running maximum glide has let it skip the others yet: that
    warm-up depends on where a chunk starts, and `walked` must not (every
    backend and every chunking of a range report the same count).
    """
    sshift = U64(sbits)
    b = nlo & ((ONE << sshift) - ONE)
    j = residue_index(sres, b)
    if j == sres.shape[0] or sres[j] != b:
        return 0
    ahi, alo = nhi >> sshift, (nlo >> sshift) | (nhi << (U64(64) - sshift))
    entry = spacked[j]
    c = entry >> PACK_SHIFT
    vhi, vlo = mul_add(ahi, alo, pow3[c], entry & PACK_MASK)
    r = vlo & ((ONE << U64(extra)) - ONE)
    if kill[(c << U64(extra)) | r]:
        return 0
    if ahi > skip_ahi or (ahi == skip_ahi and alo >= skip_alo):
        n9 = (nhi % U64(9) * U64(7) + nlo % U64(9)) % U64(9)  # 2^64 = 7 (mod 9)
        if (KEEP_MOD9 >> n9) & ONE == ZERO:
            return 0
    return 1


@njit(inline="always")
def residue_index(sres, want):
    """The index of the first survivor residue at or above `want` (a binary search)."""
    lo, hi = 0, sres.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if sres[mid] < want:
            lo = mid + 1
        else:
            hi = mid
    return lo


# The 3^2 sieve. n = 3m + 2 is T(2m + 1), and n = 9m + 4 is T^3(8m + 3): a
# smaller start p (about 2n/3, 8n/9) rises to n before it drops, so
# glide(n) < glide(p), and n drops below n if p drops below p. When p lies
# in the job's range (n >= (3S + 1)/2 for a range from S covers both), n is
# neither a glide record nor the maximum: p, or an earlier value that beats
# it, comes before n in the range. Chunk-local records may then hold values
# that n would have hidden; the records of the whole range, normalised over
# all chunks (workloads.records), are exact. What this kernel cannot know is
# p's status: if p needs more than max_steps, so may n. VerifyWorkload.finish
# follows the successors of every unresolved value of the job itself. A range
# [S, S + count) with count < S/2 never reaches (3S + 1)/2, and the sieve is
# then off.
