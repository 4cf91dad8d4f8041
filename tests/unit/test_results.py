"""Every result of the numba-cpu backend against the brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

from hpcthreads.backends import make_backend
from hpcthreads.config import make_job
from hpcthreads.workloads import make_workload

FIRST_OVER_64 = 12327829503
FIRST_OVER_128 = 48503373501652785087


@pytest.fixture(scope="module")
def backend():
    return make_backend("numba-cpu")


def run_job(backend, jtype, chunk, **params):
    """Run a whole job in chunks of `chunk` items, merging in reverse order."""
    job = make_job({"name": "t", "type": jtype, "parameters": params}, 0)
    workload = make_workload(job)
    outs = [workload.compute(backend, off, min(chunk, job.size - off)) for off in range(0, job.size, chunk)]
    summary = workload.empty()
    for out in reversed(outs):
        summary = workload.merge(summary, out.summary)
    return workload.finish(summary), outs


def per_number(outs, name):
    return np.concatenate([out.arrays[name] for out in outs])


@pytest.mark.parametrize(
    "start,count,chunk",
    [
        (1, 20000, 20000),
        (1, 5000, 333),
        (FIRST_OVER_64 - 40, 80, 7),
        (2**64 - 150, 300, 64),
        (2**100, 60, 13),
        (FIRST_OVER_128 - 6, 12, 5),
        # Table edge (2^20), block-residue edges (2^16), two-word and block limits (2^96)
        (2**20 - 300, 600, 128),
        (2**36 - 2**16 - 20, 300, 100),
        (2**96 - 40, 80, 33),
    ],
)
def test_collatz_matches_brute_force(backend, start, count, chunk):
    want = ref.collatz_summary(start, count)
    got, outs = run_job(backend, "collatz", chunk, start=start, count=count, store="per-number")
    assert got.count == count
    assert got.sum_delay == want["sum_delay"]
    assert got.histogram.tolist() == want["histogram"]
    assert got.delay_records == want["delay_records"]
    assert got.path_records == want["path_records"]
    assert got.glide_records == want["glide_records"]
    ns = range(start, start + count)
    assert per_number(outs, "delay").tolist() == [want["delay"][n] for n in ns]
    assert per_number(outs, "glide").tolist() == [want["glide"][n] for n in ns]
    lo = per_number(outs, "peak").astype(object)
    hi = per_number(outs, "peak_hi").astype(object) if "peak_hi" in outs[0].arrays else 0 * lo
    overflow = dict(row for out in outs for row in out.extra.get("peak_overflow", []))
    for i, n in enumerate(ns):
        exact = overflow.get(n, (int(hi[i]) << 64) | int(lo[i]))
        assert exact == want["peak"][n], n


def test_block_table_matches_plain_steps():
    """Every residue's block entry against k plain steps of T, for a few values of a."""
    from hpcthreads.backends import steptables

    bits = 6
    hot, cold, peak_from = steptables.build_block_table(bits)
    assert peak_from <= 1
    for b in range(1 << bits):
        for a in (1, 2, 5, 2**40 + 3):
            n = (a << bits) + b
            values, v, steps = [], n, 0
            for _ in range(bits):
                if v % 2:
                    v = 3 * v + 1
                    values.append(v)
                    steps += 1
                v //= 2
                values.append(v)
                steps += 1
            d, c = int(hot[2 * b]) & 0xFFFFFFFF, int(hot[2 * b]) >> 32
            assert v == 3**c * a + d and steps == bits + c
            alpha, beta = int(hot[2 * b + 1]) & 0xFFFFFFFF, int(hot[2 * b + 1]) >> 32
            assert max([n, *values]) == max(n, alpha * a + beta)
            low_a, low_b = int(cold[2 * b]) & 0xFFFFFFFF, int(cold[2 * b]) >> 32
            assert low_a * a + low_b <= min(values)
            need, glide = int(cold[2 * b + 1]) & ((1 << 56) - 1), int(cold[2 * b + 1]) >> 56
            drop = next((i + 1 for i, x in enumerate(values) if x < n), 0)
            if glide and a >= need:
                assert drop == glide
            elif not glide:
                assert drop == 0


def test_known_values(backend):
    got, outs = run_job(backend, "collatz", 1, start=27, count=1, store="per-number")
    assert got.max_delay == (27, 111) and got.max_peak == (27, 9232) and got.max_glide == (27, 96)
    assert run_job(backend, "collatz", 1, start=837799, count=1)[0].max_delay == (837799, 524)
    assert run_job(backend, "collatz", 1, start=704511, count=1)[0].max_peak == (704511, 56991483520)
    one, _ = run_job(backend, "collatz", 1, start=1, count=1)
    assert (one.max_delay, one.max_peak, one.max_glide) == ((1, 0), (1, 1), (1, 0))


def test_overflow_boundaries(backend):
    below, _ = run_job(backend, "collatz", 1, start=FIRST_OVER_64 - 1, count=1)
    at, _ = run_job(backend, "collatz", 1, start=FIRST_OVER_64, count=1)
    assert below.max_peak[1] < 2**64 <= at.max_peak[1] == ref.peak(FIRST_OVER_64)
    below, _ = run_job(backend, "collatz", 1, start=FIRST_OVER_128 - 1, count=1)
    at, outs = run_job(backend, "collatz", 1, start=FIRST_OVER_128, count=1, store="per-number")
    assert below.max_peak[1] < 2**128 <= at.max_peak[1] == ref.peak(FIRST_OVER_128)
    assert outs[0].extra["peak_overflow"] == [(FIRST_OVER_128, ref.peak(FIRST_OVER_128))]
    assert at.max_delay == (FIRST_OVER_128, ref.delay(FIRST_OVER_128))


# Published classical records below 10**6 (OEIS A006877, A006884, A060412)
DELAY_RECORDS = [
    1,
    2,
    3,
    6,
    7,
    9,
    18,
    25,
    27,
    54,
    73,
    97,
    129,
    171,
    231,
    313,
    327,
    649,
    703,
    871,
    1161,
    2223,
    2463,
    2919,
    3711,
    6171,
    10971,
    13255,
    17647,
    23529,
    26623,
    34239,
    35655,
    52527,
    77031,
    106239,
    142587,
    156159,
    216367,
    230631,
    410011,
    511935,
    626331,
    837799,
]
PATH_RECORDS = [
    1,
    2,
    3,
    7,
    15,
    27,
    255,
    447,
    639,
    703,
    1819,
    4255,
    4591,
    9663,
    20895,
    26623,
    31911,
    60975,
    77671,
    113383,
    138367,
    159487,
    270271,
    665215,
    704511,
]
GLIDE_RECORDS = [2, 3, 7, 27, 703, 10087, 35655, 270271, 362343, 381727, 626331]


def test_classical_records_below_a_million(backend):
    got, _ = run_job(backend, "collatz", 1 << 17, start=1, count=10**6)
    assert [n for n, _ in got.delay_records] == DELAY_RECORDS
    assert [n for n, _ in got.path_records] == PATH_RECORDS
    # glide(1) = 0 by definition, so 1 opens the range-local glide records
    assert [n for n, _ in got.glide_records] == [1, *GLIDE_RECORDS]
    assert got.max_delay == (837799, 524)


@pytest.mark.parametrize("mod9", [0, 1])
def test_verify_from_1_gives_the_classical_glide_records(backend, mod9):
    """Published glide records (OEIS A060412) below 2 10^6, with the 2^k and 3^2 sieves at work."""
    params = dict(start=1, count=2 * 10**6, sieve_bits=10, sieve_extra_bits=4, sieve_mod9=mod9)
    got, _ = run_job(backend, "verify", 1 << 17, **params)
    assert [n for n, _ in got.glide_records] == [1, *GLIDE_RECORDS, 1027431, 1126015]
    assert got.max_glide == (1126015, ref.glide(1126015))
    assert got.covered == 2 * 10**6 and not got.unresolved


@pytest.mark.parametrize("sieve_bits", [0, 5, 24])
@pytest.mark.parametrize(
    "start,count",
    [
        (1, 3000),
        (2**40 - 700, 1400),
        (2**64 - 100, 200),
        (FIRST_OVER_64 - 300, 600),
        (2**76 - 300, 600),
        (FIRST_OVER_128 - 3, 6),
    ],
)
def test_verify_matches_brute_force(backend, start, count, sieve_bits):
    got, _ = run_job(backend, "verify", 97, start=start, count=count, sieve_bits=sieve_bits)
    glides = [(n, ref.glide(n)) for n in range(start, start + count)]
    assert got.count == got.covered == count
    assert got.unresolved == []
    assert got.glide_records == ref.range_records(glides)


def test_sieve_survivors_match_plain_steps():
    """Survivors are exactly the residues that stay at or above n for k steps of T, for every n."""
    from hpcthreads.backends import steptables

    bits = 10
    res, packed, glide_max, exact_from = steptables.build_sieve(bits)
    alive = []
    for b in range(1 << bits):
        c, t, survives = 0, b, True
        for j in range(1, bits + 1):
            t, c = ((3 * t + 1) // 2, c + 1) if t % 2 else (t // 2, c)
            if 3**c < 2**j:
                survives = False
                break
        if survives:
            alive.append(b)
            assert int(packed[len(alive) - 1]) == t | (c << 56)
    assert res.tolist() == alive
    glides = [ref.glide(n) for n in range(max(2, int(exact_from)), 1 << 14) if n % (1 << bits) not in alive]
    assert max(glides) <= glide_max


def test_verify_records_do_not_depend_on_the_sieve(backend):
    runs = [
        run_job(backend, "verify", 50_000, start=2**50 + 12345, count=200_000, sieve_bits=k)[0]
        for k in (0, 9, 20)
    ]
    assert runs[0].glide_records and all(r.glide_records == runs[0].glide_records for r in runs)
    assert all(r.covered == 200_000 for r in runs)


def test_verify_lists_values_past_the_step_bound(backend):
    got, _ = run_job(backend, "verify", 10, start=20, count=20, max_steps=20)
    want = [n for n in range(20, 40) if ref.glide(n) > 20]
    assert want and got.unresolved == want
    assert got.covered == 20 - len(want)


@pytest.mark.parametrize(
    "start,count,depth", [(1, 300, 12), (1, 40, 200), (FIRST_OVER_64, 5, 300), (FIRST_OVER_128 - 2, 4, 500)]
)
def test_thread_paths_match_brute_force(backend, start, count, depth):
    got, outs = run_job(backend, "thread", 7, start=start, thread_count=count, max_depth=depth)
    paths = per_number(outs, "paths").astype(object)
    if "paths_hi" in outs[0].arrays:
        paths = paths | (per_number(outs, "paths_hi").astype(object) << 64)
    overflow = {(t, s): v for out in outs for t, s, v in out.extra.get("overflow", [])}
    depths = per_number(outs, "depth")
    for i in range(count):
        want = ref.thread_path(start + i, depth)
        assert depths[i] == len(want) - 1
        row = [overflow.get((i, s), int(paths[i, s])) for s in range(len(want))]
        assert row == want
        assert not paths[i, len(want) :].any()
    if start + count > FIRST_OVER_128:
        assert overflow, "the exact path was not exercised"
    assert got.reached_one == sum(ref.thread_path(start + i, depth)[-1] == 1 for i in range(count))
