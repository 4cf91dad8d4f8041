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
    LIMIT128_HI,
    MASK32,
    OK,
    ONE,
    OVERFLOW,
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
# A thread stops short of max_depth at 1 (AT_ONE) or where 3n+1 would leave 128 bits (OVERFLOW)
AT_ONE = 3


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
    i = np.int64(0)  # not the literal 0: one compiled scan_range, not two
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


@njit(inline="always")
def standard_step(hi, lo):
    """n/2 or 3n+1 without a branch on the parity (3n+1 wraps modulo 2^128: callers rule that out)."""
    thi, tlo = triple_plus_one(hi, lo)
    hhi, hlo = halve(hi, lo)
    odd = (lo & ONE) != ZERO
    return (thi if odd else hhi), (tlo if odd else hlo)


@njit(inline="always")
def may_stop(hi, lo):
    # At 1, or close enough to 2^128 that 3n+1 may not fit: `stop_kind` decides exactly
    return lo == ONE or hi >= LIMIT128_HI


@njit(inline="always")
def stop_kind(hi, lo):
    """OK where a thread steps on, AT_ONE at 1, OVERFLOW where 3n+1 would leave 128 bits."""
    if hi == ZERO and lo == ONE:
        return AT_ONE
    if (lo & ONE) != ZERO and too_big_for_odd_step(hi, lo):
        return OVERFLOW
    return OK


@njit(cache=True)
def thread_paths(shi, slo, count, max_depth, paths_lo, paths_hi, depth, final_lo, final_hi):
    """Paths of `count` threads from start; returns the offsets that left 128 bits, ascending.

    Rows of `paths_*` must be zero on entry: only nonzero words are written, so
    the padding after each path and the high words of values below 2^64 cost
    no store (nor, in fresh pages, a page fault). Threads go in pairs, in
    lock-step: two independent branch-free chains overlap, where a single
    thread waits on each step or on a mispredicted parity branch
    (benchmarks/bench_threads.py). Helpers here take no arrays: an inlined
    helper that does costs NRT reference counting per call, here per thread.
    """
    # One slot per thread: no array is reassigned in the loop (see scan_range)
    over = np.zeros(count, np.uint64)
    # (hi, lo) of the pair while the exact checks run
    lanes = np.zeros(4, np.uint64)
    last = U64(max_depth)
    no = 0
    nhi, nlo = shi, slo
    for a in range(0, count, 2):
        # Threads a and b = a+1; a missing b is 0, which never stops and is never stored
        b = a + 1
        ahi, alo = nhi, nlo
        nhi, nlo = next_start(nhi, nlo)
        bhi = blo = ZERO
        if b < count:
            bhi, blo = nhi, nlo
            nhi, nlo = next_start(nhi, nlo)
        steps = ZERO
        while True:
            # The rows are zero, and so is a thread that stopped: zero words are not stored
            if alo != ZERO:
                paths_lo[a, steps] = alo
            if ahi != ZERO:
                paths_hi[a, steps] = ahi
            if blo != ZERO:
                paths_lo[b, steps] = blo
            if bhi != ZERO:
                paths_hi[b, steps] = bhi
            if steps == last:
                break
            if not (may_stop(ahi, alo) or may_stop(bhi, blo)):
                ahi, alo = standard_step(ahi, alo)
                bhi, blo = standard_step(bhi, blo)
                steps += ONE
                continue
            # Exact checks, then one step of the threads that go on; the others stop here
            lanes[0], lanes[1], lanes[2], lanes[3] = ahi, alo, bhi, blo
            for pos in range(2):
                hi, lo = lanes[2 * pos], lanes[2 * pos + 1]
                kind = stop_kind(hi, lo)
                if kind == OK:
                    lanes[2 * pos], lanes[2 * pos + 1] = standard_step(hi, lo)
                    continue
                if kind == OVERFLOW:
                    # Thread b may stop first: keep the offsets ascending
                    over[no] = U64(a + pos)
                    if no > 0 and over[no - 1] > over[no]:
                        over[no - 1], over[no] = over[no], over[no - 1]
                    no += 1
                depth[a + pos], final_hi[a + pos], final_lo[a + pos] = steps, hi, lo
                lanes[2 * pos] = lanes[2 * pos + 1] = ZERO
            ahi, alo, bhi, blo = lanes[0], lanes[1], lanes[2], lanes[3]
            if (ahi | alo | bhi | blo) == ZERO:
                break
            steps += ONE
        # Threads still going after max_depth steps
        lanes[0], lanes[1], lanes[2], lanes[3] = ahi, alo, bhi, blo
        for pos in range(min(2, count - a)):
            hi, lo = lanes[2 * pos], lanes[2 * pos + 1]
            if hi != ZERO or lo != ZERO:
                depth[a + pos], final_hi[a + pos], final_lo[a + pos] = steps, hi, lo
    return over[:no].copy()
