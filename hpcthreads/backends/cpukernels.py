"""Numba CPU kernels of range analysis and threads: (hi, lo) words, exact overflow checks.

A value is a pair (hi, lo) of uint64 words. Every trajectory that would leave
128 bits is reported back (never approximated) so that the caller finishes it
on the exact path. This module is imported only by the numba-cpu backend.

`collatz_range` follows each start value by blocks of BLOCK_BITS steps of T
at once (see steptables) until it is inside the table of small results. The
glide is read from the block table's sieve for the first block when it drops
there; otherwise blocks are taken while their lower bound stays at or above
the start, and the block that may drop is walked step by step.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcthreads.backends import kernelcache
from hpcthreads.backends.wideops import (
    MASK32,
    OK,
    ONE,
    U64,
    ZERO,
    halve,
    less,
    mul_add,
    next_start,
    too_big_for_odd_step,
    triple_plus_one,
    walk,
)

kernelcache.configure()

BLOCK_BITS = 16
# Blocks keep 3^c a + d and alpha* a + beta* inside 128 bits below 2^96
BLOCK_LIMIT_HI = U64(1 << 32)
SIEVE_SHIFT = U64(56)
SIEVE_MASK = U64((1 << 56) - 1)


@njit(inline="always")
def put(table, used, a, b, c):
    table[used, 0] = a
    table[used, 1] = b
    table[used, 2] = c
    return used + 1


@njit(cache=True)
def grow(table, used):
    """The table, twice as large when full (kept out of the hot loops)."""
    if used < table.shape[0]:
        return table
    bigger = np.zeros((table.shape[0] * 2, table.shape[1]), dtype=table.dtype)
    bigger[:used] = table
    return bigger


# Scan state: counts of the record tables, best delay and glide, sum of delays
ND, NP, NG, NO, BEST_DELAY, BEST_GLIDE, SUM_DELAY = range(7)


@njit(cache=True)
def collatz_range(
    shi, slo, count, store, out_delay, out_glide, out_peak_lo, out_peak_hi,
    tdelay, tpeak, tglide, hot, cold, pow3, tpeak_max,
):  # fmt: skip
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
    state = np.zeros(7, np.int64)
    state[BEST_DELAY] = state[BEST_GLIDE] = -1
    best_peak = np.zeros(2, np.uint64)
    i = 0
    # The scan stops when a table is full or a delay is past the histogram
    while True:
        i = scan_range(
            shi, slo, i, count, store, out_delay, out_glide, out_peak_lo, out_peak_hi,
            tdelay, tpeak, tglide, hot, cold, pow3, tpeak_max,
            hist, drec, prec, grec, over, state, best_peak,
        )  # fmt: skip
        if i == count:
            break
        drec = grow(drec, state[ND])
        prec = grow(prec, state[NP])
        grec = grow(grec, state[NG])
        over = grow(over, state[NO])
        wider = np.zeros(2 * hist.shape[0], np.int64)
        wider[: hist.shape[0]] = hist
        hist = wider
    top = state[BEST_DELAY] + 1
    return (
        state[SUM_DELAY],
        hist[:top].copy(),
        drec[: state[ND]].copy(),
        prec[: state[NP]].copy(),
        grec[: state[NG]].copy(),
        over[: state[NO], 0].copy(),
    )


@njit(cache=True)
def scan_range(
    shi, slo, first, count, store, out_delay, out_glide, out_peak_lo, out_peak_hi,
    tdelay, tpeak, tglide, hot, cold, pow3, tpeak_max,
    hist, drec, prec, grec, over, state, best_peak,
):  # fmt: skip
    """The loop of `collatz_range` from offset `first`; returns where it stopped.

    No array is reassigned here: a loop-carried array costs NRT reference
    counting on every iteration (measured: ~100 ns per number).
    """
    bits = U64(BLOCK_BITS)
    back = U64(64 - BLOCK_BITS)
    mask = U64((1 << BLOCK_BITS) - 1)
    size = U64(tdelay.shape[0])
    nd, npk, ng, no = state[ND], state[NP], state[NG], state[NO]
    best_delay, best_glide, sum_delay = state[BEST_DELAY], state[BEST_GLIDE], state[SUM_DELAY]
    best_phi, best_plo = best_peak[0], best_peak[1]
    nhi, nlo = shi, slo + U64(first)
    if nlo < slo:
        nhi += ONE
    i = first
    while i < count:
        if nd == drec.shape[0] or npk == prec.shape[0] or ng == grec.shape[0] or no == over.shape[0]:
            break
        status = OK
        if nhi == ZERO and nlo < size:
            delay = np.int64(tdelay[nlo])
            glide = np.int64(tglide[nlo])
            phi = ZERO
            plo = tpeak[nlo]
        else:
            vhi, vlo, phi, plo = nhi, nlo, nhi, nlo
            steps = 0
            glide = 0
            # The first block's sieve: a >= A (always true here but for A = 1, a = 0)
            sieve = cold[2 * (nlo & mask) + ONE]
            if (sieve >> SIEVE_SHIFT) != ZERO and (nhi != ZERO or (nlo >> bits) >= (sieve & SIEVE_MASK)):
                glide = np.int64(sieve >> SIEVE_SHIFT)
            while vhi != ZERO or vlo >= size:
                b = vlo & mask
                ahi = vhi >> bits
                alo = (vlo >> bits) | (vhi << back)
                if vhi >= BLOCK_LIMIT_HI:
                    status, vhi, vlo, phi, plo, steps, glide = walk(
                        vhi, vlo, nhi, nlo, phi, plo, steps, glide, BLOCK_BITS
                    )
                    if status != OK:
                        break
                    continue
                if glide == 0:
                    bound = cold[2 * b]
                    lhi, llo = mul_add(ahi, alo, bound & MASK32, bound >> U64(32))
                    if less(lhi, llo, nhi, nlo):
                        status, vhi, vlo, phi, plo, steps, glide = walk(
                            vhi, vlo, nhi, nlo, phi, plo, steps, glide, BLOCK_BITS
                        )
                        if status != OK:
                            break
                        continue
                top = hot[2 * b + ONE]
                khi, klo = mul_add(ahi, alo, top & MASK32, top >> U64(32))
                if less(phi, plo, khi, klo):
                    phi, plo = khi, klo
                entry = hot[2 * b]
                c = entry >> U64(32)
                vhi, vlo = mul_add(ahi, alo, pow3[c], entry & MASK32)
                steps += BLOCK_BITS + np.int64(c)
            if status != OK:
                no = put(over, no, U64(i), ZERO, ZERO)
                nhi, nlo = next_start(nhi, nlo)
                i += 1
                continue
            delay = steps + np.int64(tdelay[vlo])
            if phi == ZERO and plo < tpeak_max and tpeak[vlo] > plo:
                plo = tpeak[vlo]
        if delay >= hist.shape[0]:
            break
        sum_delay += delay
        hist[delay] += 1
        if delay > best_delay:
            best_delay = delay
            nd = put(drec, nd, U64(i), ZERO, U64(delay))
        if glide > best_glide:
            best_glide = glide
            ng = put(grec, ng, U64(i), ZERO, U64(glide))
        if npk == 0 or less(best_phi, best_plo, phi, plo):
            best_phi, best_plo = phi, plo
            npk = put(prec, npk, U64(i), phi, plo)
        if store:
            out_delay[i] = delay
            out_glide[i] = glide
            out_peak_lo[i] = plo
            out_peak_hi[i] = phi
        nhi, nlo = next_start(nhi, nlo)
        i += 1
    state[ND], state[NP], state[NG], state[NO] = nd, npk, ng, no
    state[BEST_DELAY], state[BEST_GLIDE], state[SUM_DELAY] = best_delay, best_glide, sum_delay
    best_peak[0], best_peak[1] = best_phi, best_plo
    return i


@njit(cache=True)
def thread_paths(shi, slo, count, max_depth, paths_lo, paths_hi, depth, final_lo, final_hi):
    """Paths of `count` threads from start; returns offsets that left 128 bits.

    Rows of `paths_*` must be zero on entry: the padding after each path.
    """
    # One slot per thread: no array is reassigned in the loop (see scan_range)
    over = np.zeros(count, np.uint64)
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
                over[no] = U64(i)
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
    return over[:no].copy()
