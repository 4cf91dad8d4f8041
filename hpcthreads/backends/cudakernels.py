"""Numba CUDA kernels: the kernels of collatz_kernels.cu, written again for numba-cuda.

Same arguments, same arithmetic as collatz.cuh and cpukernels.py, so that all
backends agree bit for bit. Imported only by the numba-cuda backend; under
NUMBA_ENABLE_CUDASIM=1 they run on Numba's CUDA simulator. All arithmetic
stays in uint64: Numba turns uint64 mixed with int64 into float64.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from hpcthreads.backends import cudaslice

U64 = np.uint64
ZERO = U64(0)
ONE = U64(1)
TWO = U64(2)
THREE = U64(3)
SHIFT63 = U64(63)
LIMIT64 = U64(0x5555555555555554)
LIMIT128_HI = U64(0x5555555555555555)
LIMIT128_LO = U64(0x5555555555555554)
LOW32 = U64(0xFFFFFFFF)
# The sieve table's packed entries: c (odd steps) above bit 56, d below (sieve.py)
PACK_SHIFT = U64(56)
PACK_MASK = U64((1 << 56) - 1)
# Bit r set: n with n mod 9 = r is walked; the 3^2 sieve skips 2, 4, 5 and 8 (sieve.KEEP_MOD9)
KEEP_MOD9 = U64(sum(1 << r for r in range(9) if r not in (2, 4, 5, 8)))
OK = 0
OVERFLOW = 1
TOO_LONG = 2
ABSENT = 3


@cuda.jit(device=True)
def less(ahi, alo, bhi, blo):
    return ahi < bhi or (ahi == bhi and alo < blo)


@cuda.jit(device=True)
def too_big_for_odd_step(hi, lo):
    return hi > LIMIT128_HI or (hi == LIMIT128_HI and lo > LIMIT128_LO)


@cuda.jit(device=True)
def triple_plus_one(hi, lo):
    dlo = lo << ONE
    dhi = (hi << ONE) | (lo >> SHIFT63)
    slo = dlo + lo
    shi = dhi + hi + (ONE if slo < lo else ZERO)
    slo += ONE
    if slo == ZERO:
        shi += ONE
    return shi, slo


@cuda.jit(device=True)
def halve(hi, lo):
    return hi >> ONE, (lo >> ONE) | (hi << SHIFT63)


@cuda.jit(device=True)
def ctz(x):
    """Trailing zeros of a nonzero word (a binary search: the simulator's ffs is 32-bit)."""
    n = ZERO
    for width in (U64(32), U64(16), U64(8), U64(4), U64(2), U64(1)):
        if (x & ((ONE << width) - ONE)) == ZERO:
            n += width
            x >>= width
    return n


@cuda.jit(device=True)
def shift_out_zeros(hi, lo):
    if lo == ZERO:
        k = ctz(hi)
        return ZERO, hi >> k, k + U64(64)
    k = ctz(lo)
    if k == ZERO:
        return hi, lo, ZERO
    return hi >> k, (lo >> k) | (hi << (U64(64) - k)), k


@cuda.jit(device=True)
def add_offset(shi, slo, off):
    lo = slo + off
    return shi + (ONE if lo < slo else ZERO), lo


@cuda.jit(device=True)
def collatz_number(nhi, nlo, tdelay, tpeak, tglide, tsize):
    """(status, delay, glide, peak_hi, peak_lo); zeros unless the status is OK."""
    if nhi == ZERO and nlo < tsize:
        return OK, U64(tdelay[nlo]), U64(tglide[nlo]), ZERO, tpeak[nlo]
    vhi, vlo, phi, plo = nhi, nlo, nhi, nlo
    steps = ZERO
    while True:
        if (vlo & ONE) == ZERO:
            vhi, vlo = halve(vhi, vlo)
            steps += ONE
            if less(vhi, vlo, nhi, nlo):
                break
        elif vhi == ZERO and vlo <= LIMIT64:
            vlo = vlo * THREE + ONE
            if phi == ZERO and vlo > plo:
                plo = vlo
            vlo >>= ONE
            steps += TWO
        else:
            if too_big_for_odd_step(vhi, vlo):
                return OVERFLOW, ZERO, ZERO, ZERO, ZERO
            vhi, vlo = triple_plus_one(vhi, vlo)
            if less(phi, plo, vhi, vlo):
                phi, plo = vhi, vlo
            vhi, vlo = halve(vhi, vlo)
            steps += TWO
    glide = steps
    while vhi != ZERO or vlo >= tsize:
        if vlo & ONE:
            if vhi == ZERO and vlo <= LIMIT64:
                vlo = vlo * THREE + ONE
                if phi == ZERO and vlo > plo:
                    plo = vlo
            else:
                if too_big_for_odd_step(vhi, vlo):
                    return OVERFLOW, ZERO, ZERO, ZERO, ZERO
                vhi, vlo = triple_plus_one(vhi, vlo)
                if less(phi, plo, vhi, vlo):
                    phi, plo = vhi, vlo
            steps += ONE
        vhi, vlo, k = shift_out_zeros(vhi, vlo)
        steps += k
    if phi == ZERO and tpeak[vlo] > plo:
        plo = tpeak[vlo]
    return OK, steps + U64(tdelay[vlo]), glide, phi, plo


@cuda.jit(device=True)
def glide_number(nhi, nlo, max_steps):
    """(status, glide): steps until the value drops below the start."""
    if nhi == ZERO and nlo == ONE:
        return OK, ZERO
    vhi, vlo = nhi, nlo
    steps = ZERO
    # One word while the start and the value fit (the same steps, half the arithmetic)
    while nhi == ZERO and steps < max_steps:
        if (vlo & ONE) == ZERO:
            vlo >>= ONE
            steps += ONE
            if vlo < nlo:
                return OK, steps
        elif vlo <= LIMIT64:
            vlo = vlo * THREE + ONE
            steps += ONE
        else:
            break  # 3v+1 leaves the word: two words from here
    while steps < max_steps:
        if (vlo & ONE) == ZERO:
            vhi, vlo = halve(vhi, vlo)
            steps += ONE
            if less(vhi, vlo, nhi, nlo):
                return OK, steps
        else:
            if too_big_for_odd_step(vhi, vlo):
                return OVERFLOW, ZERO
            vhi, vlo = triple_plus_one(vhi, vlo)
            steps += ONE
    return TOO_LONG, ZERO


@cuda.jit(device=True)
def append(values, counts, slot, cap, off):
    """Append `off` to a list of capacity `cap` whose length is counts[slot]."""
    at = cuda.atomic.add(counts, slot, ONE)
    if at < cap:
        values[at] = off


@cuda.jit
def collatz_segments(
    nthreads, shi, slo, count, seg_len, tdelay, tpeak, tglide, tsize, hist, hist_len, sums,
    seg_delay, seg_glide, seg_phi, seg_plo, over, cap,
):  # fmt: skip
    t = U64(cuda.grid(1))
    if t >= nthreads:
        return
    first = t * seg_len
    last = min(first + seg_len, count)
    total = ZERO
    bd = bg = bphi = bplo = ZERO
    for off in range(first, last):
        nhi, nlo = add_offset(shi, slo, U64(off))
        status, delay, glide, phi, plo = collatz_number(nhi, nlo, tdelay, tpeak, tglide, tsize)
        if status != OK:
            append(over, sums, 1, cap, U64(off))
            continue
        total += delay
        if delay < hist_len:
            cuda.atomic.add(hist, delay, ONE)
        else:
            cuda.atomic.add(sums, 2, ONE)
        bd = max(bd, delay + ONE)
        bg = max(bg, glide + ONE)
        if less(bphi, bplo, phi, plo):
            bphi, bplo = phi, plo
    cuda.atomic.add(sums, 0, total)
    seg_delay[t] = bd
    seg_glide[t] = bg
    seg_phi[t] = bphi
    seg_plo[t] = bplo


@cuda.jit
def collatz_numbers(
    nthreads, shi, slo, count, segs, seg_len, tdelay, tpeak, tglide, tsize, delay, glide, peak_hi,
    peak_lo, status,
):  # fmt: skip
    t = U64(cuda.grid(1))
    if t >= nthreads:
        return
    off = segs[t // seg_len] * seg_len + t % seg_len
    if off >= count:
        status[t] = ABSENT
        return
    nhi, nlo = add_offset(shi, slo, off)
    s, d, g, phi, plo = collatz_number(nhi, nlo, tdelay, tpeak, tglide, tsize)
    status[t] = s
    delay[t] = d
    glide[t] = g
    peak_hi[t] = phi
    peak_lo[t] = plo


@cuda.jit
def verify_segments(nthreads, shi, slo, count, seg_len, max_steps, sums, seg_glide, over, too_long, cap):
    t = U64(cuda.grid(1))
    if t >= nthreads:
        return
    first = t * seg_len
    last = min(first + seg_len, count)
    bg = ZERO
    for off in range(first, last):
        nhi, nlo = add_offset(shi, slo, U64(off))
        status, glide = glide_number(nhi, nlo, max_steps)
        if status == OK:
            bg = max(bg, glide + ONE)
        elif status == TOO_LONG:
            append(too_long, sums, 3, cap, U64(off))
        else:
            append(over, sums, 1, cap, U64(off))
    seg_glide[t] = bg


@cuda.jit
def verify_numbers(nthreads, shi, slo, count, segs, seg_len, max_steps, glide, status):
    t = U64(cuda.grid(1))
    if t >= nthreads:
        return
    off = segs[t // seg_len] * seg_len + t % seg_len
    if off >= count:
        status[t] = ABSENT
        return
    nhi, nlo = add_offset(shi, slo, off)
    s, g = glide_number(nhi, nlo, max_steps)
    status[t] = s
    glide[t] = g


@cuda.jit
def thread_paths(nthreads, shi, slo, max_depth, paths_lo, paths_hi, depth, final_lo, final_hi, status):
    t = U64(cuda.grid(1))
    if t >= nthreads:
        return
    vhi, vlo = add_offset(shi, slo, t)
    paths_lo[t, 0] = vlo
    paths_hi[t, 0] = vhi
    steps = ZERO
    status[t] = OK
    while steps < max_depth and not (vhi == ZERO and vlo == ONE):
        if (vlo & ONE) == ZERO:
            vhi, vlo = halve(vhi, vlo)
        elif too_big_for_odd_step(vhi, vlo):
            status[t] = OVERFLOW
            break
        else:
            vhi, vlo = triple_plus_one(vhi, vlo)
        steps += ONE
        paths_lo[t, steps] = vlo
        paths_hi[t, steps] = vhi
    depth[t] = steps
    final_lo[t] = vlo
    final_hi[t] = vhi


@cuda.jit(device=True)
def sieve_item(item, a0hi, a0lo, idx0, sbits, sres, spacked, pow3, kill, extra, skip_ahi, skip_alo, nsurv):
    """(alive, nhi, nlo): the start value of a survivor item, and whether the extension and the 3^2
    sieve let it live. Item L is table entry (idx0 + L) mod nsurv of a = a0 + (idx0 + L) // nsurv:
    n = 2^k a + b, in increasing order of n (sieve.scan_survivors takes them in the same order).
    """
    q = idx0 + item
    arel = q // nsurv
    j = q - arel * nsurv
    alo = a0lo + arel
    ahi = a0hi + (ONE if alo < a0lo else ZERO)
    nhi = (ahi << sbits) | (alo >> (U64(64) - sbits))
    nlo = (alo << sbits) | sres[j]
    entry = spacked[j]
    c = entry >> PACK_SHIFT
    # (3^c a + d) mod 2^extra needs only the low words
    r = (pow3[c] * alo + (entry & PACK_MASK)) & ((ONE << extra) - ONE)
    alive = kill[(c << extra) | r] == 0
    if alive and (ahi > skip_ahi or (ahi == skip_ahi and alo >= skip_alo)):
        n9 = (nhi % U64(9) * U64(7) + nlo % U64(9)) % U64(9)  # 2^64 = 7 (mod 9)
        alive = ((KEEP_MOD9 >> n9) & ONE) == ONE
    return alive, nhi, nlo


@cuda.jit
def verify_sieve_segments(
    nthreads, shi, slo, a0hi, a0lo, idx0, nitems, seg_len, sbits, sres, spacked, pow3, kill, extra,
    skip_ahi, skip_alo, nsurv, max_steps, sums, seg_glide, over, too_long, cap,
):  # fmt: skip
    """verify_segments over the sieve's items: only survivors are walked; sums[0] counts them."""
    t = U64(cuda.grid(1))
    if t >= nthreads:
        return
    first = t * seg_len
    last = min(first + seg_len, nitems)
    bg = ZERO
    walked = ZERO
    for item in range(first, last):
        alive, nhi, nlo = sieve_item(
            U64(item), a0hi, a0lo, idx0, sbits, sres, spacked, pow3, kill, extra, skip_ahi, skip_alo, nsurv
        )
        if not alive:
            continue
        walked += ONE
        status, glide = glide_number(nhi, nlo, max_steps)
        if status == OK:
            bg = max(bg, glide + ONE)
        elif status == TOO_LONG:
            append(too_long, sums, 3, cap, nlo - slo)
        else:
            append(over, sums, 1, cap, nlo - slo)
    cuda.atomic.add(sums, 0, walked)
    seg_glide[t] = bg


@cuda.jit
def verify_sieve_numbers(
    nthreads, shi, slo, a0hi, a0lo, idx0, nitems, segs, seg_len, sbits, sres, spacked, pow3, kill, extra,
    skip_ahi, skip_alo, nsurv, max_steps, glide, status,
):  # fmt: skip
    """verify_numbers over the sieve's items; an item the sieve settles is ABSENT."""
    t = U64(cuda.grid(1))
    if t >= nthreads:
        return
    item = segs[t // seg_len] * seg_len + t % seg_len
    glide[t] = 0
    status[t] = ABSENT
    if item >= nitems:
        return
    alive, nhi, nlo = sieve_item(
        item, a0hi, a0lo, idx0, sbits, sres, spacked, pow3, kill, extra, skip_ahi, skip_alo, nsurv
    )
    if alive:
        s, g = glide_number(nhi, nlo, max_steps)
        status[t] = s
        glide[t] = g


@cuda.jit
def fill_zero(array, n):
    # Device arrays start uninitialised; filling them here spares a host copy
    i = cuda.grid(1)
    if i < n:
        array[i] = 0


KERNELS = {
    "collatz_segments": collatz_segments,
    "collatz_numbers": collatz_numbers,
    "verify_segments": verify_segments,
    "verify_numbers": verify_numbers,
    "verify_sieve_segments": verify_sieve_segments,
    "verify_sieve_numbers": verify_sieve_numbers,
    "thread_paths": thread_paths,
    **cudaslice.KERNELS,
}
