"""`verify` where the sieve's survivor walk starts, stops and hands over, against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

from hpcthreads.backends import make_backend, steptables
from hpcthreads.backends.glidewalk import first_drop64, glide_from
from hpcthreads.backends.wideops import OK, OVERFLOW, TOO_LONG
from hpcthreads.config import make_job
from hpcthreads.workloads import make_workload

FIRST_OVER_64 = 12327829503
FIRST_OVER_128 = 48503373501652785087
U64 = np.uint64
MASK64 = (1 << 64) - 1


@pytest.fixture(scope="module")
def backend():
    return make_backend("numba-cpu")


def run_verify(backend, start, count, chunk, bits, max_steps=100_000):
    job = make_job(
        {
            "name": "t",
            "type": "verify",
            "parameters": {"start": start, "count": count, "sieve_bits": bits, "max_steps": max_steps},
        },
        0,
    )
    workload = make_workload(job)
    summary = workload.empty()
    for off in range(0, count, chunk):
        summary = workload.merge(summary, workload.compute(backend, off, min(chunk, count - off)).summary)
    return summary


def sieve_starts_at(start, count, chunk, bits):
    """For each chunk, the offset from which the sieve applies (its running maximum reached glide_max)."""
    glide_max = steptables.build_sieve(bits)[2]
    starts = []
    for first in range(start, start + count, chunk):
        best = -1
        for n in range(first, min(first + chunk, start + count)):
            if best >= glide_max:
                starts.append(n - first)
                break
            best = max(best, ref.glide(n))
    return starts


@pytest.mark.parametrize(
    "start,count,chunk,bits",
    [
        # Chunks start and end mid-period, at residue 0 and at the last residue of a period
        (2**40 + 200, 3000, 300, 8),
        (2**40, 2048, 256, 8),
        (2**40 - 1, 2050, 257, 8),
        (2**40 + 5, 1500, 1500, 10),
        # Starts and values crossing 2^64, and the sieve's a crossing 2^64 (k = 3)
        (2**64 - 700, 1400, 350, 8),
        (2**67 - 600, 1200, 400, 3),
        (FIRST_OVER_64 - 500, 1000, 300, 6),  # FIRST_OVER_64 mid-chunk: it is a survivor
        # Near the sieve's 2^76 limit, and past it (every value followed)
        (2**76 - 600, 1200, 300, 8),
    ],
)
@pytest.mark.parametrize("tight", [False, True])
def test_survivor_walk_matches_brute_force(backend, start, count, chunk, bits, tight):
    assert sieve_starts_at(start, count, chunk, bits), "the survivor walk was not exercised"
    # A tight step bound lists many survivors: every one of them is seen, none twice, none outside
    max_steps = steptables.build_sieve(bits)[2] + 6 if tight else 100_000
    got = run_verify(backend, start, count, chunk, bits, max_steps)
    glides = [(n, ref.glide(n)) for n in range(start, start + count)]
    assert got.unresolved == [n for n, g in glides if g > max_steps]
    assert got.covered == count - len(got.unresolved)
    assert got.glide_records == ref.range_records([(n, g) for n, g in glides if g <= max_steps])


def test_first_trajectory_past_128_bits_goes_to_the_exact_path(backend):
    start, count = FIRST_OVER_128 - 60, 64
    assert FIRST_OVER_128 % 32 in steptables.build_sieve(5)[0].tolist()
    assert sieve_starts_at(start, count, count, 5)[0] < 60
    raw = backend.verify_range(start, count, 100_000, 5)
    assert raw.overflows.tolist() == [60]
    got = run_verify(backend, start, count, count, 5)
    assert got.glide_records == ref.range_records([(n, ref.glide(n)) for n in range(start, start + count)])
    assert (FIRST_OVER_128, 781) in got.glide_records


@pytest.mark.parametrize("bits", [0, 8])
def test_step_bound_is_exact_on_the_survivor_walk(backend, bits):
    start, count = 2**40 + 77, 2000
    glides = [ref.glide(n) for n in range(start, start + count)]
    top = max(glides)
    assert run_verify(backend, start, count, 500, bits, max_steps=top).unresolved == []
    got = run_verify(backend, start, count, 500, bits, max_steps=top - 1)
    assert got.unresolved == [start + i for i, g in enumerate(glides) if g == top]


@pytest.mark.parametrize(
    "n", [2, 3, 27, 2**32 + 1, 2**63 - 1, 2**63 + 1, 2**64 - 1, 2**64 - 3, 2**64 + 1, 2**64 + 3, 2**100 + 1]
)
def test_glide_from_start(n):
    status, glide = glide_from(U64(n >> 64), U64(n & MASK64), U64(n >> 64), U64(n & MASK64), 0, 10**6)
    assert (status, glide) == (OK, ref.glide(n))
    # One step short: known to be too long, or found past the bound (the caller's check)
    status, glide = glide_from(U64(n >> 64), U64(n & MASK64), U64(n >> 64), U64(n & MASK64), 0, glide - 1)
    assert status == TOO_LONG or (status, glide) == (OK, ref.glide(n))


@pytest.mark.parametrize("n", [FIRST_OVER_128, 2**100 - 1])
def test_glide_from_overflow(n):
    assert glide_from(U64(n >> 64), U64(n & MASK64), U64(n >> 64), U64(n & MASK64), 0, 10**6)[0] == OVERFLOW


def test_first_drop64():
    rng = np.random.default_rng(8)
    for _ in range(2000):
        n = int(rng.integers(2, 2**62))
        v = (
            n + int(rng.integers(0, 2**63))
            if rng.random() < 0.5
            else n << int(rng.integers(0, 64 - n.bit_length()))
        )
        v = min(v, MASK64)
        want = next(j for j in range(1, 65) if v >> j < n)
        assert first_drop64(U64(v), U64(n)) == want
