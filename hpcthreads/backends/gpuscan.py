"""Host-side scans of the GPU backends: from per-segment maxima to exact record tables.

A GPU kernel gives, for each segment of consecutive start values, the largest
delay, glide and peak in it (encoded value+1, 0 for none). A record of the
chunk can only lie in a segment whose maximum beats every earlier segment,
so only those few segments are computed again number by number, and scanned
here from the best values before them. The result is the record table of a
sequential scan of the whole chunk, row for row.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcthreads.backends import kernelcache
from hpcthreads.backends.cpukernels import grow, put
from hpcthreads.backends.wideops import less

kernelcache.configure()

U64 = np.uint64
ZERO = U64(0)
OK = 0


@njit(cache=True)
def push(table, used, a, b, c):
    """Append a row (offset, hi, lo), growing the table when it is full."""
    table = grow(table, used)
    put(table, used, a, b, c)
    return table


@njit(cache=True)
def collatz_floors(seg_delay, seg_glide, seg_phi, seg_plo):
    """(segs, floor_delay, floor_glide, floor_phi, floor_plo) of the segments that may hold records.

    A floor is the best value before the segment: -1 (or peak 0) when none.
    """
    n = seg_delay.shape[0]
    segs = np.zeros(n, np.uint64)
    fd = np.zeros(n, np.int64)
    fg = np.zeros(n, np.int64)
    fph = np.zeros(n, np.uint64)
    fpl = np.zeros(n, np.uint64)
    k = 0
    bd = np.int64(0)
    bg = np.int64(0)
    bph = ZERO
    bpl = ZERO
    for s in range(n):
        d = np.int64(seg_delay[s])
        g = np.int64(seg_glide[s])
        if d > bd or g > bg or less(bph, bpl, seg_phi[s], seg_plo[s]):
            segs[k] = s
            fd[k] = bd - 1
            fg[k] = bg - 1
            fph[k] = bph
            fpl[k] = bpl
            k += 1
            bd = max(bd, d)
            bg = max(bg, g)
            if less(bph, bpl, seg_phi[s], seg_plo[s]):
                bph, bpl = seg_phi[s], seg_plo[s]
    return segs[:k].copy(), fd[:k].copy(), fg[:k].copy(), fph[:k].copy(), fpl[:k].copy()


@njit(cache=True)
def collatz_records(segs, seg_len, fd, fg, fph, fpl, delay, glide, phi, plo, status):
    """Delay, path and glide record tables (rows offset, hi, lo) of the listed segments.

    Per-number arrays hold the segments back to back, `seg_len` entries each.
    """
    drec = np.zeros((16, 3), np.uint64)
    prec = np.zeros((16, 3), np.uint64)
    grec = np.zeros((16, 3), np.uint64)
    nd = npk = ng = 0
    for j in range(segs.shape[0]):
        bd, bg, bph, bpl = fd[j], fg[j], fph[j], fpl[j]
        base = segs[j] * U64(seg_len)
        for i in range(seg_len):
            at = j * seg_len + i
            if status[at] != OK:
                continue
            off = base + U64(i)
            d = np.int64(delay[at])
            g = np.int64(glide[at])
            if d > bd:
                bd = d
                drec = push(drec, nd, off, ZERO, U64(d))
                nd += 1
            if g > bg:
                bg = g
                grec = push(grec, ng, off, ZERO, U64(g))
                ng += 1
            if less(bph, bpl, phi[at], plo[at]):
                bph, bpl = phi[at], plo[at]
                prec = push(prec, npk, off, bph, bpl)
                npk += 1
    return drec[:nd].copy(), prec[:npk].copy(), grec[:ng].copy()


@njit(cache=True)
def glide_floors(seg_glide):
    """(segs, floor_glide) of the segments that may hold glide records."""
    n = seg_glide.shape[0]
    segs = np.zeros(n, np.uint64)
    fg = np.zeros(n, np.int64)
    k = 0
    bg = np.int64(0)
    for s in range(n):
        g = np.int64(seg_glide[s])
        if g > bg:
            segs[k] = s
            fg[k] = bg - 1
            k += 1
            bg = g
    return segs[:k].copy(), fg[:k].copy()


@njit(cache=True)
def glide_records(segs, seg_len, fg, glide, status):
    """Glide record table (rows offset, 0, glide) of the listed segments."""
    grec = np.zeros((16, 3), np.uint64)
    ng = 0
    for j in range(segs.shape[0]):
        bg = fg[j]
        base = segs[j] * U64(seg_len)
        for i in range(seg_len):
            at = j * seg_len + i
            g = np.int64(glide[at])
            if status[at] == OK and g > bg:
                bg = g
                grec = push(grec, ng, base + U64(i), ZERO, U64(g))
                ng += 1
    return grec[:ng].copy()
