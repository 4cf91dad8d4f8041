"""Two-word (hi, lo) unsigned arithmetic for the Numba kernels.

Every helper takes and returns scalars only: a helper that takes arrays and
returns a tuple costs an NRT incref/decref pair per call even when inlined
(measured: 20-45 ns per call), so kernels index their tables themselves.

Numba promotes uint64 mixed with int64 to float64, so every constant that
meets a word is a uint64 below.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

U64 = np.uint64
ZERO = U64(0)
ONE = U64(1)
THREE = U64(3)
SHIFT63 = U64(63)
MASK32 = U64(0xFFFFFFFF)
# 3v+1 fits in 64 bits iff v <= LIMIT64; in 128 bits iff (hi, lo) <= LIMIT128
LIMIT64 = U64(0x5555555555555554)
LIMIT128_HI = U64(0x5555555555555555)
LIMIT128_LO = U64(0x5555555555555554)
# Statuses of a trajectory
OK = 0
OVERFLOW = 1
TOO_LONG = 2


def wide(builder, hi, lo):
    """LLVM IR: the 128-bit value of words hi and lo."""
    i128 = ir.IntType(128)
    return builder.or_(builder.shl(builder.zext(hi, i128), ir.Constant(i128, 64)), builder.zext(lo, i128))


@intrinsic
def mul_add(typingctx, hi, lo, m, d):  # noqa: ARG001 - Numba passes the typing context
    """(hi, lo) * m + d as (hi, lo), modulo 2^128; the caller knows it fits."""
    u64 = types.uint64
    sig = types.UniTuple(u64, 2)(u64, u64, u64, u64)

    def codegen(context, builder, signature, args):
        whi, wlo, wm, wd = args
        i128 = ir.IntType(128)
        value = wide(builder, whi, wlo)
        result = builder.add(builder.mul(value, builder.zext(wm, i128)), builder.zext(wd, i128))
        rlo = builder.trunc(result, ir.IntType(64))
        rhi = builder.trunc(builder.lshr(result, ir.Constant(i128, 64)), ir.IntType(64))
        return context.make_tuple(builder, signature.return_type, (rhi, rlo))

    return sig, codegen


@intrinsic
def below(typingctx, ahi, alo, bhi, blo):  # noqa: ARG001 - Numba passes the typing context
    """(ahi, alo) < (bhi, blo), as one 128-bit comparison (no branch)."""
    u64 = types.uint64
    sig = types.boolean(u64, u64, u64, u64)

    def codegen(context, builder, signature, args):
        a, b = wide(builder, args[0], args[1]), wide(builder, args[2], args[3])
        return builder.icmp_unsigned("<", a, b)

    return sig, codegen


@njit(inline="always")
def less(ahi, alo, bhi, blo):
    return ahi < bhi or (ahi == bhi and alo < blo)


@njit(inline="always")
def too_big_for_odd_step(hi, lo):
    return hi > LIMIT128_HI or (hi == LIMIT128_HI and lo > LIMIT128_LO)


@njit(inline="always")
def triple_plus_one(hi, lo):
    """3v+1 in two words; the caller has checked that it fits."""
    return mul_add(hi, lo, THREE, ONE)


@njit(inline="always")
def halve(hi, lo):
    return hi >> ONE, (lo >> ONE) | (hi << SHIFT63)


@njit(inline="always")
def shift_right(hi, lo, k):
    """(hi, lo) >> k for 0 < k < 64."""
    return hi >> k, (lo >> k) | (hi << (U64(64) - k))


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


@njit(inline="always")
def next_start(hi, lo):
    lo += ONE
    if lo == ZERO:
        hi += ONE
    return hi, lo


@njit(inline="always")
def walk(vhi, vlo, nhi, nlo, phi, plo, steps, glide, tsteps):
    """Up to `tsteps` steps of T (an odd step with its halving, or a halving), exactly.

    Tracks the peak and, while `glide` is 0, the first drop below the start n
    (the walk then stops there). Returns (status, vhi, vlo, phi, plo, steps,
    glide); status OVERFLOW when a 3v+1 would leave 128 bits.
    """
    for _ in range(tsteps):
        if vlo & ONE:
            if too_big_for_odd_step(vhi, vlo):
                return OVERFLOW, vhi, vlo, phi, plo, steps, glide
            vhi, vlo = triple_plus_one(vhi, vlo)
            if less(phi, plo, vhi, vlo):
                phi, plo = vhi, vlo
            steps += 1
        vhi, vlo = halve(vhi, vlo)
        steps += 1
        if glide == 0 and less(vhi, vlo, nhi, nlo):
            return OK, vhi, vlo, phi, plo, steps, steps
    return OK, vhi, vlo, phi, plo, steps, glide
