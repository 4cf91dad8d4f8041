"""`verify` where the sieve's survivor walk starts, stops and hands over, against brute force."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import reference as ref
from helpers import ROOT

from hpcthreads.backends import make_backend, steptables
from hpcthreads.backends.glidewalk import first_drop64, glide_from, glide_pair2
from hpcthreads.backends.wideops import OK, OVERFLOW, TOO_LONG
from hpcthreads.config import MAX_SIEVE_BITS, MAX_SIEVE_EXTRA_BITS, make_job
from hpcthreads.workloads import make_workload

FIRST_OVER_64 = 12327829503
FIRST_OVER_128 = 48503373501652785087
U64 = np.uint64
MASK64 = (1 << 64) - 1


@pytest.fixture(scope="module")
def backend():
    return make_backend("numba-cpu")


def run_verify(backend, start, count, chunk, bits, max_steps=100_000, extra=None):
    params = {"start": start, "count": count, "sieve_bits": bits, "max_steps": max_steps}
    if extra is not None:
        params["sieve_extra_bits"] = extra
    job = make_job({"name": "t", "type": "verify", "parameters": params}, 0)
    workload = make_workload(job)
    summary = workload.empty()
    for off in range(0, count, chunk):
        summary = workload.merge(summary, workload.compute(backend, off, min(chunk, count - off)).summary)
    return workload.finish(summary)


def assert_matches_brute_force(got, start, count, max_steps):
    """Unresolved values, covered count and glide records as following every value gives them."""
    glides = [(n, ref.glide(n)) for n in range(start, start + count)]
    assert got.unresolved == [n for n, g in glides if g > max_steps]
    assert got.covered == count - len(got.unresolved)
    assert got.glide_records == ref.range_records([(n, g) for n, g in glides if g <= max_steps])


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
    assert_matches_brute_force(got, start, count, max_steps)


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


def brute_force_sieve(depth):
    """{residue: (c, T^depth(residue))} of the residues mod 2^depth that do not drop within depth T steps.

    Straight from the definition: b survives when 3^c_j >= 2^j after each of
    its first j <= depth T steps (c_j odd steps among them).
    """
    survivors = {}
    for b in range(1 << depth):
        v, c = b, 0
        for j in range(1, depth + 1):
            if v & 1:
                v, c = (3 * v + 1) // 2, c + 1
            else:
                v //= 2
            if 3**c < 2**j:
                break
        else:
            survivors[b] = (c, v)
    return survivors


def extended_survivors(bits, extra):
    """The same, from the 2^bits table and its extension by `extra` bits."""
    res, packed, _, _ = steptables.build_sieve(bits)
    cs = (packed >> U64(56)).astype(np.int64)
    present = np.zeros(bits + 1, np.bool_)
    present[cs] = True
    kill, ce, de, _ = steptables.build_sieve_extension(bits, extra, present)
    mask = (1 << extra) - 1
    survivors = {}
    for b, c, p in zip(res.tolist(), cs.tolist(), packed.tolist()):
        d = p & ((1 << 56) - 1)
        for x in range(1 << extra):
            v = 3**c * x + d  # n = 2^bits x + b after `bits` steps, with a = x
            r = v & mask
            if not kill[(c << extra) | r]:
                survivors[b + (x << bits)] = (c + int(ce[r]), 3 ** int(ce[r]) * (v >> extra) + int(de[r]))
    return survivors


@pytest.mark.parametrize("bits,extra", [(1, 1), (3, 9), (6, 6), (8, 4), (10, 2), (4, 0)])
def test_sieve_extension_keeps_exactly_the_deeper_sieves_survivors(bits, extra):
    assert extended_survivors(bits, extra) == brute_force_sieve(bits + extra)


@pytest.mark.parametrize("bits,extra", [(4, 6), (8, 4)])
def test_sieve_extension_glide_bound(bits, extra):
    """Every start value >= 2^(bits+extra) that the extension sieves out has glide <= its glide_max."""
    depth = bits + extra
    res, packed, base_glide_max, _ = steptables.build_sieve(bits)
    present = np.zeros(bits + 1, np.bool_)
    present[(packed >> U64(56)).astype(np.int64)] = True
    glide_max = steptables.build_sieve_extension(bits, extra, present)[3]
    survivors = brute_force_sieve(depth)
    table = set(res.tolist())
    sieved = [b for b in range(1 << depth) if b % (1 << bits) in table and b not in survivors]
    assert sieved
    rng = np.random.default_rng(depth)
    seen = 0
    for b in sieved:
        for a in (1, 2, int(rng.integers(3, 2**40)), 2**70 + 1):
            g = ref.glide((a << depth) + b)
            assert g <= glide_max
            seen = max(seen, g)
    assert seen == glide_max, "the bound is the largest glide that occurs"
    assert glide_max > base_glide_max


@pytest.mark.parametrize(
    "start,count,chunk,bits,extra",
    [
        # Both sides of 2^(bits+extra), where the extension starts to apply
        (2**12 - 1500, 3000, 1000, 6, 6),
        (2**40 + 3, 3000, 1000, 6, 1),
        (2**40 - 777, 3000, 700, 4, 10),
        (2**40 + 11, 4096, 4096, 8, 16),
        # A table of 2114 residues: many batches per a, chunks ending mid-batch
        (2**40 + 1000, 140_000, 50_000, 16, 4),
        # Values crossing 2^64, the a of the table crossing 2^64, the 2^76 limit
        (2**64 - 1500, 3000, 1000, 3, 16),
        (2**67 - 600, 1200, 400, 3, 12),
        (2**76 - 600, 1200, 300, 8, 12),
    ],
)
@pytest.mark.parametrize("tight", [False, True])
def test_extended_sieve_matches_brute_force(backend, start, count, chunk, bits, extra, tight):
    max_steps = 100_000
    if tight:
        # Just above the extension's largest sieved glide, so that the sieve still applies
        present = np.ones(bits + 1, np.bool_)
        max_steps = max(steptables.build_sieve_extension(bits, extra, present)[3], 60) + 4
    got = run_verify(backend, start, count, chunk, bits, max_steps, extra)
    assert_matches_brute_force(got, start, count, max_steps)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
@pytest.mark.parametrize("start", [2**40 + 5, 2**64 - 20_000])
def test_benchmark_c_reference_agrees(backend, start):
    """benchmarks/verify_ref.c, the benchmark's baseline, finds the same maximum glide as numba-cpu."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_verify
    finally:
        sys.path.pop(0)
    bench_verify.compile_reference()
    count = 40_000
    glides = [ref.glide(n) for n in range(start, start + count)]
    for bits, extra in [(8, 0), (8, 6), (12, 12)]:
        glide, minus_n = max((g, -start - o) for o, g in enumerate(glides))
        assert bench_verify.run_c(start, count, bits, extra, 0)[0] == (-minus_n, glide)
        assert bench_verify.run_numba(backend, start, count, bits, extra, 0)[0] == (-minus_n, glide)
        # With the 3^2 sieve, the maximum over the values followed: none of n = 3m + 2, 9m + 4 on the walk
        first = skipped_from(start, count, 100_000, tightest_bound(bits, extra))
        kept = without_mod9_classes(start, range(count), first)
        glide, minus_n = max((glides[o], -start - o) for o in kept)
        assert bench_verify.run_c(start, count, bits, extra, 1)[0] == (-minus_n, glide)
        assert bench_verify.run_numba(backend, start, count, bits, extra, 1)[0] == (-minus_n, glide)


def walk_reference(n, v, steps, max_steps):
    """(status, glide) of glide_from, with Python integers: v after `steps` steps from n, until below n."""
    while v >= n:
        if steps >= max_steps:
            return TOO_LONG, steps
        if v & 1:
            v = 3 * v + 1
            if v >= 2**128:
                return OVERFLOW, steps
        else:
            v //= 2
        steps += 1
    return OK, steps


@pytest.mark.parametrize(
    "low",
    # The low word of an odd w at which 3w+1 starts to carry 1, then 2, into the high word
    [0x5555555555555553, 0x5555555555555555, 0x5555555555555557, 0xAAAAAAAAAAAAAAA9, 0xAAAAAAAAAAAAAAAB],
)
@pytest.mark.parametrize("high", [1, 2**40 + 3, 0x5555555555555554, 0x5555555555555555, 2**63 - 1])
def test_two_word_pair_walk_at_carry_and_overflow_boundaries(high, low):
    """glide_pair2 from v = 2w (w odd with the given words) against Python integers, both lanes."""
    w = (high << 64) | low
    for n in (w - 12345, w // 3 + 1, 2**64 + 1):
        want = walk_reference(n, 2 * w, 7, 10**6)
        got = glide_pair2(
            U64(n >> 64), U64(n & MASK64), U64(w >> 63), U64((2 * w) & MASK64), 7,
            U64(0), U64(3), U64(0), U64(8), 0, 10**6,
        )  # fmt: skip
        status, glide = got[0], got[1]
        if want[0] == OVERFLOW:
            assert status == OVERFLOW
        else:
            assert (status, glide) == want
        assert (got[2], got[3]) == walk_reference(3, 8, 0, 10**6)


def test_sieved_out_values_of_at_least_2_to_the_depth_drop():
    """The inequality behind exact_from = 2^(bits+extra): 2^i (2^i - 3^C) > C 3^(C-1) when 3^C < 2^i.

    With s <= C 3^(C-1) (steptables.build_sieve_extension), every n >= 2^i of
    a residue sieved out at depth i then has 3^C n + s < 2^i n.
    """
    deepest = MAX_SIEVE_BITS + MAX_SIEVE_EXTRA_BITS
    for i in range(1, deepest + 1):
        for c in range(0, i + 1):
            if 3**c < 2**i:
                assert 2**i * (2**i - 3**c) > c * 3 ** max(c - 1, 0)


# The 3^2 sieve: n = 3m + 2 and n = 9m + 4 skipped once their predecessor is in the range


@pytest.mark.parametrize(
    "start,count,chunk,bits,extra",
    [
        (1, 30_000, 3000, 6, 2),
        # (3S + 1)/2 = 7501 mid-chunk; the 2^8 sieve's exact_from inside the first chunk
        (5000, 30_000, 2500, 5, 3),
        (3, 50_000, 7000, 8, 4),
        # One chunk: every predecessor in the same chunk
        (100, 20_000, 20_000, 4, 6),
    ],
)
@pytest.mark.parametrize("max_steps", [100_000, 70, 45])
def test_mod9_sieve_matches_brute_force(backend, start, count, chunk, bits, extra, max_steps):
    """Tight step bounds leave many unresolved predecessors: their skipped successors must be listed."""
    got = run_verify(backend, start, count, chunk, bits, max_steps, extra)
    assert_matches_brute_force(got, start, count, max_steps)


def tightest_bound(bits, extra):
    """The smallest step bound with which the sieve still applies: most survivors are then listed."""
    from hpcthreads.backends.numba_cpu import _sieve_with_extension

    return int(_sieve_with_extension(bits, extra)[-2])  # the kernel's own glide_max


def followed(raw):
    return sorted(int(o) for o in np.concatenate([raw.too_long, raw.overflows]))


def skipped_from(start, count, max_steps, glide_max):
    """The chunk's first offset on the survivor walk: its running maximum glide has reached glide_max."""
    best = -1
    for off in range(count):
        if best >= glide_max:
            return off
        glide = ref.glide(start + off)
        if glide <= max_steps:
            best = max(best, glide)
    return count


def without_mod9_classes(start, offsets, first):
    return [o for o in offsets if o < first or (start + o) % 9 not in (2, 4, 5, 8)]


@pytest.mark.parametrize(
    "start,bits,extra",
    [(2**40 + 5, 6, 2), (2**64 - 1500, 3, 8), (2**67 - 600, 3, 12), (2**76 - 6000, 8, 4)],
)
def test_mod9_sieve_skips_exactly_the_two_classes(backend, start, bits, extra):
    """The kernel's n mod 9 (a's share plus b's, a of one or two words) picks exactly n = 3m + 2 and 9m + 4.

    With the tightest bound most survivors are listed, so the lists show which values were followed.
    """
    count, max_steps = 6000, tightest_bound(bits, extra)
    plain = followed(backend.verify_range(start, count, max_steps, bits, extra, 0))
    skipping = followed(backend.verify_range(start, count, max_steps, bits, extra, 1))
    expect = without_mod9_classes(start, plain, skipped_from(start, count, max_steps, max_steps))
    assert len(plain) > 150 and len(expect) < 0.7 * len(plain)
    assert skipping == expect


def test_mod9_sieve_waits_for_predecessors_in_the_range(backend):
    """Below (3S + 1)/2 nothing is skipped: a value's predecessor lies before the range."""
    start, count, max_steps = 2**40, 6000, tightest_bound(6, 2)
    job = {"name": "t", "type": "verify", "parameters": {"start": start, "count": 10}}
    skip_from = make_workload(make_job(job, 0)).skip_from
    assert skip_from == (3 * start + 2) // 2
    plain = followed(backend.verify_range(start, count, max_steps, 6, 2, 0))
    assert len(plain) > 150
    assert followed(backend.verify_range(start, count, max_steps, 6, 2, skip_from)) == plain
    # From the first whole block of 2^6 values at or above skip_from
    late = skip_from + 64 - skip_from % 64
    plain = followed(backend.verify_range(late, count, max_steps, 6, 2, 0))
    got = followed(backend.verify_range(late, count, max_steps, 6, 2, skip_from))
    assert got == without_mod9_classes(late, plain, skipped_from(late, count, max_steps, max_steps))
    assert len(got) < 0.7 * len(plain)


def test_successors_skipped_are_the_predecessor_relation():
    """p reaches each n of successors_skipped(p) before dropping below p, and every n of the two
    classes has such a p, smaller than n."""
    from hpcthreads.workloads.verify import successors_skipped

    for p in range(1, 5000):
        trajectory = [p]
        while len(trajectory) < 8 and trajectory[-1] >= p:
            v = trajectory[-1]
            trajectory.append(v // 2 if v % 2 == 0 else 3 * v + 1)
        for n in successors_skipped(p):
            assert n > p and n % 9 in (2, 4, 5, 8)
            assert n in trajectory and all(v >= p for v in trajectory[: trajectory.index(n) + 1])
    for n in range(2, 5000):
        if n % 3 == 2 or n % 9 == 4:
            p = (2 * n - 1) // 3 if n % 3 == 2 else (8 * n - 5) // 9
            assert p < n and n in successors_skipped(p)


@pytest.mark.parametrize("order", ["off-then-on", "on-then-off"])
def test_mod9_sieve_switched_between_chunks_keeps_results_exact(backend, order):
    """A resumed run may change sieve_mod9: the unresolved predecessor of a skipped value (4591, glide
    106 > 105) may lie in a chunk computed without the 3^2 sieve, its successor 6887 in one with it."""
    start, count, split, max_steps = 1, 7000, 5000, 105
    params = {"start": start, "count": count, "sieve_bits": 5, "sieve_extra_bits": 2, "max_steps": max_steps}
    modes = (0, 1) if order == "off-then-on" else (1, 0)
    workloads = [
        make_workload(make_job({"name": "t", "type": "verify", "parameters": {**params, "sieve_mod9": m}}, 0))
        for m in modes
    ]
    first = workloads[0].compute(backend, 0, split).summary
    second = workloads[1].compute(backend, split, count - split).summary
    got = workloads[1].finish(workloads[1].merge(second, first))
    assert 4591 in got.unresolved and (6887, 104) in got.glide_records
    assert_matches_brute_force(got, start, count, max_steps)
