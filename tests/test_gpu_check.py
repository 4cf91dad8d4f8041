"""benchmarks/gpu_check.py without a GPU: numba-cuda on Numba's CUDA simulator, the cupy kernels built
for the CPU (tests/gpuemu.py), and backends made wrong on purpose, all against numba-cpu."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from gpuemu import CEmulatedBackend, build_library
from helpers import ROOT

from hpcthreads.errors import BackendError

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# Tiny ranges and short timed calls: the simulator runs every GPU thread in Python
TINY = ["--check-count", "24", "--seconds", "0.02", "--repeat", "2", "--probe-count", "8"]
TINY += ["--max-count", "64", "--thread-depth", "40"]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_script()
needs_numba_cuda = pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None and os.environ.get("HPCTHREADS_REQUIRE_CUDASIM") != "1",
    reason="numba-cuda is not installed",
)


@pytest.fixture(scope="module")
def kernels_on_cpu(tmp_path_factory):
    """A factory of the cupy backend's host code driving its CUDA C kernels built for the CPU."""
    library = build_library(tmp_path_factory.mktemp("kernels"))
    return lambda: CEmulatedBackend(library)


def run_in_process(tmp_path, capsys, starters, *args):
    out = tmp_path / "check.json"
    status = gpu_check.main([*TINY, "--backends", ",".join(starters), "--out", str(out), *args], starters)
    captured = capsys.readouterr()
    return status, (json.loads(out.read_text()) if out.exists() else None), captured.out + captured.err


def assert_checked_and_measured(report: dict, name: str) -> None:
    """Every job type at every range identical; every rate positive, with ratios that are rate quotients."""
    jobs = set(gpu_check.job_calls(1))
    assert {"collatz", "collatz per-number", "verify", "verify in a job from 1", "thread"} <= jobs
    assert "verify slice" in jobs and "verify slice" in gpu_check.RATE_JOBS
    checked = {(c["job"], c["range"]) for c in report["checks"] if c["backend"] == name}
    assert checked == set(checked_pairs())
    assert all(c["ok"] and "difference" not in c for c in report["checks"])
    assert report["verdict"] == "ok" and report["skipped"] == [] and report["failures"] == []
    assert report["backends"][name]["started"] and report["backends"][name]["compile_seconds"] >= 0
    cpu = report["rates"]["numba-cpu"]
    assert ("verify slice", "1") not in rate_pairs() and ("verify slice", "2^64") in rate_pairs()
    for job, label in rate_pairs():
        core, found = cpu[label][job], report["rates"][name][label][job]
        for r in (core, found):
            assert r["rate"] > 0 and 1 <= r["count"] <= 64 and r["seconds"] > 0
            if job != "thread":
                assert r["rate"] == pytest.approx(r["count"] / r["seconds"])
            else:  # path values: each thread's start value and its steps, up to the depth
                assert r["count"] / r["seconds"] < r["rate"] <= 41 * r["count"] / r["seconds"]
        assert found["per_core"] == pytest.approx(found["rate"] / core["rate"])
        assert core["per_core"] == pytest.approx(1.0)
        if job.startswith("verify"):
            assert found["vs_barina"] == pytest.approx(found["rate"] / 2.2e11)
            assert found["vs_honda"] == pytest.approx(found["rate"] / 1.3e12)
            assert 0 <= found["walked_fraction"] <= 1
        else:
            assert "vs_barina" not in found and "walked_fraction" not in found
    assert report["settings"]["sieve_bits"] == 28 and report["settings"]["sieve_extra_bits"] == 14
    assert report["elapsed_seconds"] > 0 and "numpy" in report["versions"]


def checked_pairs() -> list[tuple[str, str]]:
    """(job, range) of every check: each job at each range (slices: where a job is cut by residue)."""
    ranges = gpu_check.check_ranges(24)
    return [(j, r) for j in gpu_check.job_calls(1) for r, s in ranges.items() if gpu_check.applies(j, s)]


def rate_pairs() -> list[tuple[str, str]]:
    """(job, offset) of every rate measured, in order."""
    offsets = gpu_check.RATE_OFFSETS
    return [(j, r) for j in gpu_check.RATE_JOBS for r, s in offsets.items() if gpu_check.applies(j, s)]


def assert_table(output: str, report: dict, name: str) -> None:
    """The printed table holds one row per job, offset and backend, with the JSON's figures."""
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("job "))
    assert lines[header].split()[:4] == ["job", "offset", "backend", "rate/s"]
    rows = lines[header + 1 : header + 1 + 2 * len(rate_pairs())]
    found = report["rates"][name]["2^40"]["verify"]
    row = next(r for r in rows if r.startswith(f"{'verify':<22} 2^40 ") and f" {name} " in r)
    assert f"{found['rate']:10.3e}" in row and f"{found['per_core']:8.3g}" in row
    assert f"{found['vs_barina']:8.3g}" in row and f"{found['vs_honda']:8.3g}" in row
    assert sum(f" {name} " in r for r in rows) == len(rate_pairs())
    found = report["rates"][name]["2^64"]["verify slice"]
    row = next(r for r in rows if r.startswith(f"{'verify slice':<22} 2^64 ") and f" {name} " in r)
    assert f"{found['rate']:10.3e}" in row and f"{found['vs_honda']:8.3g}" in row


@needs_numba_cuda
def test_numba_cuda_on_the_simulator_is_checked_on_every_job_and_measured(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    command = [sys.executable, str(SCRIPT), *TINY, "--backends", "numba-cuda", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert_checked_and_measured(report, "numba-cuda")
    assert_table(proc.stdout, report, "numba-cuda")
    assert "simulator" in report["backends"]["numba-cuda"]["device"]
    assert f"figures written to {out}" in proc.stdout


def test_the_cupy_kernels_built_for_the_cpu_pass_and_are_measured(tmp_path, capsys, kernels_on_cpu):
    status, report, output = run_in_process(tmp_path, capsys, {"cupy-on-cpu": kernels_on_cpu})
    assert status == 0, output[-3000:]
    assert_checked_and_measured(report, "cupy-on-cpu")
    assert_table(output, report, "cupy-on-cpu")
    assert f"cupy-on-cpu: {len(checked_pairs())} checks, every one identical to numba-cpu" in output
    assert len(checked_pairs()) == 34


class WrongIn:
    """A backend that alters one result of one job type and passes every other call through."""

    def __init__(self, inner, job: str) -> None:
        self.inner, self.job = inner, job

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def collatz_range(self, start, count, store):
        raw = self.inner.collatz_range(start, count, store)
        if self.job == "collatz" and not store:
            return raw._replace(sum_delay=raw.sum_delay + 1)
        if self.job == "collatz per-number" and store:
            delay = raw.delay.copy()
            delay[-1] += 1
            return raw._replace(delay=delay)
        return raw

    def verify_range(self, start, count, max_steps, bits=28, extra=14, skip_from=0):
        raw = self.inner.verify_range(start, count, max_steps, bits, extra, skip_from)
        from_one = skip_from == gpu_check.skip_from(1)
        if self.job == "verify" and max_steps > 5 and not from_one:
            return raw._replace(walked=raw.walked + 1)
        if self.job == "verify in a job from 1" and max_steps > 5 and from_one and start > 1:
            return raw._replace(glide_records=raw.glide_records[:-1])
        if self.job == "verify 5 steps" and max_steps == 5:
            return raw._replace(too_long=np.append(raw.too_long, np.uint64(count)))
        return raw

    def verify_slice(self, plan, bfirst, ifirst, blast, iend):
        raw = self.inner.verify_slice(plan, bfirst, ifirst, blast, iend)
        if self.job == "verify slice":
            return raw._replace(too_long=[*raw.too_long, 2**64 + 1])
        return raw

    def thread_paths(self, start, count, depth):
        raw = self.inner.thread_paths(start, count, depth)
        if self.job == "thread":
            raw.paths_lo[0, 0] ^= 1
        return raw


@pytest.mark.parametrize("job", ["collatz", "collatz per-number", "verify", "verify in a job from 1",
                                 "verify 5 steps", "thread", "verify slice"])  # fmt: skip
def test_a_wrong_result_stops_the_check_naming_backend_job_and_range(tmp_path, capsys, kernels_on_cpu, job):
    status, report, output = run_in_process(
        tmp_path, capsys, {"wrong": lambda: WrongIn(kernels_on_cpu(), job)}
    )
    assert status == 1
    failed = report["checks"][-1]
    assert failed["job"] == job and not failed["ok"] and failed["difference"]
    assert all(c["ok"] for c in report["checks"][:-1]), "a check passed a wrong result before"
    start, count = failed["start"], failed["count"]
    assert f"MISMATCH wrong {job} on [{start}, {start + count}) ({failed['range']}): " in output
    assert report["verdict"] == "mismatch" and report["rates"] == {}
    assert "rate/s" not in output and " at 2^40: " not in output, "rates were measured after a difference"


def test_the_deadline_skips_what_remains_and_says_so(tmp_path, capsys, kernels_on_cpu, monkeypatch):
    # Past the deadline from the first rate on: the checks complete, every rate after the first few is skipped
    calls = {"n": 0}
    checks = len(checked_pairs())

    def past(deadline):
        calls["n"] += 1
        return calls["n"] > checks + 8

    monkeypatch.setattr(gpu_check, "past", past)
    status, report, output = run_in_process(tmp_path, capsys, {"gpu": kernels_on_cpu})
    assert status == 0 and report["verdict"] == "ok"
    assert len(report["checks"]) == checks and all(c["ok"] for c in report["checks"])
    measured = sum(len(jobs) for offsets in report["rates"].values() for jobs in offsets.values())
    total = 2 * len(rate_pairs())
    assert 0 < measured < total and len(report["skipped"]) == total - measured
    assert all(s.startswith("rate: ") for s in report["skipped"])
    assert f"skipped {total - measured}: rate: " in output


def test_a_deadline_before_the_checks_is_exit_3(tmp_path, capsys, kernels_on_cpu):
    status, report, output = run_in_process(tmp_path, capsys, {"gpu": kernels_on_cpu}, "--deadline", "0")
    assert status == 3 and report["verdict"] == "checks incomplete" and report["checks"] == []
    checks = len(checked_pairs())
    assert sum(s.startswith("check: gpu ") for s in report["skipped"]) == checks
    assert "deadline of 0 s reached" in output


def test_no_gpu_backend_says_why_and_exits_0(tmp_path, capsys):
    def no_driver():
        raise BackendError("no usable CUDA device here")

    status, report, output = run_in_process(tmp_path, capsys, {"a": no_driver, "b": no_driver})
    assert status == 0 and report["verdict"] == "no GPU backend" and report["checks"] == []
    assert report["backends"] == {n: {"started": False, "reason": "no usable CUDA device here"} for n in "ab"}
    assert "a: cannot start here (no usable CUDA device here)" in output
    assert "no GPU backend can start on this machine" in output


def test_kernels_a_driver_refuses_fail_the_check(tmp_path, capsys, kernels_on_cpu):
    class Refused:
        def describe(self):
            return "refused"

        def warm_up(self):
            raise RuntimeError("CUDA_ERROR_UNSUPPORTED_PTX_VERSION")

    status, report, output = run_in_process(tmp_path, capsys, {"bad": Refused, "good": kernels_on_cpu})
    assert status == 1 and report["verdict"] == "failed"
    assert "CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in report["backends"]["bad"]["reason"]
    assert {c["backend"] for c in report["checks"]} == {"good"} and "good" in report["rates"]
    assert "FAIL bad: its kernels failed: RuntimeError" in output
