"""The verify sieve on the GPU, through the CUDA C kernels compiled for the CPU (tests/gpuemu.py).

Every raw result (records, unresolved and overflow lists, `walked`) must
equal numba-cpu's, whose sieve is checked against brute force in
test_verify_sieve.py and test_walked.py. The numba-cuda kernels run the same
cases under the simulator (tests/gpu/sim_numba_cuda.py).
"""

from __future__ import annotations

import random
import shutil

import pytest
import reference as ref
from gpucases import (
    FIRST_OVER_64,
    FIRST_OVER_128,
    SIEVES,
    assert_same_raw,
    compare_sieved,
    run_verify,
    walked_reference,
)
from gpuemu import CEmulatedBackend, build_library

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") or shutil.which("cc")), reason="no C compiler")


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    return CEmulatedBackend(build_library(tmp_path_factory.mktemp("kernels")))


@pytest.mark.parametrize("bits,extra", SIEVES)
@pytest.mark.parametrize(
    "start,count",
    [
        (2**40, 200_000),
        (2**40 - 3000, 50_000),  # a range that crosses 2^40
        (2**64 - 30_000, 60_000),  # across 2^64
        (FIRST_OVER_64 - 5000, 10_000),
        (FIRST_OVER_128 - 3000, 6000),  # trajectories that leave 128 bits
        (2**76 - 4000, 8000),  # the sieve stops at 2^76
        (1, 30_000),
    ],
)
@pytest.mark.parametrize("threads", [7, 4096])
def test_sieved_raw_results_equal_numba_cpu(gpu, cpu, start, count, bits, extra, threads):
    gpu.segment_threads = threads
    compare_sieved(gpu, cpu, start, count, bits, extra)


@pytest.mark.parametrize("start", [1, 2**40 + 12345, 2**64 + 3])
def test_the_3_2_sieve_equals_numba_cpu(gpu, cpu, start):
    gpu.segment_threads = 64
    for skip_from in (1, start + 20_000):
        compare_sieved(gpu, cpu, start, 50_000, 10, 4, skip_from)


def test_chunks_that_end_mid_batch_and_mid_block(gpu, cpu):
    """Chunks of every size cut a block of 2^bits and a batch of 256 table entries anywhere."""
    rng = random.Random(7)
    gpu.segment_threads = 5
    for start in (2**40 + rng.randrange(1 << 12), 2**64 - rng.randrange(1 << 14)):
        offset = 0
        while offset < 40_000:
            size = rng.choice([1, 2, 255, 256, 257, 1023, 5000])
            compare_sieved(gpu, cpu, start + offset, size, 8, 3)
            offset += size


def test_overflows_are_listed_by_the_survivor_kernel(gpu, cpu):
    gpu.segment_threads = 16
    got = gpu.verify_range(FIRST_OVER_128 - 3000, 6000, 100_000, 10, 4)
    assert FIRST_OVER_128 - (FIRST_OVER_128 - 3000) in got.overflows.tolist()
    assert_same_raw(got, cpu.verify_range(FIRST_OVER_128 - 3000, 6000, 100_000, 10, 4))


def test_walked_is_the_brute_force_count(gpu):
    gpu.segment_threads = 33
    for start, count, bits, extra, skip_from in [(1, 5000, 6, 3, 1), (2**64 - 2000, 4000, 10, 3, 0)]:
        raw = gpu.verify_range(start, count, 1000, bits, extra, skip_from)
        assert raw.walked == walked_reference(start, count, bits, extra, skip_from, 1000)


def test_default_sieve_walks_a_small_fraction(gpu, cpu):
    gpu.segment_threads = 1 << 12
    for start in (2**40, 2**64):
        got, want = gpu.verify_range(start, 1 << 20, 100_000), cpu.verify_range(start, 1 << 20, 100_000)
        assert_same_raw(got, want)
        assert 0.002 < got.walked / (1 << 20) < 0.01


def test_full_device_lists_fall_back_to_every_item(gpu, cpu):
    gpu.segment_threads = 9
    gpu.list_capacity = 0
    try:
        compare_sieved(gpu, cpu, 2**64 - 2000, 4000, 10, 3)  # a tight bound: unresolved values
    finally:
        gpu.list_capacity = type(gpu).list_capacity


def test_near_2_128_jobs_match_numba_cpu_and_brute_force(gpu, cpu):
    """Values whose trajectories leave 128 bits finish on the exact path; past 2^76 no sieve applies."""
    gpu.segment_threads = 8
    for start, count, sieved in [(FIRST_OVER_128 - 100, 200, True), (2**127 + 1, 300, False)]:
        got = run_verify(gpu, 97, start=start, count=count)
        want = run_verify(cpu, 97, start=start, count=count)
        assert got == want and (got.walked < count) == sieved
    start = FIRST_OVER_128 - 100
    got = run_verify(gpu, 97, start=start, count=200)
    assert got.glide_records == ref.range_records([(n, ref.glide(n)) for n in range(start, start + 200)])


def test_verify_jobs_from_1_match_brute_force(gpu):
    gpu.segment_threads = 16
    params = {"start": 1, "count": 20_000, "sieve_bits": 8, "sieve_extra_bits": 3}
    got = run_verify(gpu, 3001, **params)
    assert got.glide_records == ref.range_records([(n, ref.glide(n)) for n in range(1, 20_001)])
    assert got.walked == walked_reference(1, 20_000, 8, 3, (3 * 1 + 2) // 2, 100_000)
