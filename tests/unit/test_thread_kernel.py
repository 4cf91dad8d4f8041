"""The numba-cpu `thread` kernel's raw arrays against a brute-force walk with Python integers.

The kernel runs threads in lock-step pairs and stores only nonzero words, so
the cases aim at its edges: a missing second thread, partners that stop at
different depths, max_depth 0 and 1, values crossing 2^64, and threads whose
3n+1 would leave 128 bits.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import reference as ref
from helpers import ROOT

from hpcthreads.backends import make_backend

WORD = (1 << 64) - 1
# The largest odd n whose 3n+1 fits in 128 bits is LIMIT - 2
LIMIT = 0x55555555555555555555555555555555


@pytest.fixture(scope="module")
def backend():
    return make_backend("numba-cpu")


def expected(start: int, count: int, max_depth: int) -> dict[str, np.ndarray]:
    want = {
        "paths_lo": np.zeros((count, max_depth + 1), np.uint64),
        "paths_hi": np.zeros((count, max_depth + 1), np.uint64),
        "depth": np.zeros(count, np.uint32),
        "final_lo": np.zeros(count, np.uint64),
        "final_hi": np.zeros(count, np.uint64),
    }
    over = []
    for i in range(count):
        values, overflowed = ref.thread_steps(start + i, max_depth)
        want["paths_lo"][i, : len(values)] = [v & WORD for v in values]
        want["paths_hi"][i, : len(values)] = [v >> 64 for v in values]
        want["depth"][i] = len(values) - 1
        want["final_lo"][i], want["final_hi"][i] = values[-1] & WORD, values[-1] >> 64
        if overflowed:
            over.append(i)
    want["overflows"] = np.array(over, np.uint64)
    return want


def assert_matches(backend, start: int, count: int, max_depth: int) -> dict[str, np.ndarray]:
    got = backend.thread_paths(start, count, max_depth)._asdict()
    want = expected(start, count, max_depth)
    for name, array in want.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)
        assert got[name].dtype == array.dtype, name
    return want


@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("max_depth", [0, 1, 2, 20])
def test_rows_match_brute_force_whatever_the_pairing(backend, count, max_depth):
    # From 1: depths 0, 1, 7, 2, 5, so partners stop at different steps (or at max_depth)
    assert_matches(backend, 1, count, max_depth)
    assert_matches(backend, 26, count, max_depth)


def test_partners_that_stop_at_many_different_depths(backend):
    want = assert_matches(backend, 1, 61, 100)
    assert len(set(want["depth"].tolist())) > 25 and (want["depth"] == 100).any()


@pytest.mark.parametrize(
    "start,count,max_depth",
    [
        (2**64 - 7, 15, 80),  # values cross 2^64 both ways, odd and even starts
        (2**64, 3, 5),  # low word 0 at the start
        (2**65 - 3, 5, 40),
        (2**127 - 3, 7, 30),
        (LIMIT - 8, 17, 40),  # 3n+1 fits up to LIMIT - 2 only
        (2 * LIMIT - 4, 9, 12),  # even values that halve onto the limit
        (2**128 - 5, 5, 3),
    ],
)
def test_rows_match_brute_force_near_word_and_128_bit_limits(backend, start, count, max_depth):
    assert_matches(backend, start, count, max_depth)


def test_overflow_limit_is_exact(backend):
    # LIMIT - 2 takes its 3n+1 (to 2^128 - 6), halves, then overflows; LIMIT overflows at once
    want = assert_matches(backend, LIMIT - 4, 5, 4)
    assert want["overflows"].tolist() == [2, 4]
    assert want["depth"].tolist() == [4, 4, 2, 4, 0]


def test_overflows_stay_ascending_when_the_second_thread_stops_first(backend):
    # 2^128 - 2 halves to an odd 2^127 - 1 that overflows at step 1; 2^128 - 1 overflows at step 0
    want = assert_matches(backend, 2**128 - 2, 2, 10)
    assert want["overflows"].tolist() == [0, 1] and want["depth"].tolist() == [1, 0]


def test_benchmark_runs_next_to_its_write_baseline():
    """benchmarks/bench_threads.py still runs (its figures are not checked)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    script = ROOT / "benchmarks" / "bench_threads.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--repeat", "1"], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, *rows = proc.stdout.splitlines()
    assert "kernel/fill" in header and len(rows) == 3
