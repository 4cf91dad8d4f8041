"""Cases and checks every GPU backend passes against numba-cpu, raw result for raw result."""

from __future__ import annotations

import numpy as np

FIRST_OVER_64 = 12327829503
FIRST_OVER_128 = 48503373501652785087


def assert_same_raw(got, want) -> None:
    """Two raw results (CollatzRaw, VerifyRaw, ThreadRaw) are identical, dtypes included."""
    assert type(got) is type(want)
    for field, a, b in zip(got._fields, got, want):
        if isinstance(b, int):
            assert a == b, field
        elif b is None:
            assert a is None, field
        else:
            assert a.dtype == b.dtype and a.shape == b.shape, (field, a.dtype, b.dtype, a.shape, b.shape)
            assert np.array_equal(a, b), (field, a, b)


def compare_backends(gpu, cpu, start: int, count: int, depth: int = 40) -> None:
    """Every raw result of `gpu` on [start, start+count) equals numba-cpu's."""
    for store in (False, True):
        assert_same_raw(gpu.collatz_range(start, count, store), cpu.collatz_range(start, count, store))
    for max_steps in (5, 100_000):
        assert_same_raw(gpu.verify_range(start, count, max_steps), cpu.verify_range(start, count, max_steps))
    threads = min(count, 8)
    assert_same_raw(gpu.thread_paths(start, threads, depth), cpu.thread_paths(start, threads, depth))
