"""Sub-coordinators under real mpiexec: identical results at every level of grouping, failures named,
and an oversubscribed run of the simulated backend."""

from __future__ import annotations

import h5py
import pytest
from h5compare import assert_same_results
from helpers import cli, inspect_json, mpirun, rank_table, write_job_file
from test_parallel_io import parallel, prun  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(300)

JOBS = """
jobs:
  - {name: numbers, type: collatz, priority: low, parameters: {start: 1, count: 90000, batch_size: 3000,
     store: per-number}}
  - {name: big, type: collatz, parameters: {start: '2**64 - 3000', count: 6000, batch_size: 200}}
  - {name: check, type: verify, priority: high, parameters: {start: '2**40', count: 200000, batch_size: 5000}}
  - {name: tree, type: thread, parameters: {thread_count: 2000, max_depth: 40, batch_size: 64}}
"""
ITEMS = 90000 + 6000 + 200000 + 2000


@pytest.fixture(scope="module")
def job_file(tmp_path_factory):
    return write_job_file(tmp_path_factory, "scale", JOBS)


@pytest.fixture(scope="module")
def serial(job_file):
    out = job_file.parent / "serial.h5"
    cli("run", str(job_file), "-o", str(out), check=True)
    return out


def roles(path) -> tuple[list[str], list[str]]:
    """(device column, chunk ranks' devices) of a results file."""
    devices = [d.decode() for d in rank_table(path)["device"]]
    with h5py.File(path) as f:
        ranks = sorted(set(f["run/chunks/rank"][()].tolist()))
    return devices, [devices[r] for r in ranks]


# 9 ranks. --groups 3: subs 1, 4 and 7 lead ranks 2-3, 5-6 and 8. --groups 2,6: sub 1 leads subs 2
# and 4 (workers 3 and 5) and worker 6, sub 7 leads worker 8. --groups 4,5,8: sub 1 leads sub 2
# (which leads sub 3, with workers 4-6) and sub 7 (worker 8)
@pytest.mark.parametrize("groups,levels,subs", [("none", 1, 0), ("3", 2, 3), ("2,6", 3, 4), ("4,5,8", 4, 4)])
def test_results_are_identical_at_every_level_of_grouping(job_file, serial, tmp_path, groups, levels, subs):
    out = tmp_path / "grouped.h5"
    proc = mpirun(9, "run", str(job_file), "-o", str(out), "--groups", groups)
    assert proc.returncode == 0, proc.stderr
    assert_same_results(serial, out)
    with h5py.File(out) as f:
        assert f.attrs["coordination_levels"] == levels and f.attrs["sub_coordinators"] == subs
        assert int(f["run/chunks/count"][()].sum()) == ITEMS
    devices, computing = roles(out)
    assert sum(d.startswith("sub-coordinator") for d in devices) == subs
    assert not any(d.startswith("sub-coordinator") or d == "coordinator" for d in computing)
    assert inspect_json(out)["makespan_seconds"] > 0


def test_grouped_parallel_writes_are_identical(parallel, job_file, serial, tmp_path):  # noqa: F811
    out = tmp_path / "mpio.h5"
    proc = prun(7, "run", str(job_file), "-o", str(out), "--io", "mpio", "--groups", "3")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert_same_results(serial, out)
    with h5py.File(out) as f:
        assert f.attrs["io"] == "mpio" and f.attrs["sub_coordinators"] == 2


def test_a_job_failing_under_a_sub_coordinator_fails_alone_with_the_workers_report(job_file, tmp_path):
    out = tmp_path / "fail.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "raise:job=check"}
    proc = mpirun(7, "run", str(job_file), "-o", str(out), "--groups", "3", env=faults)
    assert proc.returncode == 1, proc.stderr
    assert "job 'check' failed: rank" in proc.stderr and "InjectedFault" in proc.stderr
    with h5py.File(out) as f:
        assert f["jobs/check"].attrs["state"] == "failed"
        assert all(f[f"jobs/{name}"].attrs["state"] == "complete" for name in ("numbers", "big", "tree"))


def test_a_silent_worker_under_a_sub_coordinator_is_named_and_recorded(tmp_path):
    out = tmp_path / "silent.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "sleep:rank=3,seconds=100000"}
    args = ["run", "collatz", "--count", "3e6", "--batch-size", "2e4", "-o", str(out), "--groups", "3"]
    proc = mpirun(5, *args, "--heartbeat-timeout", "3", env=faults, timeout=90)
    report = f"exit {proc.returncode}\nstderr:\n{proc.stderr}"
    assert proc.returncode != 0, report
    assert "rank 3 on" in proc.stderr and "sent nothing for 3 s while holding work" in proc.stderr, report
    status = cli("status", str(out))
    assert status.returncode == 3 and "stopped: rank 3 on" in status.stdout, status.stdout


def test_an_oversubscribed_simulated_run_of_32_ranks_with_a_sub_coordinator_per_8(tmp_path):
    out = tmp_path / "simulated.h5"
    count = 200_000_000
    args = ["run", "collatz", "--count", str(count), "--batch-size", "1e5", "-o", str(out)]
    args += ["--backend", "simulated", "--simulated-rate", "1e7", "--simulated-slow", "0.25:4"]
    proc = mpirun(32, *args, "--groups", "8", timeout=280)
    assert proc.returncode == 0, proc.stderr
    doc = inspect_json(out)
    assert "holds no results" in doc["simulated"] and doc["makespan_seconds"] > 0
    assert "NO RESULTS" in cli("inspect", str(out), check=True).stdout
    with h5py.File(out) as f:
        assert f.attrs["ranks"] == 32 and f.attrs["sub_coordinators"] == 4
        chunks = f["run/chunks"]
        spans = sorted(zip(chunks["offset"][()].tolist(), chunks["count"][()].tolist()))
    # Every item exactly once, by workers only (ranks 1, 9, 17 and 25 coordinate their groups)
    assert spans[0][0] == 0 and sum(c for _, c in spans) == count
    assert all(a + c == b for (a, c), (b, _) in zip(spans, spans[1:]))
    devices, computing = roles(out)
    assert [r for r, d in enumerate(devices) if d.startswith("sub-coordinator")] == [1, 9, 17, 25]
    assert all(d.startswith("simulated") for d in computing)
    assert sum("(slowed)" in d for d in devices) >= 5


def test_a_bad_grouping_is_a_one_line_error(tmp_path):
    proc = cli("run", "collatz", "--count", "10", "-o", str(tmp_path / "x.h5"), "--groups", "1")
    assert proc.returncode == 2 and "--groups: '1' is not 'node' or a group size" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_simulated_file_is_never_merged_or_resumed_as_results(tmp_path):
    out = tmp_path / "sim.h5"
    args = ["run", "collatz", "--count", "1e6", "-o", str(out), "--backend", "simulated"]
    cli(*args, "--simulated-rate", "1e8", check=True)
    real = tmp_path / "real.h5"
    cli("run", "collatz", "--start", "1000001", "--count", "10", "-o", str(real), check=True)
    merged = cli("merge", str(tmp_path / "m.h5"), str(out), str(real))
    assert merged.returncode == 2 and "holds no results" in merged.stderr
    # A stopped simulated run is not finished by a computing one
    stopped = tmp_path / "stopped.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "kill:rank=0,after=2"}
    sleepy = ["--batch-size", "1e4", "--backend", "simulated", "--simulated-rate", "1e5"]
    cli(*args[:4], "-o", str(stopped), *sleepy, env=faults)
    assert (tmp_path / "stopped.h5.partial").exists()
    resumed = cli("run", "collatz", "--count", "1e6", "-o", str(stopped), "--batch-size", "1e4", "--resume")
    assert resumed.returncode == 2 and "simulated" in resumed.stderr, resumed.stderr


def test_a_worker_that_never_starts_under_a_sub_coordinator_is_named_and_recorded(tmp_path):
    out = tmp_path / "no-start.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "startup:rank=3,seconds=100000"}
    args = ["run", "collatz", "--count", "1e5", "-o", str(out), "--startup-timeout", "3", "--groups", "3"]
    proc = mpirun(5, *args, env=faults, timeout=120)
    report = f"exit {proc.returncode}\nstderr:\n{proc.stderr}"
    assert proc.returncode != 0, report
    assert "rank(s) [3] did not start within 3 s (--startup-timeout)" in proc.stderr, report
    assert "rank(s) [3] did not start within 3 s" in cli("status", str(out)).stdout


def test_chunk_seconds_sets_the_chunk_time(tmp_path):
    def chunks(*options: str) -> int:
        out = tmp_path / "chunks.h5"
        cli(
            "run",
            "collatz",
            "--start",
            "2**40",
            "--count",
            "2e6",
            "-o",
            str(out),
            "--force",
            *options,
            check=True,
        )
        with h5py.File(out) as f:
            return len(f["run/chunks/count"][()])

    assert chunks("--chunk-seconds", "0.002", "--heartbeat-interval", "0.5") > 4 * chunks()
    bad = cli("run", "collatz", "--count", "10", "-o", str(tmp_path / "x.h5"), "--chunk-seconds", "0")
    assert bad.returncode == 2 and "--chunk-seconds" in bad.stderr
