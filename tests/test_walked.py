"""`walked` (verify) and `steps` (collatz, thread): the work counted, the same however a range is cut.

numba-cpu's count is checked against a brute-force count of the sieve's
survivors (gpucases.walked_reference); the GPU backends are checked against
numba-cpu in test_gpu_sieve.py and under the simulator.
"""

from __future__ import annotations

import random

import h5py
import pytest
import reference as ref
from gpucases import walked_reference
from helpers import cli, inspect_json

import hpcthreads
from hpcthreads.backends import make_backend
from hpcthreads.config import make_job
from hpcthreads.io.summaries import load_summary
from hpcthreads.workloads import make_workload
from hpcthreads.workloads.base import from_plain, to_plain
from hpcthreads.workloads.verify import VerifySummary


@pytest.mark.parametrize(
    "start,count,bits,extra,skip_from,max_steps",
    [
        (1, 6000, 6, 3, 1, 1000),  # a job from 1: every extension depth, the 3^2 sieve
        (1, 6000, 6, 3, 0, 1000),
        (2**40 - 3000, 9000, 8, 4, 0, 1000),
        (2**64 - 4000, 8000, 10, 3, 2**63, 1000),  # the 3^2 sieve from a block in the middle
        (2**76 - 1500, 3000, 8, 4, 0, 1000),  # no sieve from 2^76 on
        (2**40, 5000, 12, 4, 0, 10),  # a step bound below glide_max: no sieve
        (2**40, 5000, 0, 0, 0, 1000),
    ],
)
def test_walked_is_the_brute_force_count_of_survivors(cpu, start, count, bits, extra, skip_from, max_steps):
    raw = cpu.verify_range(start, count, max_steps, bits, extra, skip_from)
    assert raw.walked == walked_reference(start, count, bits, extra, skip_from, max_steps)


@pytest.mark.parametrize(
    "start,bits,extra", [(1, 6, 3), (2**40, 28, 14), (2**64, 12, 5), (2**34 - 7000, 20, 14)]
)
def test_walked_does_not_depend_on_the_chunks(cpu, start, bits, extra):
    count, skip_from = 40_000, 1 if start == 1 else 0
    whole = cpu.verify_range(start, count, 100_000, bits, extra, skip_from).walked
    rng = random.Random(start)
    for _ in range(3):
        total, offset = 0, 0
        while offset < count:
            size = min(count - offset, rng.choice([1, 7, 255, 257, 1000, 9000]))
            total += cpu.verify_range(start + offset, size, 100_000, bits, extra, skip_from).walked
            offset += size
        assert total == whole
    assert 0 < whole < count


def test_walked_is_small_with_the_default_sieve(cpu):
    for start in (2**40, 2**64):
        raw = cpu.verify_range(start, 1 << 22, 100_000)
        assert 0.002 < raw.walked / (1 << 22) < 0.01, (start, raw.walked)


def test_summaries_sum_walked_in_any_order_and_keep_it_through_the_plain_form(cpu):
    job = make_job({"name": "v", "type": "verify", "parameters": {"start": 2**40, "count": 30000}}, 0)
    workload = make_workload(job)
    parts = [workload.compute(cpu, off, 5000).summary for off in range(0, 30000, 5000)]
    forward, backward = workload.empty(), workload.empty()
    for part in parts:
        forward = workload.merge(forward, part)
    for part in reversed(parts):
        backward = workload.merge(part, backward)
    assert forward.walked == backward.walked == sum(p.walked for p in parts) > 0
    assert workload.summary_from_plain(to_plain(forward)) == forward
    # A ledger or file from before `walked`: unknown, and unknown once merged
    old = to_plain(forward)
    del old["walked"]
    unknown = from_plain(VerifySummary, old)
    assert unknown.walked is None and "walked" not in to_plain(unknown)
    assert workload.merge(unknown, parts[0]).walked is None


def test_walked_and_steps_in_the_results_file_and_inspect_json(tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "jobs:\n"
        "  - {name: v, type: verify, parameters: {start: 2**40, count: 300000, batch_size: 70000}}\n"
        "  - {name: c, type: collatz, parameters: {start: 1, count: 3000, batch_size: 1000}}\n"
        "  - {name: t, type: thread, parameters: {start: 5, thread_count: 40, max_depth: 30}}\n"
    )
    out = tmp_path / "out.h5"
    cli("run", str(jobs), "-o", str(out), "--backend", "numba-cpu", check=True)
    jobs_json = inspect_json(out)["jobs"]
    want = make_backend("numba-cpu").verify_range(2**40, 300000, 100_000).walked
    assert jobs_json["v"]["walked"] == want > 0
    with h5py.File(out) as f:
        assert int(f["jobs/v"].attrs["walked"]) == want
        assert load_summary(f["jobs/v"]).walked == want
    assert jobs_json["c"]["steps"] == sum(ref.delay(n) for n in range(1, 3001))
    depth = sum(len(ref.thread_path(n, 30)) - 1 for n in range(5, 45))
    assert jobs_json["t"]["steps"] == depth
    with hpcthreads.open(out) as results:
        assert results["v"].summary["walked"] == want and results["c"].summary["steps"] > 0
    assert "walked past the sieve" in cli("inspect", str(out), check=True).stdout
    assert cli("check", str(out)).returncode == 0
