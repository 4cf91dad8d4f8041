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


def raw_difference(got, want) -> str | None:
    """Where two raw results first differ (field, dtype, shape or value), or None when identical."""
    if type(got) is not type(want):
        return f"a {type(got).__name__} where a {type(want).__name__} is expected"
    for field, a, b in zip(got._fields, got, want):
        if isinstance(b, int) or b is None:
            if not (a is None if b is None else a is not None and np.ndim(a) == 0 and a == b):
                return f"{field}: {a!r}, expected {b!r}"
            continue
        if not isinstance(a, np.ndarray) or (a.dtype, a.shape) != (b.dtype, b.shape):
            kind = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else repr(a)
            return f"{field}: {kind}, expected {b.dtype} {b.shape}"
        wrong = np.flatnonzero(a.ravel() != b.ravel())
        if len(wrong):
            i = int(wrong[0])
            return f"{field}: {len(wrong)} differ, first at flat index {i}: {a.flat[i]} for {b.flat[i]}"
    return None


def compare_backends(gpu, cpu, start: int, count: int, depth: int = 40) -> None:
    """Every raw result of `gpu` on [start, start+count) equals numba-cpu's."""
    for store in (False, True):
        assert_same_raw(gpu.collatz_range(start, count, store), cpu.collatz_range(start, count, store))
    for max_steps in (5, 100_000):
        assert_same_raw(gpu.verify_range(start, count, max_steps), cpu.verify_range(start, count, max_steps))
    threads = min(count, 8)
    assert_same_raw(gpu.thread_paths(start, threads, depth), cpu.thread_paths(start, threads, depth))


# Sieve settings of the sieved comparisons: (bits, extra bits, skip_from as a share of the start or 1)
SIEVES = [(28, 14), (6, 3), (10, 4), (12, 0)]


def compare_sieved(gpu, cpu, start: int, count: int, bits: int, extra: int, skip_from: int = 0) -> None:
    """The GPU's sieve equals numba-cpu's, `walked` included, with a loose and a tight step bound."""
    from hpcthreads.backends import sieveplan

    tight = sieveplan.sieve_with_extension(bits, extra).glide_max + 3
    for max_steps in (tight, 100_000):
        got = gpu.verify_range(start, count, max_steps, bits, extra, skip_from)
        want = cpu.verify_range(start, count, max_steps, bits, extra, skip_from)
        assert_same_raw(got, want)


def walked_reference(start: int, count: int, bits: int, extra: int, skip_from: int, max_steps: int) -> int:
    """`walked` by brute force: each n followed bits + e steps of T (3n+1 over 2 or n/2), no table.

    n is left to walk unless the sieve applies to it (n >= its exact_from,
    below 2^76, a step bound past the glides it skips) and n drops below
    itself within bits + e steps (e: the extension's depth at n) or the 3^2
    sieve skips it (n = 3m + 2 or 9m + 4 from the first block of 2^bits at or
    past skip_from). The tables give only exact_from and glide_max.
    """
    from hpcthreads.backends import sieveplan

    total = 0
    skip_a = -(-skip_from >> bits) if skip_from else None
    for n in range(start, start + count):
        e = max(0, min(extra, n.bit_length() - 1 - bits))
        sieve = sieveplan.sieve_with_extension(bits, e)
        if not bits or max_steps < sieve.glide_max or n >= 2**76 or n < int(sieve.exact_from):
            total += 1
            continue
        if skip_a is not None and (n >> bits) >= skip_a and n % 9 in (2, 4, 5, 8):
            continue
        v = n
        for _ in range(bits + e):
            v = v // 2 if v % 2 == 0 else (3 * v + 1) // 2
            if v < n:
                break
        else:
            total += 1
    return total


def run_verify(backend, chunk: int, **params):
    """A whole verify job in chunks of `chunk` values, merged last to first, then finished."""
    from hpcthreads.config import make_job
    from hpcthreads.workloads import make_workload

    job = make_job({"name": "v", "type": "verify", "parameters": params}, 0)
    workload = make_workload(job)
    summary = workload.empty()
    for off in reversed(range(0, job.size, chunk)):
        summary = workload.merge(summary, workload.compute(backend, off, min(chunk, job.size - off)).summary)
    return workload.finish(summary)


def slice_workload(params: dict):
    """A verify workload cut by residue (params name its sieve_slice_bits)."""
    from hpcthreads.config import make_job
    from hpcthreads.workloads import make_workload

    workload = make_workload(make_job({"name": "v", "type": "verify", "parameters": params}, 0))
    assert workload.slice_plan is not None and workload.slice_plan.K == params["sieve_slice_bits"]
    return workload


def slice_pieces(workload, sizes: tuple[int, ...], seed: int) -> list[tuple[int, int, int, int]]:
    """The residue pieces (bfirst, ifirst, blast, iend) of the job's chunks, of random sizes."""
    import random

    rng = random.Random(seed)
    pieces, offset = [], 0
    while offset < workload.job.size:
        size = min(workload.job.size - offset, rng.choice(sizes))
        pieces += [tuple(args) for kind, *args in workload.layout.pieces(offset, size) if kind == "slice"]
        offset += size
    return pieces


def compare_slices(gpu, cpu, params: dict, sizes: tuple[int, ...] = (1, 7, 333, 4096), seed: int = 1) -> list:
    """Every residue piece of a job cut by residue: the GPU's SliceRaw equals numba-cpu's (lists as
    sets of values, each value once; candidates as pairs). Returns the totals: walked, candidates,
    unresolved, overflowing values."""
    workload = slice_workload(params)
    plan = workload.slice_plan
    totals = [0, 0, 0, 0]
    for piece in slice_pieces(workload, sizes, seed):
        got, want = gpu.verify_slice(plan, *piece), cpu.verify_slice(plan, *piece)
        assert got.walked == want.walked, (piece, got.walked, want.walked)
        assert sorted(got.candidates) == sorted(want.candidates), piece
        assert len(set(got.candidates)) == len(got.candidates), piece
        assert sorted(got.too_long) == sorted(want.too_long), piece
        assert sorted(got.overflows) == sorted(want.overflows), piece
        for i, n in enumerate((got.walked, len(got.candidates), len(got.too_long), len(got.overflows))):
            totals[i] += n
    return totals


# Slice jobs both GPU backends run against numba-cpu: (start, count, params); small, for the simulator
SLICE_CASES = [
    (2**40 + 99, 6000, {"sieve_slice_bits": 9, "sieve_mod9": 0}),
    (2**40 + 99, 6000, {"sieve_slice_bits": 10, "sieve_join": 1}),  # the 3^2 sieve and the join rule
    (2**64 - 3000, 6000, {"sieve_slice_bits": 12, "max_steps": 200}),  # across 2^64, unresolved values
    (2**40 + 5, 20000, {"sieve_slice_bits": 14, "sieve_mod9": 0, "sieve_join": 1, "max_steps": 120}),
    (2**44 + 3, 8000, {"sieve_slice_bits": 11, "verified_below": 2**44 - 2**30, "sieve_extra_bits": 0}),
    (FIRST_OVER_128 - 3000, 6000, {"sieve_slice_bits": 10}),  # trajectories that leave 128 bits
]
