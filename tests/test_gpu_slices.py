"""The residue-slice verify on the GPU (slice_build, slice_walk) through the CUDA C kernels built
for the CPU (tests/gpuemu.py), against numba-cpu's slice kernel (backends.slicesieve), which
tests/unit/test_slice_sieve.py checks against brute force. The numba-cuda kernels run the same
cases under the simulator (tests/gpu/sim_numba_cuda.py).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import reference as ref
from gpucases import SLICE_CASES, compare_slices, run_verify, slice_pieces, slice_workload
from gpuemu import CEmulatedBackend, build_library

from hpcthreads.backends import gpuslice, slicesieve

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") or shutil.which("cc")), reason="no C compiler")


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    return CEmulatedBackend(build_library(tmp_path_factory.mktemp("kernels")))


@pytest.mark.parametrize("start,count,params", SLICE_CASES)
@pytest.mark.parametrize("threads,tasks", [(3, 1), (7, 40), (1 << 20, 1 << 18)])
def test_slice_raw_results_equal_numba_cpu(gpu, cpu, start, count, params, threads, tasks):
    """Tasks of every size: all residues for each A (tasks 1), groups of a few, one residue each."""
    gpu.slice_threads, gpu.slice_tasks = threads, tasks
    params = {"start": start, "count": count, **params}
    walked, candidates, unresolved, overflows = compare_slices(gpu, cpu, params)
    assert walked > 0 and candidates > 0
    if "max_steps" in params:
        assert unresolved > 0
    if start > 2**65:
        assert overflows > 0


def test_a_full_report_list_walks_again_with_room_for_every_row(gpu, cpu, monkeypatch):
    gpu.slice_tasks = 1 << 18
    launches, launch = [], gpu._launch
    monkeypatch.setattr(gpu, "_launch", lambda name, *args: (launches.append(name), launch(name, *args)))
    gpu.slice_report_capacity, gpu.slice_report_shift = 1, 63
    try:
        params = {"start": 2**40 + 99, "count": 6000, "sieve_slice_bits": 9}
        totals = compare_slices(gpu, cpu, params, (2000,))
    finally:
        del gpu.slice_report_capacity, gpu.slice_report_shift
    assert totals[1] > 1
    # Each piece: one build, a walk whose report overflowed, and the walk again
    assert launches.count("slice_walk") == 2 * launches.count("slice_build") > 0


@pytest.mark.parametrize("tasks", [1, 1 << 18])
def test_a_large_jobs_floor_reports_few_values(gpu, cpu, tasks):
    """With a floor past most bounds (as in a large job) only a few values come back to the host."""
    gpu.slice_tasks = tasks
    workload = slice_workload({"start": 2**40 + 99, "count": 20000, "sieve_slice_bits": 10, "sieve_mod9": 0})
    plan = workload.slice_plan._replace(floor=150)
    reported, walked = [], 0
    original = gpuslice.settle_reports
    gpuslice.settle_reports = lambda *a: (reported.append(len(a[3])), original(*a))[1]
    try:
        for piece in slice_pieces(workload, (20000,), 1):
            got, want = gpu.verify_slice(plan, *piece), cpu.verify_slice(plan, *piece)
            assert (got.walked, sorted(got.candidates)) == (want.walked, sorted(want.candidates))
            walked += got.walked
    finally:
        gpuslice.settle_reports = original
    assert 0 < sum(reported) < walked // 10


def test_the_packed_walk_table_is_numba_cpus():
    packed, table = gpuslice.walk_entries(11), slicesieve.walk_table(11)
    mask = np.uint64((1 << 20) - 1)
    assert np.array_equal(packed & mask, table[0::2])
    assert np.array_equal((packed >> np.uint64(20)) & mask, table[1::2] & np.uint64(0xFFFFFFFF))
    assert np.array_equal(packed >> np.uint64(40), table[1::2] >> np.uint64(32))


def test_a_job_cut_by_residue_matches_brute_force(gpu):
    """A whole job through the workload (the prefix by range, the body by residue slices on the
    kernels), merged from chunks: records and unresolved values from each value's glide."""
    start, count = 2**40 + 99, 20000
    params = {"start": start, "count": count, "sieve_slice_bits": 10, "sieve_mod9": 0, "max_steps": 150}
    assert slice_workload(params).slice_plan.max_steps == 150
    gpu.slice_threads = 5
    got = run_verify(gpu, 2999, **params)
    glides = [(n, ref.glide(n)) for n in range(start, start + count)]
    assert got.unresolved == [n for n, g in glides if g > 150] != []
    assert got.glide_records == ref.range_records([(n, g) for n, g in glides if g <= 150])
    assert 0 < got.walked < count // 5


def test_tasks_of_many_residues_report_fewer_values(gpu, cpu):
    """A task's best glide rises along its residues: far fewer values come back than one per bound past
    the floor, and the results do not change."""
    workload = slice_workload({"start": 2**40 + 99, "count": 1 << 20, "sieve_slice_bits": 12})
    piece = (0, 0, (1 << 12) - 1, 1)
    reported = []
    original = gpuslice.settle_reports
    gpuslice.settle_reports = lambda *a: (reported.append(len(a[3])), original(*a))[1]
    try:
        want = cpu.verify_slice(workload.slice_plan, *piece)
        for tasks in (1, 1 << 18):
            gpu.slice_tasks = tasks
            got = gpu.verify_slice(workload.slice_plan, *piece)
            assert (got.walked, sorted(got.candidates), got.too_long) == (
                want.walked, sorted(want.candidates), want.too_long,
            )  # fmt: skip
    finally:
        gpuslice.settle_reports = original
    assert len(want.candidates) <= reported[0] < reported[1] // 3
