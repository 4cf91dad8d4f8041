"""Numba CUDA kernels of the residue-slice verify (backends.slicesieve), as collatz_kernels.cu has them.

Two kernels, the host side in gpuslice.py:

- `slice_build`: one thread per stored 2^k1 survivor b and high part h of a
  residue B = 2^k1 h + b of the slice; the two extension tables and the join
  rule drop B or keep it, and a kept B is appended with its odd steps c and
  T^K(B) (two words) to a device list by a global atomic counter.
- `slice_walk`: tasks (a group of kept residues, sorted by B; A) in a
  grid-stride loop, each taking its residues in order of B as numba-cpu
  does for one A: v = 3^c A + T^K(B) for n = 2^K A + B, the 3^2 sieve and
  the per-value sieve, then k2 steps of T per lookup in the walk table,
  copied once per block into shared memory. A value whose step bound beats
  the task's best glide so far (from the job's floor, raised by the exact
  glide of each value reported), or whose walk stopped short, is reported;
  the host settles it exactly.

The arithmetic is slicesieve's, step for step; all of it in uint64.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, uint64

U64 = np.uint64
ZERO = U64(0)
ONE = U64(1)
TWO = U64(2)
THREE = U64(3)
FOUR = U64(4)
LOW32 = U64(0xFFFFFFFF)
PACK_SHIFT = U64(56)
PACK_MASK = U64((1 << 56) - 1)
# n mod 9 in 2, 4, 5, 8: the 3^2 sieve's classes
BAD_MOD9 = U64(sum(1 << r for r in (2, 4, 5, 8)))
# The walk table in shared memory: 2^k2 packed entries, 3^c | d << 20 | steps << 40 (gpuslice.walk_entries)
WALK_BITS = 11
WALK_SIZE = 1 << WALK_BITS
FIELD20 = U64((1 << 20) - 1)
STOPPED_BIT = U64(1 << 63)
# 3v+1 fits in 128 bits iff (hi, lo) <= LIMIT128
LIMIT128_HI = U64(0x5555555555555555)
LIMIT128_LO = U64(0x5555555555555554)


@cuda.jit(device=True)
def mulhi(a, b):
    """The high word of a * b, from 32-bit halves (the simulator has no umul64hi)."""
    al, ah, bl, bh = a & LOW32, a >> U64(32), b & LOW32, b >> U64(32)
    lh, hl = al * bh, ah * bl
    mid = ((al * bl) >> U64(32)) + (lh & LOW32) + (hl & LOW32)
    return ah * bh + (lh >> U64(32)) + (hl >> U64(32)) + (mid >> U64(32))


@cuda.jit(device=True)
def mul_add(hi, lo, m, d):
    """(hi, lo) * m + d modulo 2^128, as wideops.mul_add."""
    rlo = lo * m
    rhi = mulhi(lo, m) + hi * m
    slo = rlo + d
    return rhi + (ONE if slo < d else ZERO), slo


@cuda.jit(device=True)
def below(ahi, alo, bhi, blo):
    return ahi < bhi or (ahi == bhi and alo < blo)


@cuda.jit(device=True)
def a_bound(thi, tlo, b, kshift):
    """The least A with 2^K A + B >= t (0 when t <= B), as slicesieve.a_bound."""
    if thi == ZERO and tlo <= b:
        return ZERO
    dlo = tlo - b - ONE
    dhi = thi - (ONE if tlo < b + ONE else ZERO)
    if (dhi >> kshift) != ZERO:
        return ~ZERO
    return ((dlo >> kshift) | (dhi << (U64(64) - kshift))) + ONE


@cuda.jit(device=True)
def residue_steps(b, bits):
    """(hi, lo, c): T^bits(b) and its odd steps, step by step (slicesieve.steps_of_residue)."""
    vhi, vlo, c = ZERO, b, ZERO
    for _ in range(bits):
        if vlo & ONE:
            vhi, vlo = mul_add(vhi, vlo, THREE, ONE)
            c += ONE
        vhi, vlo = vhi >> ONE, (vlo >> ONE) | (vhi << U64(63))
    return vhi, vlo, c


@cuda.jit
def slice_build(
    nthreads, hfirst, jfirst, nsurv, K, k1, e1, e2, join, sres, spacked, kill1, ce1, de1, kill2, ce2, de2,
    p3lo, count, kept,
):  # fmt: skip
    """The residues of the slice that the extensions (and the join rule) keep: rows (B, c, T^K(B))."""
    t = U64(cuda.grid(1))
    if t >= nthreads:
        return
    q = jfirst + t
    hrel = q // nsurv
    j = q - hrel * nsurv
    h = hfirst + hrel
    entry = spacked[j]
    c1 = entry >> PACK_SHIFT
    t1 = entry & PACK_MASK
    # Parities of the next e1 + e2 steps: the value mod 2^(e1 + e2) suffices (words wrap)
    x = p3lo[c1] * h + t1
    r1 = x & ((ONE << e1) - ONE)
    if kill1[(c1 << e1) | r1]:
        return
    ca = U64(ce1[r1])
    x2 = (x >> e1) * p3lo[ca] + U64(de1[r1])
    r2 = x2 & ((ONE << e2) - ONE)
    if e2 != ZERO and kill2[((c1 + ca) << e2) | r2]:
        return
    b = (h << k1) | sres[j]
    dhi, dlo = mul_add(ZERO, h, p3lo[c1], t1)
    dhi, dlo = mul_add(dhi >> e1, (dlo >> e1) | (dhi << (U64(64) - e1)), p3lo[ca], U64(de1[r1]))
    cb = ZERO
    if e2 != ZERO:
        cb = U64(ce2[r2])
        dhi, dlo = mul_add(dhi >> e2, (dlo >> e2) | (dhi << (U64(64) - e2)), p3lo[cb], U64(de2[r2]))
    c = c1 + ca + cb
    if join != ZERO:
        # deltaN = 1: B - 1 joins B after K steps with the same increases
        jhi, jlo, jc = residue_steps(b - ONE, K)
        if jhi == dhi and jlo == dlo and jc == c:
            return
    at = cuda.atomic.add(count, 0, ONE)
    kept[FOUR * at] = b
    kept[FOUR * at + ONE] = c
    kept[FOUR * at + TWO] = dhi
    kept[FOUR * at + THREE] = dlo


@cuda.jit(device=True)
def walk_value(nhi, nlo, vhi, vlo, steps, max_steps, table, limit_hi):
    """(stopped, steps) of the walk from v, k2 steps per lookup (slicesieve.walk_bound)."""
    k2 = U64(WALK_BITS)
    mask = U64(WALK_SIZE - 1)
    while True:
        if vhi >= limit_hi or steps >= max_steps:
            return True, steps
        e = table[vlo & mask]
        qhi, qlo = vhi >> k2, (vlo >> k2) | (vhi << (U64(64) - k2))
        vhi, vlo = mul_add(qhi, qlo, e & FIELD20, (e >> U64(20)) & FIELD20)
        steps += e >> U64(40)
        if below(vhi, vlo, nhi, nlo):
            return False, steps


@cuda.jit(device=True)
def exact_glide(nhi, nlo, vhi, vlo, steps, bound):
    """n's glide from v, `steps` standard steps after n, one step at a time, knowing that v drops below
    n by step `bound`; 0 where a step would leave 128 bits (slice_exact_glide in collatz.cuh)."""
    while steps < bound:
        if vlo & ONE:
            if vhi > LIMIT128_HI or (vhi == LIMIT128_HI and vlo > LIMIT128_LO):
                return ZERO
            vhi, vlo = mul_add(vhi, vlo, THREE, ONE)
        else:
            vhi, vlo = vhi >> ONE, (vlo >> ONE) | (vhi << U64(63))
            if below(vhi, vlo, nhi, nlo):
                return steps + ONE
        steps += ONE
    return ZERO


@cuda.jit
def slice_walk(
    nthreads, ntasks, span, gsize, nkept, K, a0, a1, b0, b1, bfirst, ifirst, blast, iend, kept, max_steps,
    floor, walk, limit_hi, killx, ex, p3hi, p3lo, two_k9, mod9, from_hi, from_lo, below_hi, below_lo, sums,
    report, cap,
):  # fmt: skip
    """Tasks (group of kept residues sorted by B, A), each taking its residues in order of B: the values
    both sieves leave are counted (sums[0]) and walked; rows (i, A, steps | stopped << 63) of those that
    stopped short or whose bound beats the task's best glide so far (from `floor`, raised by the exact
    glide of each value reported). collatz_kernels.cu says more."""
    table = cuda.shared.array(WALK_SIZE, uint64)
    for i in range(cuda.threadIdx.x, WALK_SIZE, cuda.blockDim.x):
        table[i] = walk[i]
    cuda.syncthreads()
    t = U64(cuda.grid(1))
    if t >= nthreads:
        return
    walked = ZERO
    emask = (ONE << ex) - ONE
    task = t
    while task < ntasks:
        g = task // span
        a = a0 + (task - g * span)
        task += nthreads
        best = floor
        last = min((g + ONE) * gsize, nkept)
        i = g * gsize
        while i < last:
            b = kept[FOUR * i]
            i += ONE
            first = a0 + (ONE if b < b0 else ZERO)
            end = a1 + (ONE if b < b1 else ZERO)
            if b == bfirst:
                first += ifirst
            if b == blast:
                end = a0 + (ONE if b < b0 else ZERO) + iend
            if a < first or a >= end:
                continue
            row = i - ONE
            c = kept[FOUR * row + ONE]
            vhi, vlo = mul_add(ZERO, a, p3lo[c], kept[FOUR * row + THREE])
            vhi += p3hi[c] * a + kept[FOUR * row + TWO]
            if mod9 != ZERO:
                n9 = (two_k9 * (a % U64(9)) + b % U64(9)) % U64(9)
                if (BAD_MOD9 >> n9) & ONE:
                    if a < a_bound(below_hi, below_lo, b, K) or a >= a_bound(from_hi, from_lo, b, K):
                        continue
            if killx[(c << ex) | (vlo & emask)]:
                continue
            walked += ONE
            nhi, nlo = a >> (U64(64) - K), (a << K) | b
            stopped, steps = walk_value(nhi, nlo, vhi, vlo, K + c, max_steps, table, limit_hi)
            if not stopped and steps <= best:
                continue
            at = cuda.atomic.add(sums, 1, ONE)
            if at < cap:
                report[THREE * at] = row
                report[THREE * at + ONE] = a
                report[THREE * at + TWO] = steps | (STOPPED_BIT if stopped else ZERO)
            if not stopped:
                glide = exact_glide(nhi, nlo, vhi, vlo, K + c, steps)
                if glide <= max_steps and glide > best:
                    best = glide
    cuda.atomic.add(sums, 0, walked)


KERNELS = {"slice_build": slice_build, "slice_walk": slice_walk}
