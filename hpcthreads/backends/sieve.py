"""Convergence verification with a 2^k sieve: only residues that do not drop need work.

A start value n = 2^k a + b whose residue b is sieved out (see
steptables.build_sieve) drops below itself within k steps of T, with a glide
of at most `glide_max`, for every n >= `exact_from`. Such values are covered
without being touched once the chunk's running maximum glide has reached
`glide_max`: from then on none of them can be a (strict) glide record, so
the glide records and the maximum stay those of the plain computation. Until
then, and wherever the sieve's conditions do not hold, every value is
followed. Survivors start from 3^c a + T^k(b) after k steps and continue by
blocks of BLOCK_BITS steps, skipping a block whenever its lower bound stays
at or above n and walking it step by step otherwise, so the glide is exact.

A 3^k sieve (skipping n = 3m + 2, reached from the smaller 2m + 1) is not
used: it proves convergence but leaves the glide of the skipped values
unknown, and the glide records must stay exact.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcthreads.backends.cpukernels import BLOCK_BITS, SIEVE_MASK, SIEVE_SHIFT, grow, put
from hpcthreads.backends.wideops import (
    LIMIT64,
    MASK32,
    OK,
    ONE,
    OVERFLOW,
    THREE,
    TOO_LONG,
    U64,
    ZERO,
    less,
    mul_add,
    next_start,
    walk,
)

# Survivors' first step 3^c a + d stays inside 128 bits for n below 2^(64+12)
SIEVE_LIMIT_HI = U64(1 << 12)
BLOCK_LIMIT_HI = U64(1 << 32)
WALK64_LIMIT = U64(1 << 53)
PACK_SHIFT = U64(56)
PACK_MASK = U64((1 << 56) - 1)
# Scan state
NG, NL, NO, BEST = range(4)


@njit(cache=True)
def verify_range(
    shi, slo, count, max_steps, hot, cold, pow3, sres, spacked, sbits, glide_max, exact_from
):  # fmt: skip
    """Convergence check of [start, start+count).

    Returns (glide_records, too_long, overflows): chunk-local glide records as
    rows (offset, 0, glide), and the offsets that exceeded `max_steps` or would
    leave 128 bits.
    """
    grec = np.zeros((64, 3), np.uint64)
    long_ = np.zeros((8, 3), np.uint64)
    over = np.zeros((8, 3), np.uint64)
    state = np.zeros(4, np.int64)
    state[BEST] = -1
    i = 0
    while True:
        i = scan_verify(
            shi, slo, i, count, max_steps, hot, cold, pow3, sres, spacked, sbits, glide_max, exact_from,
            grec, long_, over, state,
        )  # fmt: skip
        if i >= count:
            break
        grec = grow(grec, state[NG])
        long_ = grow(long_, state[NL])
        over = grow(over, state[NO])
    return grec[: state[NG]].copy(), long_[: state[NL], 0].copy(), over[: state[NO], 0].copy()


@njit(cache=True)
def scan_verify(
    shi, slo, first, count, max_steps, hot, cold, pow3, sres, spacked, sbits, glide_max, exact_from,
    grec, long_, over, state,
):  # fmt: skip
    """The loop of `verify_range` from offset `first`; returns where it stopped."""
    bits = U64(BLOCK_BITS)
    back = U64(64 - BLOCK_BITS)
    mask = U64((1 << BLOCK_BITS) - 1)
    sshift = U64(sbits)
    smask = (ONE << sshift) - ONE
    nsurv = sres.shape[0]
    ng, nl, no, best = state[NG], state[NL], state[NO], state[BEST]
    idx = -1  # the next survivor's index, found again on entry
    # The last start value decides whether the sieve's first step fits in 128 bits
    ehi, elo = shi, slo + U64(count - 1)
    if elo < slo:
        ehi += ONE
    sieve_ok = nsurv > 0 and max_steps >= glide_max and ehi < SIEVE_LIMIT_HI
    nhi, nlo = shi, slo + U64(first)
    if nlo < slo:
        nhi += ONE
    ahi = alo = ZERO
    i = first
    while i < count:
        if ng == grec.shape[0] or nl == long_.shape[0] or no == over.shape[0]:
            break
        status = OK
        glide = 0
        if sieve_ok and best >= glide_max and (nhi != ZERO or nlo >= exact_from):
            # Jump to the next survivor at or after n
            if idx < 0:
                ahi, alo = nhi >> sshift, (nlo >> sshift) | (nhi << (U64(64) - sshift))
                # The first survivor residue at or above n's (a binary search)
                lo_, hi_, want = 0, nsurv, nlo & smask
                while lo_ < hi_:
                    mid = (lo_ + hi_) // 2
                    if sres[mid] < want:
                        lo_ = mid + 1
                    else:
                        hi_ = mid
                idx = lo_
            if idx == nsurv:
                alo += ONE
                if alo == ZERO:
                    ahi += ONE
                idx = 0
            b = sres[idx]
            nhi = (ahi << sshift) | (alo >> (U64(64) - sshift))
            nlo = (alo << sshift) | b
            i = np.int64(nlo - slo)  # offsets are below 2^63
            if i >= count:
                break
            idx += 1
            entry = spacked[idx - 1]
            c = entry >> PACK_SHIFT
            vhi, vlo = mul_add(ahi, alo, pow3[c], entry & PACK_MASK)
            steps = np.int64(sbits) + np.int64(c)
        else:
            idx = -1
            vhi, vlo = nhi, nlo
            steps = 0
            if nhi == ZERO and nlo == ONE:
                glide = -1  # glide(1) = 0 by definition
            else:
                sieve = cold[2 * (nlo & mask) + ONE]
                a_ok = nhi != ZERO or (nlo >> bits) >= (sieve & SIEVE_MASK)
                if (sieve >> SIEVE_SHIFT) != ZERO and a_ok:
                    glide = np.int64(sieve >> SIEVE_SHIFT)
        phi = plo = ZERO
        if glide == 0 and vhi == ZERO and nhi == ZERO:
            # One word, step by step: most survivors drop within a few dozen steps
            while steps < max_steps and vlo <= LIMIT64:
                if vlo & ONE:
                    vlo = (vlo * THREE + ONE) >> ONE
                    steps += 2
                else:
                    vlo >>= ONE
                    steps += 1
                    if vlo < nlo:
                        glide = steps
                        break
        while glide == 0:
            if steps >= max_steps:
                status = TOO_LONG
                break
            if vhi >= BLOCK_LIMIT_HI:
                status, vhi, vlo, phi, plo, steps, glide = walk(
                    vhi, vlo, nhi, nlo, phi, plo, steps, glide, BLOCK_BITS
                )
                if status != OK:
                    break
                continue
            b16 = vlo & mask
            bhi = vhi >> bits
            blo = (vlo >> bits) | (vhi << back)
            bound = cold[2 * b16]
            lhi, llo = mul_add(bhi, blo, bound & MASK32, bound >> U64(32))
            if less(lhi, llo, nhi, nlo) and vhi == ZERO and nhi == ZERO and vlo < WALK64_LIMIT:
                # One word holds the next BLOCK_BITS steps of T: (3/2)^16 < 2^10
                for _ in range(BLOCK_BITS):
                    if vlo & ONE:
                        vlo = (vlo * THREE + ONE) >> ONE
                        steps += 2
                    else:
                        vlo >>= ONE
                        steps += 1
                        if vlo < nlo:
                            glide = steps
                            break
                continue
            if less(lhi, llo, nhi, nlo):
                status, vhi, vlo, phi, plo, steps, glide = walk(
                    vhi, vlo, nhi, nlo, phi, plo, steps, glide, BLOCK_BITS
                )
                if status != OK:
                    break
                continue
            entry = hot[2 * b16]
            c = entry >> U64(32)
            vhi, vlo = mul_add(bhi, blo, pow3[c], entry & MASK32)
            steps += BLOCK_BITS + np.int64(c)
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
    state[NG], state[NL], state[NO], state[BEST] = ng, nl, no, best
    return i
