"""The numba-cuda backend under Numba's CUDA simulator (run by tests/test_gpu_simulator.py).

NUMBA_ENABLE_CUDASIM must be set before Numba is imported, so this file runs
in its own pytest process; the simulator is slow, so ranges are tiny.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import reference as ref
from gpucases import (
    FIRST_OVER_64,
    FIRST_OVER_128,
    SLICE_CASES,
    compare_backends,
    compare_sieved,
    compare_slices,
    walked_reference,
)

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


@pytest.mark.parametrize(
    "start,count,bits,extra,skip_from",
    [
        (2**40, 3000, 6, 3, 0),
        (2**40 - 500, 1500, 8, 4, 0),
        (2**64 - 1500, 3000, 10, 4, 0),  # across 2^64
        (FIRST_OVER_128 - 800, 1600, 10, 4, 0),  # trajectories that leave 128 bits
        (1, 3000, 6, 3, 1),  # the 3^2 sieve, every extension depth
        (2**40, 40_000, 28, 14, 0),  # the default sieve
        (2**64, 40_000, 28, 14, 0),
    ],
)
def test_sieve_equals_numba_cpu(gpu, cpu, start, count, bits, extra, skip_from):
    gpu.segment_threads = 5
    compare_sieved(gpu, cpu, start, count, bits, extra, skip_from)


def test_sieve_with_full_device_lists_and_chunks_ending_mid_batch(gpu, cpu):
    gpu.segment_threads = 3
    old = gpu.list_capacity
    gpu.list_capacity = 0
    try:
        compare_sieved(gpu, cpu, 2**64 - 700, 1400, 10, 3)
    finally:
        gpu.list_capacity = old
    for start, size in [(2**40 + 77, 1), (2**40 + 78, 255), (2**40 + 333, 257), (2**64 + 5, 1021)]:
        compare_sieved(gpu, cpu, start, size, 8, 3)


def test_walked_is_the_brute_force_count(gpu):
    gpu.segment_threads = 4
    raw = gpu.verify_range(2**64 - 1000, 2000, 1000, 10, 3)
    assert raw.walked == walked_reference(2**64 - 1000, 2000, 10, 3, 0, 1000)


def _run_verify(tmp_path, backend: str) -> tuple[dict, str]:
    out = tmp_path / f"{backend}.h5"
    command = [sys.executable, "-m", "hpcthreads", "run", "verify", "--start", "2**64", "--count", "1e6"]
    command += ["--backend", backend, "-o", str(out), "--force"]
    # The simulator is no device the runtime can see: name device 0 for it
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    inspect = [sys.executable, "-m", "hpcthreads", "inspect", str(out), "--json"]
    results = json.loads(subprocess.run(inspect, capture_output=True, text=True, check=True).stdout)
    return results, proc.stderr


def test_run_verify_at_2_64_equals_numba_cpu_and_walks_only_survivors(tmp_path):
    gpu_results, log = _run_verify(tmp_path, "numba-cuda")
    assert "computing here with numba-cuda" in log, log[-2000:]
    cpu_results, _ = _run_verify(tmp_path, "numba-cpu")
    assert gpu_results["run"]["backend"] != cpu_results["run"]["backend"]
    assert gpu_results["jobs"] == cpu_results["jobs"]
    job = gpu_results["jobs"]["verify"]
    assert job["count"] == 10**6 and 0 < job["walked"] < job["count"] // 100


@pytest.mark.parametrize("case", [0, 1, 2, 5])
def test_slice_raw_results_equal_numba_cpu(gpu, cpu, case):
    """slice_build and slice_walk (cudaslice.py) against numba-cpu's slice kernel, piece by piece."""
    start, count, params = SLICE_CASES[case]
    gpu.slice_threads = 96  # three simulated blocks, each loading the shared walk table
    gpu.slice_tasks = {0: 1, 1: 40, 2: 1 << 18, 5: 1}[case]  # all residues per A, groups, one each
    totals = compare_slices(gpu, cpu, {"start": start, "count": count, **params}, (1, 333, 4096))
    assert totals[0] > 0 and totals[1] > 0
    assert (totals[2] > 0) == ("max_steps" in params) and (totals[3] > 0) == (start > 2**65)
