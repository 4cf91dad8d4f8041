"""Convergence verification of residue slices: a 2^K sieve built on the fly, K steps per survivor.

A large verify job is cut by residue rather than by range (workloads.slices):
n = 2^K A + B, and a chunk is a run of residues B, each across every A of the
job. For K up to 51 the sieve is never stored. Its residues are built slice
by slice from the stored 2^k1 sieve (steptables.build_sieve): a residue
B = 2^k1 h + b of the slice, with b a survivor of the stored sieve, reaches
3^c1 h + T^k1(b) after k1 steps of T, and the next K - k1 steps take the
parities of that value modulo 2^(K - k1). Two extension tables
(steptables.build_sieve_extension, e1 and e2 bits) say whether B drops
within those steps and, if not, move it on, so only survivors are ever made
whole (two words).

Every surviving B then serves all its A at once: n = 2^K A + B reaches
v = 3^c A + T^K(B) after K steps, and the next A is one addition further.
The walk from v takes k2 steps of T per lookup in a table of 2^k2 entries
(3^c and T^k2(r) for r = v mod 2^k2): v = 3^c (v >> k2) + T^k2(r). The walk
checks for a drop below n after each lookup, so the step it reports is an
upper bound of the glide: a value whose bound does not beat the best glide
its A has seen (or the job's floor, see workloads.slices) cannot be a record;
any other, and any that reaches the step bound or comes near 2^128, is
walked again exactly (glidewalk.glide_rest), which also finds the values
that leave 128 bits.

Records are taken per A: residues come in increasing order within a chunk,
so for each A the chunk keeps the best glide seen and reports every value
that beats it; normalising the union (workloads.records) gives the job's
records in order of n.

Residues skipped without a walk: those the sieve drops (glide at most the
sieve's glide_max, below the job's floor), n = 3m + 2 and n = 9m + 4 where
their predecessor is covered (`skip_below`, `skip_from`; see
workloads.verify), and, with `join`, odd B whose trajectory joins that of
B - 1 after K steps with the same number of increases (deltaN = 1: n then
converges because n - 1 does; its glide is not computed).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcthreads.backends import kernelcache
from hpcthreads.backends.glidewalk import glide_rest
from hpcthreads.backends.sieve import residue_index
from hpcthreads.backends.wideops import (
    OK,
    ONE,
    OVERFLOW,
    THREE,
    TOO_LONG,
    U64,
    ZERO,
    below,
    halve,
    mul_add,
)

kernelcache.configure()

PACK_SHIFT = U64(56)
PACK_MASK = U64((1 << 56) - 1)
# The 3^2 sieve drops n mod 9 in 2, 4, 5, 8
BAD_MOD9 = U64(sum(1 << r for r in (2, 4, 5, 8)))
# Output tables: candidates (hi, lo, glide), unresolved and overflowing values (hi, lo, 0)
NC, NL, NO, WALKED = range(4)


def walk_table(k2: int) -> np.ndarray:
    """Interleaved (3^c, T^k2(r) | (k2 + c) << 32) for every r < 2^k2: k2 steps of T per lookup."""
    size = 1 << k2
    table = np.zeros(2 * size, np.uint64)
    for r in range(size):
        d, c = r, 0
        for _ in range(k2):
            if d & 1:
                d, c = (3 * d + 1) >> 1, c + 1
            else:
                d >>= 1
        table[2 * r] = 3**c
        table[2 * r + 1] = d | ((k2 + c) << 32)
    return table


@njit(inline="always")
def steps_of_residue(b, bits):
    """(hi, lo, c): T^bits(b) in two words and its odd steps, for b < 2^bits, step by step."""
    vhi, vlo = ZERO, b
    c = 0
    for _ in range(bits):
        if vlo & ONE:
            vhi, vlo = mul_add(vhi, vlo, THREE, ONE)
            c += 1
        vhi, vlo = halve(vhi, vlo)
    return vhi, vlo, c


@njit(cache=True)
def verify_slice(
    K, bfirst, ifirst, blast, iend, a0, a1, b0, b1, max_steps, floor_glide,
    sres, spacked, k1, kill1, ce1, de1, e1, kill2, ce2, de2, e2, p3hi, p3lo,
    table, k2, killx, ex, skip_from_hi, skip_from_lo, skip_below_hi, skip_below_lo, mod9, join,
):  # fmt: skip
    """Verify the residues bfirst..blast (of the body n = 2^K A + B, a0..a1; see workloads.slices).

    Residue B has the values A in [a0 + (B < b0), a1 + (B < b1)); the chunk
    takes them from the `ifirst`-th for bfirst and up to the `iend`-th
    (exclusive) for blast. Returns (candidates, too_long, overflows, walked):
    rows (hi, lo, glide) of the values that beat the best glide of their A
    (at least `floor_glide`), rows (hi, lo, 0) of the values past `max_steps`
    and of those that would leave 128 bits, and how many values were walked.
    """
    cand = np.zeros((64, 3), np.uint64)
    long_ = np.zeros((8, 3), np.uint64)
    over = np.zeros((8, 3), np.uint64)
    state = np.zeros(4, np.int64)
    abest = np.full(np.int64(a1 - a0) + 1, np.int64(floor_glide), np.int64)
    buf = np.empty((np.int64(a1 - a0) + 2, 3), np.uint64)
    k1mask = (ONE << U64(k1)) - ONE
    limit_hi = walk_limit_hi(k2)
    two_k9 = U64(1 << (K % 6)) % U64(9)  # 2^K mod 9 (2 has order 6 mod 9)
    nsurv = sres.shape[0]
    h = bfirst >> U64(k1)
    hlast = blast >> U64(k1)
    while h <= hlast:
        lo_b = bfirst & k1mask if h == (bfirst >> U64(k1)) else ZERO
        j = residue_index(sres, lo_b)
        hi_b = blast & k1mask if h == hlast else k1mask
        while j < nsurv and sres[j] <= hi_b:
            entry = spacked[j]
            b = sres[j]
            j += 1
            c1 = entry >> PACK_SHIFT
            # Parities of the next e1 + e2 steps: the value mod 2^(e1 + e2) suffices (words wrap)
            x = p3lo[c1] * h + (entry & PACK_MASK)
            r1 = x & ((ONE << U64(e1)) - ONE)
            if kill1[(c1 << U64(e1)) | r1]:
                continue
            c2 = c1 + ce1[r1]
            x2 = (x >> U64(e1)) * p3lo[ce1[r1]] + de1[r1]
            r2 = x2 & ((ONE << U64(e2)) - ONE)
            if e2 and kill2[(c2 << U64(e2)) | r2]:
                continue
            B = (h << U64(k1)) | b
            cand, long_, over = walk_residue(
                B, c1, entry & PACK_MASK, h, r1, r2, K, bfirst, ifirst, blast, iend, a0, a1, b0, b1,
                max_steps, k1, ce1, de1, e1, ce2, de2, e2, p3hi, p3lo, table, k2, limit_hi, two_k9, killx, ex,
                skip_from_hi, skip_from_lo, skip_below_hi, skip_below_lo, mod9, join, abest,
                cand, long_, over, state, buf,
            )  # fmt: skip
        h += ONE
    return cand[: state[NC]].copy(), long_[: state[NL]].copy(), over[: state[NO]].copy(), state[WALKED]


@njit(cache=True)
def walk_limit_hi(k2):
    """The walk takes a lookup only while v's high word is below this: 3^c (v >> k2) + d then fits.

    v >> k2 then has a high word below 2^64 / 3^k2 / 2, so 3^c (v >> k2) + d < 2^127.
    """
    p = ONE
    for _ in range(k2):
        p *= THREE
    return ((~ZERO // p) << U64(k2)) >> ONE


@njit(inline="always")
def a_bound(thi, tlo, B, kshift):
    """The least A with 2^K A + B >= t (0 when t <= B), t below 2^128; A below 2^64 is the caller's bound."""
    if thi == ZERO and tlo <= B:
        return ZERO
    # (t - B - 1) >> K, plus one; past 2^64 - 1 it is no bound at all
    dlo = tlo - B - ONE
    dhi = thi - U64(tlo < B + ONE)
    if (dhi >> kshift) != ZERO:
        return ~ZERO
    return ((dlo >> kshift) | (dhi << (U64(64) - kshift))) + ONE


@njit(cache=True)
def walk_residue(
    B, c1, t1, h, r1, r2, K, bfirst, ifirst, blast, iend, a0, a1, b0, b1, max_steps,
    k1, ce1, de1, e1, ce2, de2, e2, p3hi, p3lo, table, k2, limit_hi, two_k9, killx, ex,
    skip_from_hi, skip_from_lo, skip_below_hi, skip_below_lo, mod9, join, abest,
    cand, long_, over, state, buf,
):  # fmt: skip
    """Every A of one surviving residue B: its value after K steps, then the walk of each.

    The sieve goes `ex` bits further per value (steptables.build_sieve_extension
    for K bits): the next ex steps of v take the parities of v mod 2^ex, and
    killx says, for this residue's c, which of them drop within K + ex steps.
    The values left are gathered first, then walked four at a time.
    """
    kshift = U64(K)
    # T^K(B) in two words: k1 steps from the stored table, then the two extensions
    dhi, dlo = mul_add(ZERO, h, p3lo[c1], t1)
    ca, cb = ce1[r1], ce2[r2]
    if e1:
        dhi, dlo = mul_add(dhi >> U64(e1), (dlo >> U64(e1)) | (dhi << U64(64 - e1)), p3lo[ca], de1[r1])
    if e2:
        dhi, dlo = mul_add(dhi >> U64(e2), (dlo >> U64(e2)) | (dhi << U64(64 - e2)), p3lo[cb], de2[r2])
    c = c1 + ca + cb
    if join:
        # deltaN = 1: B - 1 joins B after K steps with the same increases
        jhi, jlo, jc = steps_of_residue(B - ONE, K)
        if jhi == dhi and jlo == dlo and U64(jc) == c:
            return cand, long_, over
    # This residue's values A in [first, end)
    first = a0 + U64(B < b0)
    end = a1 + U64(B < b1)
    if B == bfirst:
        first += U64(ifirst)
    if B == blast:
        end = a0 + U64(B < b0) + U64(iend)
    if first >= end:
        return cand, long_, over
    # One row per value at most: the tables never grow inside the walk
    room = np.int64(end - first) + 1
    cand = fit_rows(cand, state[NC] + room)
    long_ = fit_rows(long_, state[NL] + room)
    over = fit_rows(over, state[NO] + room)
    m = gather(
        B, c, dhi, dlo, first, end, kshift, p3hi, p3lo, two_k9, killx, ex,
        skip_from_hi, skip_from_lo, skip_below_hi, skip_below_lo, mod9, buf,
    )  # fmt: skip
    state[WALKED] += m
    steps0 = np.int64(K) + np.int64(c)
    lanes(
        B, kshift, steps0, buf, m, max_steps, table, U64(k2), limit_hi, abest, a0, cand, long_, over, state,
        p3hi[c], p3lo[c], dhi, dlo,
    )  # fmt: skip
    return cand, long_, over


@njit(cache=True)
def fit_rows(table, need):
    if need <= table.shape[0]:
        return table
    bigger = np.zeros((max(need, 2 * table.shape[0]), 3), np.uint64)
    bigger[: table.shape[0]] = table
    return bigger


@njit(inline="always")
def gather(
    B, c, dhi, dlo, first, end, kshift, p3hi, p3lo, two_k9, killx, ex,
    skip_from_hi, skip_from_lo, skip_below_hi, skip_below_lo, mod9, buf,
):  # fmt: skip
    """The values A of [first, end) that neither sieve drops, as rows (A, v hi, v lo) of `buf`."""
    phi, plo = p3hi[c], p3lo[c]
    # v = 3^c A + T^K(B)
    vhi, vlo = mul_add(ZERO, first, plo, dlo)
    vhi += phi * first + dhi
    # The 3^2 sieve: A where n mod 9 is a skipped class, outside [a_below, a_from)
    bad9 = ZERO
    if mod9:
        b9 = B % U64(9)
        for a9 in range(9):
            if (BAD_MOD9 >> ((two_k9 * U64(a9) + b9) % U64(9))) & ONE:
                bad9 |= ONE << U64(a9)
    a_below = a_bound(skip_below_hi, skip_below_lo, B, kshift)
    a_from = a_bound(skip_from_hi, skip_from_lo, B, kshift)
    a9 = first % U64(9)
    emask = (ONE << U64(ex)) - ONE
    row = c << U64(ex)
    m = 0
    a = first
    while a < end:
        skip9 = (bad9 >> a9) & ONE and (a < a_below or a >= a_from)
        if not skip9 and not killx[row | (vlo & emask)]:
            buf[m, 0], buf[m, 1], buf[m, 2] = a, vhi, vlo
            m += 1
        a += ONE
        a9 += ONE
        if a9 == U64(9):
            a9 = ZERO
        vlo += plo
        vhi += phi + U64(vlo < plo)
    return m


@njit(inline="always")
def lookup(nhi, nlo, vhi, vlo, steps, mul, ds, k2):
    """k2 steps of T from v by one table entry (3^c, T^k2(r) | steps << 32): (vhi, vlo, steps, dropped)."""
    vhi, vlo = mul_add(vhi >> k2, (vlo >> k2) | (vhi << (U64(64) - k2)), mul, ds & U64(0xFFFFFFFF))
    return vhi, vlo, steps + np.int64(ds >> U64(32)), below(vhi, vlo, nhi, nlo)


# A lane walks (RUNNING), its value dropped (DROPPED: the steps bound its glide), or it stopped short
# (STOPPED: the step bound, or v near 2^128) or has nothing to walk (IDLE)
RUNNING, DROPPED, STOPPED, IDLE = range(4)


@njit(inline="always")
def lane_step(nhi, nlo, vhi, vlo, steps, state, max_steps, limit_hi, mul, ds, k2):
    """One lookup of a running lane (mul, ds: its table entry, loaded by the caller)."""
    if state != RUNNING:
        return vhi, vlo, steps, state
    if vhi >= limit_hi or steps >= max_steps:
        return vhi, vlo, steps, STOPPED
    vhi, vlo, steps, dropped = lookup(nhi, nlo, vhi, vlo, steps, mul, ds, k2)
    return vhi, vlo, steps, DROPPED if dropped else RUNNING


@njit(cache=True)
def lanes(
    B, kshift, steps0, buf, m, max_steps, table, k2, limit_hi, abest, a0, cand, long_, over, state,
    phi, plo, dhi, dlo,
):  # fmt: skip
    """Walk the m values of `buf`, four at a time, so that their lookups overlap.

    The lanes are written out (no helper takes an array: that costs a
    reference count per call, even inlined); a lane that is done is settled
    and takes the next value of `buf`.
    """
    mask = (ONE << k2) - ONE
    z = ZERO
    a_1, n1h, n1l, v1h, v1l, s1, f1 = z, z, z, z, z, steps0, IDLE
    a_2, n2h, n2l, v2h, v2l, s2, f2 = z, z, z, z, z, steps0, IDLE
    a_3, n3h, n3l, v3h, v3l, s3, f3 = z, z, z, z, z, steps0, IDLE
    a_4, n4h, n4l, v4h, v4l, s4, f4 = z, z, z, z, z, steps0, IDLE
    i = 0
    while True:
        # Settle the lanes that are done, then refill every idle lane
        for lane_no in range(4):
            if lane_no == 0:
                a, nhi, nlo, f, s = a_1, n1h, n1l, f1, s1
            elif lane_no == 1:
                a, nhi, nlo, f, s = a_2, n2h, n2l, f2, s2
            elif lane_no == 2:
                a, nhi, nlo, f, s = a_3, n3h, n3l, f3, s3
            else:
                a, nhi, nlo, f, s = a_4, n4h, n4l, f4, s4
            if f == RUNNING:
                continue
            if f == STOPPED or (f == DROPPED and s > abest[np.int64(a - a0)]):
                settle(
                    a, nhi, nlo, phi, plo, dhi, dlo, steps0, max_steps, abest, a0, cand, long_, over, state
                )  # fmt: skip
            f = IDLE
            vhi = vlo = ZERO
            if i < m:
                a, vhi, vlo = buf[i, 0], buf[i, 1], buf[i, 2]
                nhi, nlo = a >> (U64(64) - kshift), (a << kshift) | B
                s, f = steps0, RUNNING
                i += 1
            if lane_no == 0:
                a_1, n1h, n1l, v1h, v1l, s1, f1 = a, nhi, nlo, vhi, vlo, s, f
            elif lane_no == 1:
                a_2, n2h, n2l, v2h, v2l, s2, f2 = a, nhi, nlo, vhi, vlo, s, f
            elif lane_no == 2:
                a_3, n3h, n3l, v3h, v3l, s3, f3 = a, nhi, nlo, vhi, vlo, s, f
            else:
                a_4, n4h, n4l, v4h, v4l, s4, f4 = a, nhi, nlo, vhi, vlo, s, f
        if f1 == IDLE and f2 == IDLE and f3 == IDLE and f4 == IDLE:
            return
        # Lookups until some lane is done (while values are left to refill it), or all are
        while (f1 == RUNNING and f2 == RUNNING and f3 == RUNNING and f4 == RUNNING) or (
            i >= m and (f1 == RUNNING or f2 == RUNNING or f3 == RUNNING or f4 == RUNNING)
        ):
            r1, r2, r3, r4 = v1l & mask, v2l & mask, v3l & mask, v4l & mask
            v1h, v1l, s1, f1 = lane_step(n1h, n1l, v1h, v1l, s1, f1, max_steps, limit_hi,
                                         table[2 * r1], table[2 * r1 + ONE], k2)  # fmt: skip
            v2h, v2l, s2, f2 = lane_step(n2h, n2l, v2h, v2l, s2, f2, max_steps, limit_hi,
                                         table[2 * r2], table[2 * r2 + ONE], k2)  # fmt: skip
            v3h, v3l, s3, f3 = lane_step(n3h, n3l, v3h, v3l, s3, f3, max_steps, limit_hi,
                                         table[2 * r3], table[2 * r3 + ONE], k2)  # fmt: skip
            v4h, v4l, s4, f4 = lane_step(n4h, n4l, v4h, v4l, s4, f4, max_steps, limit_hi,
                                         table[2 * r4], table[2 * r4 + ONE], k2)  # fmt: skip


@njit(cache=True)
def settle(a, nhi, nlo, phi, plo, dhi, dlo, steps0, max_steps, abest, a0, cand, long_, over, state):
    """The exact glide of a value whose bound may beat its A's best (or that has none): tables updated."""
    vhi, vlo = mul_add(ZERO, a, plo, dlo)
    vhi += phi * a + dhi
    status, glide = glide_rest(nhi, nlo, vhi, vlo, steps0, max_steps)
    if status == OK and glide > max_steps:
        status = TOO_LONG
    if status == TOO_LONG:
        long_[state[NL], 0], long_[state[NL], 1] = nhi, nlo
        state[NL] += 1
    elif status == OVERFLOW:
        over[state[NO], 0], over[state[NO], 1] = nhi, nlo
        state[NO] += 1
    elif glide > abest[np.int64(a - a0)]:
        abest[np.int64(a - a0)] = glide
        cand[state[NC], 0], cand[state[NC], 1], cand[state[NC], 2] = nhi, nlo, U64(glide)
        state[NC] += 1
