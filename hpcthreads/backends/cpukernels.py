"""Numba CPU kernels: trajectories in two 64-bit words, exact overflow checks.

A value is a pair (hi, lo) of uint64 words. Every trajectory that would leave
128 bits is reported back (never approximated) so that the caller finishes it
on the exact path. This module is imported only by the numba-cpu backend.

Numba promotes uint64 mixed with int64 to float64, so every constant that
meets a word is a uint64 below.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

U64 = np.uint64
ZERO = U64(0)
ONE = U64(1)
THREE = U64(3)
SHIFT63 = U64(63)
# 3v+1 fits in 64 bits iff v <= LIMIT64; in 128 bits iff (hi, lo) <= LIMIT128
LIMIT64 = U64(0x5555555555555554)
LIMIT128_HI = U64(0x5555555555555555)
LIMIT128_LO = U64(0x5555555555555554)
# Statuses of a trajectory
OK = 0
OVERFLOW = 1
TOO_LONG = 2


@njit(inline="always")
def less(ahi, alo, bhi, blo):
    return ahi < bhi or (ahi == bhi and alo < blo)


@njit(inline="always")
def too_big_for_odd_step(hi, lo):
    return hi > LIMIT128_HI or (hi == LIMIT128_HI and lo > LIMIT128_LO)


@njit(inline="always")
def triple_plus_one(hi, lo):
    """3v+1 in two words; the caller has checked that it fits."""
    dlo = lo << ONE
    dhi = (hi << ONE) | (lo >> SHIFT63)
    slo = dlo + lo
    shi = dhi + hi + (ONE if slo < lo else ZERO)
    slo += ONE
    if slo == ZERO:
        shi += ONE
    return shi, slo


@njit(inline="always")
def halve(hi, lo):
    return hi >> ONE, (lo >> ONE) | (hi << SHIFT63)


@njit(cache=True)
def build_tables(size):
    """Delay, peak and glide of every start value below `size` (entry 0 unused).

    Each value is followed until it drops below itself; the rest of its
    trajectory is then read from the entries already built.
    """
    tdelay = np.zeros(size, np.uint16)
    tpeak = np.zeros(size, np.uint64)
    tglide = np.zeros(size, np.uint16)
    tpeak[1] = ONE
    for n in range(2, size):
        start = U64(n)
        v = start
        peak = start
        steps = 0
        while v >= start:
            if v & ONE:
                v = v * THREE + ONE
                if v > peak:
                    peak = v
            else:
                v >>= ONE
            steps += 1
        tglide[n] = steps
        tdelay[n] = steps + tdelay[v]
        tpeak[n] = max(peak, tpeak[v])
    return tdelay, tpeak, tglide


@njit(inline="always")
def shift_out_zeros(hi, lo):
    """(hi, lo, k): the value divided by its largest power of two 2^k (value > 0)."""
    if lo == ZERO:
        k = trailing_zeros(hi)
        return ZERO, hi >> k, np.int64(k) + 64
    k = trailing_zeros(lo)
    if k == ZERO:
        return hi, lo, np.int64(0)
    return hi >> k, (lo >> k) | (hi << (U64(64) - k)), np.int64(k)


@njit(cache=True)
def trajectory(nhi, nlo, tdelay, tpeak, tglide):
    """(status, delay, glide, peak_hi, peak_lo) of the start value (nhi, nlo).

    Below the table size every answer is read from the tables. Above it,
    the first phase walks until the value drops below the start (the glide);
    the second strips runs of halvings at once until the value is inside the
    table, which gives the rest of the delay and peak.
    """
    size = U64(tdelay.shape[0])
    if nhi == ZERO and nlo < size:
        return OK, np.int64(tdelay[nlo]), np.int64(tglide[nlo]), ZERO, tpeak[nlo]
    vhi, vlo, phi, plo = nhi, nlo, nhi, nlo
    steps = 0
    # Phase 1: until the value first drops below the start
    while True:
        if (vlo & ONE) == ZERO:
            vhi, vlo = halve(vhi, vlo)
            steps += 1
            if less(vhi, vlo, nhi, nlo):
                break
        elif vhi == ZERO and vlo <= LIMIT64:
            # An odd step and the halving that always follows it
            vlo = vlo * THREE + ONE
            if phi == ZERO and vlo > plo:
                plo = vlo
            vlo >>= ONE
            steps += 2
        else:
            if too_big_for_odd_step(vhi, vlo):
                return OVERFLOW, steps, 0, phi, plo
            vhi, vlo = triple_plus_one(vhi, vlo)
            if less(phi, plo, vhi, vlo):
                phi, plo = vhi, vlo
            vhi, vlo = halve(vhi, vlo)
            steps += 2
    glide = steps
    # Phase 2: until the value is inside the table
    while vhi != ZERO or vlo >= size:
        if vlo & ONE:
            if vhi == ZERO and vlo <= LIMIT64:
                vlo = vlo * THREE + ONE
                if phi == ZERO and vlo > plo:
                    plo = vlo
            else:
                if too_big_for_odd_step(vhi, vlo):
                    return OVERFLOW, steps, glide, phi, plo
                vhi, vlo = triple_plus_one(vhi, vlo)
                if less(phi, plo, vhi, vlo):
                    phi, plo = vhi, vlo
            steps += 1
        vhi, vlo, k = shift_out_zeros(vhi, vlo)
        steps += k
    steps += np.int64(tdelay[vlo])
    if phi == ZERO and tpeak[vlo] > plo:
        plo = tpeak[vlo]
    return OK, steps, glide, phi, plo


@njit(cache=True)
def glide_only(nhi, nlo, max_steps):
    """(status, glide): steps until the value drops below the start."""
    if nhi == ZERO and nlo == ONE:
        return OK, 0
    vhi, vlo = nhi, nlo
    steps = 0
    while steps < max_steps:
        if (vlo & ONE) == ZERO:
            vhi, vlo = halve(vhi, vlo)
            steps += 1
            if less(vhi, vlo, nhi, nlo):
                return OK, steps
        else:
            if too_big_for_odd_step(vhi, vlo):
                return OVERFLOW, steps
            vhi, vlo = triple_plus_one(vhi, vlo)
            steps += 1
    return TOO_LONG, steps


@njit(inline="always")
def next_start(hi, lo):
    lo += ONE
    if lo == ZERO:
        hi += ONE
    return hi, lo


@njit(cache=True)
def grow(table):
    bigger = np.zeros((table.shape[0] * 2, table.shape[1]), dtype=table.dtype)
    bigger[: table.shape[0]] = table
    return bigger


@njit(cache=True)
def push(table, used, a, b, c):
    if used == table.shape[0]:
        table = grow(table)
    table[used, 0] = a
    table[used, 1] = b
    table[used, 2] = c
    return table


@njit(cache=True)
def collatz_range(
    shi, slo, count, store, out_delay, out_glide, out_peak_lo, out_peak_hi, tdelay, tpeak, tglide
):
    """Range analysis of [start, start+count).

    Returns (sum_delay, histogram, delay_records, path_records, glide_records,
    overflows) where each records table holds rows (offset, hi, lo) of the
    chunk-local records and used lengths are trimmed. Start values whose
    trajectory leaves 128 bits are left out of every statistic and listed by
    offset in `overflows`.
    """
    hist = np.zeros(1024, np.int64)
    drec = np.zeros((64, 3), np.uint64)
    prec = np.zeros((64, 3), np.uint64)
    grec = np.zeros((64, 3), np.uint64)
    over = np.zeros((8, 3), np.uint64)
    nd = npk = ng = no = 0
    best_delay = -1
    best_glide = -1
    best_phi = ZERO
    best_plo = ZERO
    sum_delay = 0
    nhi, nlo = shi, slo
    for i in range(count):
        status, delay, glide, phi, plo = trajectory(nhi, nlo, tdelay, tpeak, tglide)
        if status != OK:
            over = push(over, no, U64(i), ZERO, ZERO)
            no += 1
        else:
            sum_delay += delay
            if delay >= hist.shape[0]:
                wider = np.zeros(max(2 * hist.shape[0], delay + 1), np.int64)
                wider[: hist.shape[0]] = hist
                hist = wider
            hist[delay] += 1
            if delay > best_delay:
                best_delay = delay
                drec = push(drec, nd, U64(i), ZERO, U64(delay))
                nd += 1
            if glide > best_glide:
                best_glide = glide
                grec = push(grec, ng, U64(i), ZERO, U64(glide))
                ng += 1
            if npk == 0 or less(best_phi, best_plo, phi, plo):
                best_phi, best_plo = phi, plo
                prec = push(prec, npk, U64(i), phi, plo)
                npk += 1
            if store:
                out_delay[i] = delay
                out_glide[i] = glide
                out_peak_lo[i] = plo
                out_peak_hi[i] = phi
        nhi, nlo = next_start(nhi, nlo)
    top = best_delay + 1 if best_delay >= 0 else 0
    return (
        sum_delay,
        hist[:top].copy(),
        drec[:nd].copy(),
        prec[:npk].copy(),
        grec[:ng].copy(),
        over[:no, 0].copy(),
    )


@njit(cache=True)
def verify_range(shi, slo, count, max_steps):
    """Convergence check of [start, start+count).

    Returns (glide_records, too_long, overflows): chunk-local glide records as
    rows (offset, 0, glide), and the offsets that exceeded `max_steps` or would
    leave 128 bits.
    """
    grec = np.zeros((64, 3), np.uint64)
    long_ = np.zeros((8, 3), np.uint64)
    over = np.zeros((8, 3), np.uint64)
    ng = nl = no = 0
    best = -1
    nhi, nlo = shi, slo
    for i in range(count):
        status, glide = glide_only(nhi, nlo, max_steps)
        if status == OK:
            if glide > best:
                best = glide
                grec = push(grec, ng, U64(i), ZERO, U64(glide))
                ng += 1
        elif status == TOO_LONG:
            long_ = push(long_, nl, U64(i), ZERO, ZERO)
            nl += 1
        else:
            over = push(over, no, U64(i), ZERO, ZERO)
            no += 1
        nhi, nlo = next_start(nhi, nlo)
    return grec[:ng].copy(), long_[:nl, 0].copy(), over[:no, 0].copy()


@njit(cache=True)
def thread_paths(shi, slo, count, max_depth, paths_lo, paths_hi, depth, final_lo, final_hi):
    """Paths of `count` threads from start; returns offsets that left 128 bits.

    Rows of `paths_*` must be zero on entry: the padding after each path.
    """
    over = np.zeros((8, 3), np.uint64)
    no = 0
    nhi, nlo = shi, slo
    for i in range(count):
        vhi, vlo = nhi, nlo
        paths_lo[i, 0] = vlo
        paths_hi[i, 0] = vhi
        steps = 0
        while steps < max_depth and not (vhi == ZERO and vlo == ONE):
            if (vlo & ONE) == ZERO:
                vhi, vlo = halve(vhi, vlo)
            elif too_big_for_odd_step(vhi, vlo):
                over = push(over, no, U64(i), ZERO, ZERO)
                no += 1
                break
            else:
                vhi, vlo = triple_plus_one(vhi, vlo)
            steps += 1
            paths_lo[i, steps] = vlo
            paths_hi[i, steps] = vhi
        depth[i] = steps
        final_lo[i] = vlo
        final_hi[i] = vhi
        nhi, nlo = next_start(nhi, nlo)
    return over[:no, 0].copy()
