"""The numba-cuda backend under Numba's CUDA simulator (run by tests/test_gpu_simulator.py).

NUMBA_ENABLE_CUDASIM must be set before Numba is imported, so this file runs
in its own pytest process; the simulator is slow, so ranges are tiny.
"""

from __future__ import annotations

import os

import pytest
import reference as ref
from gpucases import FIRST_OVER_64, FIRST_OVER_128, compare_backends

from hpcthreads.backends import make_backend
from hpcthreads.config import make_job
from hpcthreads.workloads import make_workload

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before Numba is imported", allow_module_level=True)


@pytest.fixture(scope="module")
def cpu():
    return make_backend("numba-cpu")


@pytest.fixture(scope="module")
def gpu():
    from hpcthreads.backends.numba_cuda import NumbaCUDABackend

    # Small tables keep the copies to the simulated device cheap; the walk is the same
    NumbaCUDABackend.table_bits = 8
    backend = make_backend("numba-cuda", 0)
    backend.warm_up()
    return backend


def test_describes_itself_as_a_gpu_backend(gpu):
    assert gpu.is_gpu and gpu.describe().startswith("numba-cuda: ") and "(device 0)" in gpu.describe()


@pytest.mark.parametrize(
    "start,count,threads",
    [
        (1, 40, 5),
        (2**40, 24, 4),
        (FIRST_OVER_64 - 12, 24, 5),
        (2**64 - 10, 20, 3),
        (FIRST_OVER_128 - 4, 8, 3),
    ],
)
def test_raw_results_equal_numba_cpu(gpu, cpu, start, count, threads):
    gpu.segment_threads = threads
    compare_backends(gpu, cpu, start, count)


def test_boundaries_against_the_reference(gpu):
    gpu.segment_threads = 2
    job = make_job(
        {"name": "b", "type": "collatz", "parameters": {"start": FIRST_OVER_64 - 1, "count": 2}}, 0
    )
    summary = make_workload(job).compute(gpu, 0, 2).summary
    assert summary.path_records[-1] == (FIRST_OVER_64, ref.peak(FIRST_OVER_64))
    assert summary.path_records[0][1] < 2**64 <= summary.path_records[-1][1]
    raw = gpu.collatz_range(FIRST_OVER_128 - 1, 2, False)
    assert raw.overflows.tolist() == [1]
    assert raw.delay_records.tolist() == [[0, 0, ref.delay(FIRST_OVER_128 - 1)]]
    job = make_job({"name": "o", "type": "collatz", "parameters": {"start": FIRST_OVER_128, "count": 1}}, 0)
    out = make_workload(job).compute(gpu, 0, 1)
    assert out.extra["peak_overflow"] == [(FIRST_OVER_128, ref.peak(FIRST_OVER_128))]
    assert out.summary.max_delay == (FIRST_OVER_128, ref.delay(FIRST_OVER_128))


def test_fallbacks_when_device_lists_overflow(gpu, cpu):
    gpu.segment_threads = 3
    old = gpu.hist_len, gpu.list_capacity
    gpu.hist_len, gpu.list_capacity = 4, 0
    try:
        compare_backends(gpu, cpu, 20, 12)
        compare_backends(gpu, cpu, FIRST_OVER_128 - 2, 4)
    finally:
        gpu.hist_len, gpu.list_capacity = old
