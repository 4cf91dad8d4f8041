"""Convergence verification (temporary: plain kernel)."""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcthreads.backends.cpukernels import push
from hpcthreads.backends.wideops import (
    OK,
    ONE,
    OVERFLOW,
    TOO_LONG,
    U64,
    ZERO,
    halve,
    less,
    next_start,
    too_big_for_odd_step,
    triple_plus_one,
)


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
