"""The residue-slice sieve of `verify` (backends.slicesieve, workloads.slices) against brute force.

Every reference here is computed step by step from the definition of the
map; nothing is taken from the kernels' own tables.
"""

from __future__ import annotations

import random

import pytest
import reference as ref

from hpcthreads.backends import make_backend
from hpcthreads.config import make_job, slice_bits
from hpcthreads.errors import ConfigError
from hpcthreads.workloads import make_workload, records
from hpcthreads.workloads.slices import SliceLayout, glide_bound


@pytest.fixture(scope="module")
def cpu():
    return make_backend("numba-cpu")


def t_steps(n: int, steps: int) -> tuple[int, int, int]:
    """(T^steps(n), odd steps, first depth j <= steps with 3^c_j < 2^j, or 0)."""
    t, c, dropped = n, 0, 0
    for j in range(1, steps + 1):
        if t & 1:
            t, c = (3 * t + 1) >> 1, c + 1
        else:
            t >>= 1
        if not dropped and 3**c < 2**j:
            dropped = j
    return t, c, dropped


def kept_by_sieve(n: int, K: int, extra: int, join: bool) -> bool:
    """Brute force: n survives K + extra steps (no prefix with 3^c < 2^j) and, with join, does not
    join n - 1 after K steps with the same odd steps."""
    if t_steps(n % (1 << (K + extra)), K + extra)[2]:
        return False
    if join:
        b = n % (1 << K)
        tb, cb, _ = t_steps(b, K)
        tp, cp, _ = t_steps(b - 1, K)
        return not (tb == tp and cb == cp)
    return True


def skipped_mod9(n: int, start: int, verified_below: int) -> bool:
    """The 3^2 sieve's rule in a job cut by residue: n = 3m + 2 or 9m + 4 outside the window that spans
    both classes' gaps, the values whose predecessor lies in [verified_below, start)."""
    if n % 9 not in (2, 4, 5, 8):
        return False
    gaps = [(-(-(3 * verified_below + 1) // 2), -(-(3 * start + 1) // 2))]  # (2n - 1)/3 in the gap
    gaps.append((-(-(9 * verified_below + 5) // 8), -(-(9 * start + 5) // 8)))  # (8n - 5)/9 in the gap
    gaps = [(lo, hi) for lo, hi in gaps if lo < hi]
    skipped = not gaps or not min(lo for lo, _ in gaps) <= n < max(hi for _, hi in gaps)
    if skipped:
        # Sound: the predecessor is in the range or taken as verified
        pred = (2 * n - 1) // 3 if n % 3 == 2 else (8 * n - 5) // 9
        assert pred >= start or pred < verified_below
    return skipped


def run_job(cpu, params: dict, seed: int = 1):
    workload = make_workload(make_job({"name": "v", "type": "verify", "parameters": params}, 0))
    rng = random.Random(seed)
    summary, offset, count = workload.empty(), 0, workload.job.size
    while offset < count:
        size = min(count - offset, rng.choice([1, 7, 333, 4096, 20000]))
        summary = workload.merge(summary, workload.compute(cpu, offset, size).summary)
        offset += size
    return workload, workload.finish(summary)


def test_layout_is_a_bijection_onto_the_range():
    start, K = 2**20 + 1234, 8
    layout = SliceLayout(start, 5000, K, prefix=37, floor=0)
    values = layout.values(0, layout.count)
    assert sorted(values) == list(range(start, start + 5000))
    # The body is residue-major: residues never decrease, values grow within a residue
    body = [(n % 2**K, n) for n in values[37:]]
    assert body == sorted(body)
    # A chunk's pieces cover exactly its items
    for offset, count in [(0, 40), (30, 1000), (2000, 1), (4999, 1)]:
        got = []
        for kind, *args in layout.pieces(offset, count):
            if kind == "range":
                got += list(range(args[0], args[0] + args[1]))
            else:
                bfirst, ifirst, blast, iend = args
                first = layout.before(bfirst) + ifirst + layout.prefix
                last = layout.before(blast) + iend + layout.prefix
                got += layout.values(first, last - first)
        assert got == values[offset : offset + count]


def test_walk_table_takes_k2_steps_of_t():
    from hpcthreads.backends.slicesieve import walk_table

    k2 = 7
    table = walk_table(k2)
    for r in range(1 << k2):
        for q in (0, 1, 12345):
            n = (q << k2) + r
            t, c, _ = t_steps(n, k2)
            mul, ds = int(table[2 * r]), int(table[2 * r + 1])
            assert mul == 3**c and mul * q + (ds & 0xFFFFFFFF) == t and ds >> 32 == k2 + c


@pytest.mark.parametrize("K", [9, 12, 14])
def test_every_residue_the_slice_sieve_drops_drops_or_joins(K):
    """Each residue the slice sieve drops has a prefix with 3^c < 2^j (n drops below itself there for
    n >= 2^K, checked on values), and with the join rule each one it drops joins B - 1."""
    from hpcthreads.backends.slicetables import survivors_reference

    for join in (False, True):
        kept = set(survivors_reference(K, join))
        for b in range(1 << K):
            if b in kept:
                assert kept_by_sieve(b, K, 0, join)
                continue
            t, c, dropped = t_steps(b, K)
            if dropped:
                for a in (1, 3, 2**30 + 7):
                    n = (a << K) + b
                    assert t_steps(n, dropped)[0] < n
            else:
                assert join and t_steps(b - 1, K)[:2] == (t, c)


@pytest.mark.parametrize(
    "start,count,K,params",
    [
        (2**40 + 99, 60000, 12, {"sieve_mod9": 0}),
        (2**64 - 30000, 60000, 12, {"sieve_mod9": 0, "max_steps": 200}),  # across 2^64, values past the bound
        (2**40 + 99, 60000, 12, {"sieve_mod9": 0, "sieve_extra_bits": 0}),
        (3 * 2**50 + 5, 40000, 10, {"sieve_mod9": 0, "sieve_bits": 12, "sieve_extra_bits": 3}),
    ],
)
def test_slice_jobs_match_brute_force(cpu, start, count, K, params):
    """Records, unresolved values and `walked` of a job cut by residue, over random chunks."""
    workload, got = run_job(cpu, {"start": start, "count": count, "sieve_slice_bits": K, **params})
    plan = workload.slice_plan
    assert plan is not None and plan.K == K
    max_steps = workload.max_steps
    glides = [(n, ref.glide(n)) for n in range(start, start + count)]
    assert got.count == count
    assert got.glide_records == ref.range_records([(n, g) for n, g in glides if g <= max_steps])
    assert got.unresolved == [n for n, g in glides if g > max_steps]
    body_start = start + workload.layout.prefix
    walked_body = sum(kept_by_sieve(n, K, plan.extra, False) for n in range(body_start, start + count))
    prefix_walked = cpu.verify_range(start, workload.layout.prefix, max_steps, *workload.sieve, 0).walked
    assert got.walked == walked_body + prefix_walked


@pytest.mark.parametrize("verified_below", [None, 2**40 - 2**30, 1])
def test_the_3_squared_sieve_follows_verified_below(cpu, verified_below):
    """Values of the 3^2 sieve's classes are skipped where their predecessor is taken as verified;
    the records are those of every other value (a skipped n never beats its predecessor)."""
    start, count, K = 2**40 + 99, 60000, 12
    params = {"start": start, "count": count, "sieve_slice_bits": K}
    if verified_below is not None:
        params["verified_below"] = verified_below
    workload, got = run_job(cpu, params, seed=7)
    below = start if verified_below is None else verified_below
    body_start = start + workload.layout.prefix
    kept = [
        (n, ref.glide(n))
        for n in range(start, start + count)
        if n < body_start or not skipped_mod9(n, start, below)
    ]
    assert got.glide_records == ref.range_records(kept)
    assert workload.job.params["verified_below"] == below


def test_the_join_rule_skips_only_values_that_join_and_follows_unresolved_ones(cpu):
    start, count, K = 2**40 + 99, 60000, 12
    params = {"start": start, "count": count, "sieve_slice_bits": K, "sieve_mod9": 0, "sieve_join": 1}
    workload, got = run_job(cpu, params, seed=3)
    body_start = start + workload.layout.prefix
    kept = [
        (n, ref.glide(n))
        for n in range(start, start + count)
        if n < body_start or kept_by_sieve(n % 2**K, K, 0, True) or not kept_by_sieve(n % 2**K, K, 0, False)
    ]
    assert got.glide_records == ref.range_records(kept)
    # With a step bound every value past it is listed, skipped or not, once its smaller partner is
    params.update(max_steps=120)
    _, bounded = run_job(cpu, params, seed=4)
    glides = [(n, ref.glide(n)) for n in range(start, start + count)]
    unresolved = set(bounded.unresolved)
    assert {n for n, g in glides if g > 120 and (n, g) in kept} <= unresolved
    for n in unresolved:
        assert ref.glide(n) > 120


def test_slice_bits_come_from_the_size_and_are_checked():
    assert slice_bits(2**40, 10**6) == 0  # small jobs: contiguous ranges
    assert slice_bits(9 * 2**61, 2**61) == 51
    assert 28 <= slice_bits(2**40, 2**40) <= 34
    # 3^K A must fit in 128 bits: far from 1, K gets smaller
    assert 0 < slice_bits(2**100, 2**60) < 51
    job = make_job({"name": "v", "type": "verify", "parameters": {"start": 9 * 2**61, "count": 2**61}}, 0)
    assert job.params["sieve_slice_bits"] == 51 and job.params["verified_below"] == 9 * 2**61
    assert glide_bound(51) == 63 + 39
    bad_ones = ({"sieve_slice_bits": 60}, {"sieve_slice_bits": 20, "start": 2**10}, {"verified_below": 2**41})
    for bad in bad_ones:
        params = {"start": 2**40, "count": 10**6, **bad}
        with pytest.raises(ConfigError):
            make_job({"name": "v", "type": "verify", "parameters": params}, 0)


def test_a_slice_candidate_list_normalises_to_the_range_records(cpu):
    """Chunks of residues report each A's improvements; their union gives the records in order of n."""
    start, count, K = 2**44 + 3, 30000, 9
    workload, got = run_job(cpu, {"start": start, "count": count, "sieve_slice_bits": K, "sieve_mod9": 0}, 9)
    assert got.glide_records == records.normalise(got.glide_records)
    assert got.glide_records == ref.range_records([(n, ref.glide(n)) for n in range(start, start + count)])
