"""The glide of one start value from a point of its trajectory, one odd step at a time.

`glide_from` follows v (reached from the start n after `steps` standard steps
without dropping below n) until it drops below n. Each round is one 3v+1 and
then every halving at once (a count of trailing zeros), so a round costs the
same whatever its length and no branch depends on a parity. Halvings only
shrink the value, so the drop, if any, is inside a run of halvings: when the
run ends below n, the exact step where it first went below n is found from
the bit lengths. Values stay in one word while the start and the value fit
(3v+1 < 2^64) and move to two words otherwise; a 3v+1 that would leave 128
bits stops with OVERFLOW, for the exact path.

`glide_pair` and `glide_pair2` walk two start values round for round (their
rounds are independent, so the core overlaps them), the survivor walk's
main loop. Only scalars go in and out (see wideops): no reference counting
whether a helper is inlined or called.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

from hpcthreads.backends import kernelcache
from hpcthreads.backends.wideops import (
    LIMIT64,
    LIMIT128_HI,
    OK,
    ONE,
    OVERFLOW,
    THREE,
    TOO_LONG,
    U64,
    ZERO,
    below,
    halve,
    less,
    mul_add,
    shift_out_zeros,
    too_big_for_odd_step,
    triple_plus_one,
)

kernelcache.configure()


@njit(inline="always")
def first_drop64(v, n):
    """The least j >= 1 with v >> j < n, for 2 <= n <= v < 2^64.

    With L the difference of bit lengths, v >> L has as many bits as n and
    v >> (L + 1) fewer, so j is L or L + 1 (1 when L is 0).
    """
    j = max(leading_zeros(n) - leading_zeros(v), ONE)
    if (v >> j) >= n:
        j += ONE
    return np.int64(j)


@njit(inline="always")
def glide_from(nhi, nlo, vhi, vlo, steps, max_steps):
    """(status, glide): the first step at which v, `steps` steps after n, is below n (n >= 2).

    status TOO_LONG once the glide is known to exceed `max_steps` (not
    necessarily found), OVERFLOW when a 3v+1 would leave 128 bits first.
    """
    if nhi == ZERO and vhi == ZERO:
        # One word: n and every value below 2^64
        if vlo & ONE:
            if vlo > LIMIT64:
                vhi, vlo = triple_plus_one(vhi, vlo)
            else:
                vlo = vlo * THREE + ONE
            steps += 1
        while vhi == ZERO:
            t = trailing_zeros(vlo)
            w = vlo >> t
            if w < nlo:
                return OK, steps + first_drop64(vlo, nlo)
            steps += np.int64(t)
            if steps >= max_steps:
                return TOO_LONG, steps
            if w > LIMIT64:
                vhi, vlo = triple_plus_one(ZERO, w)
            else:
                vlo = w * THREE + ONE
            steps += 1
    elif vlo & ONE:
        if too_big_for_odd_step(vhi, vlo):
            return OVERFLOW, steps
        vhi, vlo = triple_plus_one(vhi, vlo)
        steps += 1
    # Two words; v is even here
    while True:
        whi, wlo, t = shift_out_zeros(vhi, vlo)
        if less(whi, wlo, nhi, nlo):
            # The drop is inside this run: at most t halvings, usually one or two
            while True:
                vhi, vlo = halve(vhi, vlo)
                steps += 1
                if less(vhi, vlo, nhi, nlo):
                    return OK, steps
        steps += t
        if steps >= max_steps:
            return TOO_LONG, steps
        if too_big_for_odd_step(whi, wlo):
            return OVERFLOW, steps
        vhi, vlo = mul_add(whi, wlo, THREE, ONE)
        steps += 1


@njit(cache=True)
def glide_rest(nhi, nlo, vhi, vlo, steps, max_steps):
    """glide_from as a call, for what leaves the lanes below and for single values.

    glide_rest, glide_pair and glide_pair2 are calls rather than inlined:
    inlining them everywhere made the verify kernels take 3-4 times as long to
    compile (Numba, cold cache) for no measurable speed (scalars only, a few
    ns per call).
    """
    return glide_from(nhi, nlo, vhi, vlo, steps, max_steps)


# 3w+1 carries 1 into the high word past LIMIT64, 2 past CARRY2
CARRY2 = U64(0xAAAAAAAAAAAAAAAA)
# Lanes of glide_pair
RUNNING, DROPPED, HANDOVER = range(3)


@njit(inline="always")
def lane_round(v, n, steps, max_steps):
    """One round of a one-word lane, v even: (v, steps, lane state).

    DROPPED: steps is the glide. HANDOVER: v is odd and its 3v+1 may not fit,
    or the step bound is reached; glide_from goes on from (v, steps).
    """
    t = trailing_zeros(v)
    w = v >> t
    if w < n:
        return v, steps + first_drop64(v, n), DROPPED
    steps += np.int64(t)
    if steps >= max_steps or w > LIMIT64:
        return w, steps, HANDOVER
    return w * THREE + ONE, steps + 1, RUNNING


@njit(cache=True)
def glide_pair(n1, v1, s1, n2, v2, s2, max_steps):
    """glide_from for two one-word start values at once: (status1, glide1, status2, glide2).

    Their rounds are independent, so the core overlaps them; this is what
    the survivor walk spends its time on.
    """
    f1 = f2 = RUNNING
    if v1 & ONE:
        if v1 > LIMIT64:
            f1 = HANDOVER
        else:
            v1, s1 = v1 * THREE + ONE, s1 + 1
    if v2 & ONE:
        if v2 > LIMIT64:
            f2 = HANDOVER
        else:
            v2, s2 = v2 * THREE + ONE, s2 + 1
    while f1 == RUNNING and f2 == RUNNING:
        v1, s1, f1 = lane_round(v1, n1, s1, max_steps)
        v2, s2, f2 = lane_round(v2, n2, s2, max_steps)
    while f1 == RUNNING:
        v1, s1, f1 = lane_round(v1, n1, s1, max_steps)
    while f2 == RUNNING:
        v2, s2, f2 = lane_round(v2, n2, s2, max_steps)
    st1 = st2 = OK
    if f1 == HANDOVER:
        st1, s1 = glide_rest(ZERO, n1, ZERO, v1, s1, max_steps)
    if f2 == HANDOVER:
        st2, s2 = glide_rest(ZERO, n2, ZERO, v2, s2, max_steps)
    return st1, s1, st2, s2


@njit(inline="always")
def lane_round2(vhi, vlo, nhi, nlo, steps, max_steps):
    """lane_round in two words: (vhi, vlo, steps, lane state); HANDOVER when 3v+1 may leave 128 bits."""
    if vlo == ZERO:
        whi, wlo, t = shift_out_zeros(vhi, vlo)
    else:
        # v is even: 1 <= t <= 63, a shift of both words without a branch
        t = trailing_zeros(vlo)
        whi, wlo = vhi >> t, (vlo >> t) | (vhi << (U64(64) - t))
        t = np.int64(t)
    if below(whi, wlo, nhi, nlo):
        while True:
            vhi, vlo = halve(vhi, vlo)
            steps += 1
            if less(vhi, vlo, nhi, nlo):
                return vhi, vlo, steps, DROPPED
    steps += t
    # At or past 0x5555...5555 * 2^64 3w+1 may not fit: the exact check is glide_from's
    if steps >= max_steps or whi >= LIMIT128_HI:
        return whi, wlo, steps, HANDOVER
    carry = U64(wlo > LIMIT64) + U64(wlo > CARRY2)
    return whi * THREE + carry, wlo * THREE + ONE, steps + 1, RUNNING


@njit(cache=True)
def glide_pair2(n1hi, n1lo, v1hi, v1lo, s1, n2hi, n2lo, v2hi, v2lo, s2, max_steps):
    """glide_pair in two words, for start values or values at or past 2^64."""
    f1 = f2 = RUNNING
    if v1lo & ONE:
        if too_big_for_odd_step(v1hi, v1lo):
            f1 = HANDOVER
        else:
            v1hi, v1lo = triple_plus_one(v1hi, v1lo)
            s1 += 1
    if v2lo & ONE:
        if too_big_for_odd_step(v2hi, v2lo):
            f2 = HANDOVER
        else:
            v2hi, v2lo = triple_plus_one(v2hi, v2lo)
            s2 += 1
    while f1 == RUNNING and f2 == RUNNING:
        v1hi, v1lo, s1, f1 = lane_round2(v1hi, v1lo, n1hi, n1lo, s1, max_steps)
        v2hi, v2lo, s2, f2 = lane_round2(v2hi, v2lo, n2hi, n2lo, s2, max_steps)
    while f1 == RUNNING:
        v1hi, v1lo, s1, f1 = lane_round2(v1hi, v1lo, n1hi, n1lo, s1, max_steps)
    while f2 == RUNNING:
        v2hi, v2lo, s2, f2 = lane_round2(v2hi, v2lo, n2hi, n2lo, s2, max_steps)
    st1 = st2 = OK
    if f1 == HANDOVER:
        st1, s1 = glide_rest(n1hi, n1lo, v1hi, v1lo, s1, max_steps)
    if f2 == HANDOVER:
        st2, s2 = glide_rest(n2hi, n2lo, v2hi, v2lo, s2, max_steps)
    return st1, s1, st2, s2
