"""Real multi-rank runs under mpiexec: identical results, stealing, failures, no hangs."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import h5py
import pytest
import reference as ref
from h5compare import assert_same_results
from helpers import (
    ROOT,
    cli,
    inspect_json,
    mpiexec,
    mpirun,
    rank_table,
    run_session,
    wait_for_progress,
    write_job_file,
)

from hpcthreads.runtime.finalize import GUARD_FIRED

pytestmark = pytest.mark.timeout(240)

JOBS = """
jobs:
  - {name: numbers, type: collatz, priority: low, parameters: {start: 1, count: 120000, batch_size: 7000,
     store: per-number}}
  - {name: big, type: collatz, parameters: {start: '2**64 - 2000', count: 4000, batch_size: 300}}
  - {name: check, type: verify, priority: high, parameters: {start: '2**40', count: 150000, batch_size: 9000}}
  - {name: tree, type: thread, parameters: {thread_count: 3000, max_depth: 60, batch_size: 128}}
"""


@pytest.fixture(scope="module")
def job_file(tmp_path_factory):
    return write_job_file(tmp_path_factory, "jobs", JOBS)


@pytest.fixture(scope="module")
def serial(job_file):
    """The same jobs on one rank with no launcher."""
    out = job_file.parent / "serial.h5"
    cli("run", str(job_file), "-o", str(out), check=True)
    return out


def test_serial_run_matches_the_reference(serial):
    doc = inspect_json(serial)["jobs"]
    start = 2**64 - 2000
    want = ref.collatz_summary(start, 4000)
    assert doc["big"]["sum_delay"] == want["sum_delay"]
    assert doc["big"]["delay_records"] == [list(p) for p in want["delay_records"]]


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_results_are_identical_at_every_rank_count(job_file, serial, tmp_path, ranks):
    out = tmp_path / f"n{ranks}.h5"
    proc = mpirun(ranks, "run", str(job_file), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert_same_results(serial, out)
    table = rank_table(out)
    assert len(table["rank"]) == ranks
    assert sum(table["items"]) == 120000 + 4000 + 150000 + 3000
    with h5py.File(out) as f:
        assert f.attrs["ranks"] == ranks and f.attrs["state"] == "complete"
        chunks = f["run/chunks"]
        assert sum(chunks["count"][()]) == sum(table["items"])
        assert set(chunks["rank"][()]) <= set(range(1, ranks)) | ({0} if ranks == 1 else set())


def test_a_slow_worker_is_balanced_by_stealing(tmp_path):
    out, base = tmp_path / "slow.h5", tmp_path / "base.h5"
    args = [
        "run",
        "collatz",
        "--start",
        "2**64",
        "--count",
        "2e6",
        "--batch-size",
        "2e6",
        "--store",
        "per-number",
    ]
    cli(*args, "-o", str(base), check=True)
    # One chunk that cannot be cut below batch_size by the scheduler: only stealing can share it
    proc = mpirun(3, *args, "-o", str(out), env={"HPCTHREADS_TEST_FAULTS": "slow:rank=1,factor=6"})
    assert proc.returncode == 0, proc.stderr
    assert_same_results(base, out)
    table = rank_table(out)
    assert sum(table["stolen_by"]) > 0 and sum(table["stolen_from"]) > 0
    # The fast worker (rank 2) did most of the work
    assert table["items"][2] > 2 * table["items"][1]


def test_waiting_ranks_do_not_spin(tmp_path):
    out = tmp_path / "idle.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "sleep:rank=1,seconds=3"}
    proc = mpirun(3, "run", "collatz", "--count", "2e5", "--batch-size", "1e5", "-o", str(out), env=faults)
    assert proc.returncode == 0, proc.stderr
    table = rank_table(out)
    # Rank 0 coordinates through the whole run, rank 2 waits most of it: both nearly asleep
    assert table["wall"][0] > 2.5 and table["cpu"][0] < 0.1 * table["wall"][0]
    assert table["idle"][2] > 2.0 and table["idle_cpu"][2] < 0.1 * table["idle"][2]


def test_a_failing_chunk_is_retried_on_another_worker(tmp_path):
    out, base = tmp_path / "retry.h5", tmp_path / "base.h5"
    args = ["run", "collatz", "--count", "50000", "--batch-size", "5000"]
    cli(*args, "-o", str(base), check=True)
    faults = {"HPCTHREADS_TEST_FAULTS": "raise:rank=1,times=1"}
    proc = mpirun(3, *args, "-o", str(out), env=faults)
    assert proc.returncode == 0, proc.stderr
    assert "injected failure on rank 1" in proc.stderr and "retrying" in proc.stderr
    assert_same_results(base, out)


def test_a_job_that_fails_twice_fails_alone_with_the_workers_report(tmp_path, job_file):
    out = tmp_path / "fail.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "raise:job=check"}
    proc = mpirun(3, "run", str(job_file), "-o", str(out), env=faults)
    assert proc.returncode == 1
    assert "job 'check' failed: rank" in proc.stderr and "InjectedFault" in proc.stderr
    assert "Traceback" in proc.stderr  # the worker's traceback, logged by the coordinator
    with h5py.File(out) as f:
        assert f["jobs/check"].attrs["state"] == "failed"
        assert all(f[f"jobs/{name}"].attrs["state"] == "complete" for name in ("numbers", "big", "tree"))
        assert f.attrs["state"] == "failed"


def test_a_killed_worker_ends_the_run_without_hanging(tmp_path):
    out = tmp_path / "killed.h5"
    # Killed as its first chunk starts: with faster stealing its second one may go to rank 1
    faults = {"HPCTHREADS_TEST_FAULTS": "kill:rank=2,after=0"}
    proc = mpirun(
        3, "run", "collatz", "--count", "3e6", "--batch-size", "2e4", "-o", str(out), env=faults, timeout=120
    )
    assert proc.returncode != 0
    # The launcher ends the run and reports a process by pid; the log maps pids to ranks
    output = proc.stdout + proc.stderr
    assert "rank 2 is pid" in output and "BAD TERMINATION" in output


def test_a_silent_worker_is_named_after_the_heartbeat_timeout(tmp_path):
    out = tmp_path / "silent.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "sleep:rank=2,seconds=100000"}
    proc = mpirun(
        3,
        "run",
        "collatz",
        "--count",
        "3e6",
        "--batch-size",
        "2e4",
        "-o",
        str(out),
        "--heartbeat-timeout",
        "3",
        env=faults,
        timeout=60,
    )
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode != 0, report
    assert "rank 2 on" in proc.stderr and "sent nothing for 3 s while holding work" in proc.stderr, report
    # Aborted: the partial file and its ledger stay for --resume, no final file appears
    assert not out.exists()
    assert (tmp_path / "silent.h5.partial").exists() and (tmp_path / "silent.h5.checkpoint").exists()
    # The reason outlives the job's log: `status` reads it from the ledger
    status = cli("status", str(out))
    assert status.returncode == 3
    assert "stopped: rank 2 on" in status.stdout and "sent nothing for 3 s" in status.stdout, status.stdout


def test_a_worker_slow_to_start_is_waited_for_beyond_the_heartbeat_timeout(tmp_path):
    # A cold compile cache makes start-up far longer than a heartbeat; that is not a death
    out = tmp_path / "slow-start.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "startup:rank=2,seconds=5"}
    args = ["run", "collatz", "--count", "1e5", "-o", str(out), "--heartbeat-timeout", "2"]
    proc = mpirun(3, *args, env=faults, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert inspect_json(out)["jobs"]["collatz"]["state"] == "complete"


def test_a_worker_that_never_starts_is_named_after_the_startup_timeout(tmp_path):
    out = tmp_path / "no-start.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "startup:rank=2,seconds=100000"}
    args = ["run", "collatz", "--count", "1e5", "-o", str(out), "--startup-timeout", "3"]
    proc = mpirun(3, *args, env=faults, timeout=120)
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode != 0, report
    assert "rank(s) [2] did not start within 3 s (--startup-timeout)" in proc.stderr, report
    assert "did not start within 3 s" in cli("status", str(out)).stdout


def test_more_workers_than_work_exit_cleanly(tmp_path):
    out = tmp_path / "tiny.h5"
    proc = mpirun(4, "run", "collatz", "--count", "3", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert inspect_json(out)["jobs"]["collatz"]["max_delay"] == [3, 7]


def test_an_empty_job_file_is_a_clear_error_on_every_rank(tmp_path):
    jobs = tmp_path / "empty.yaml"
    jobs.write_text("jobs: []\n")
    proc = mpirun(2, "run", str(jobs), "-o", str(tmp_path / "o.h5"))
    assert proc.returncode == 2
    assert proc.stderr.count("hpcthreads: error: job file: 'jobs' is empty") == 1
    assert "Traceback" not in proc.stderr


def test_an_existing_output_is_refused_by_all_ranks(tmp_path):
    out = tmp_path / "exists.h5"
    out.write_text("precious")
    proc = mpirun(3, "run", "collatz", "--count", "10", "-o", str(out))
    assert proc.returncode == 2 and "exists; use --force" in proc.stderr
    assert out.read_text() == "precious"


def test_per_rank_log_files(tmp_path):
    out = tmp_path / "logs.h5"
    pattern = str(tmp_path / "run.{rank}.log")
    proc = mpirun(
        2, "run", "collatz", "--count", "1000", "-o", str(out), "--log-file", pattern, "--log-level", "debug"
    )
    assert proc.returncode == 0, proc.stderr
    for rank in (0, 1):
        text = (tmp_path / f"run.{rank}.log").read_text()
        assert f" {rank}/2 " in text


def test_in_mpi_tests_pass_under_pytest_mpi():
    """The tests in tests/mpi run inside MPI (pytest-mpi), at 2 and 3 ranks."""
    for ranks in (2, 3):
        command = [
            mpiexec(),
            "-n",
            str(ranks),
            sys.executable,
            "-m",
            "pytest",
            "--with-mpi",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "mpi"),
        ]
        proc = run_session(command, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert " passed" in proc.stdout and " failed" not in proc.stdout


def _start_and_signal(command, sig, after_line, out, env=None):
    """Start a run, send `sig` once `after_line` is on its stderr and a chunk of `out` is done."""
    import os
    import signal as _signal  # noqa: F401 - documents that sig is a signal number
    import threading

    proc = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    lines = []
    seen = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if after_line in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(60), "".join(lines)
    wait_for_progress(out, 1e-9, proc)
    proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    reader.join(timeout=10)
    return rc, "".join(lines)


@pytest.mark.parametrize("ranks", [1, 3])
def test_sigterm_stops_cleanly_keeping_finished_chunks(tmp_path, ranks):
    import signal

    out = tmp_path / "stopped.h5"
    args = ["run", "collatz", "--count", "1e9", "--batch-size", "1e5", "-o", str(out), "--log-level", "debug"]
    if ranks == 1:
        command = [sys.executable, "-m", "hpcthreads", *args]
        marker = "one rank: computing here"
    else:
        command = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "hpcthreads", *args]
        marker = f"rank {ranks - 1} is pid"
    rc, stderr = _start_and_signal(command, signal.SIGTERM, marker, out)
    assert rc == 75, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert not out.exists()
    with h5py.File(tmp_path / "stopped.h5.partial") as f:
        assert f.attrs["state"] == "interrupted"
        done = int(f["run/chunks/count"][()].sum())
    assert 0 < done < 10**9
    assert "stopped: SIGTERM received" in cli("status", str(out)).stdout


@pytest.mark.parametrize(
    "script,args,expect",
    [
        ("bench_dispatch.py", ["--tasks", "500"], "ratio hpcthreads/futures"),
        ("bench_balance.py", ["--count", "3e5", "--batch-size", "1e5"], "efficiency ideal/hpcthreads"),
    ],
)
def test_runtime_benchmarks_still_run(script, args, expect):
    """The benchmarks use the runtime's internals: keep them working (their figures are not checked)."""
    command = [mpiexec(), "-n", "3", sys.executable, str(ROOT / "benchmarks" / script), *args]
    proc = run_session(command, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert expect in proc.stdout


def test_verify_from_1_with_the_3_squared_sieve_lists_every_unresolved_value(tmp_path):
    """Skipped values whose predecessor is unresolved, in other chunks on other ranks, are listed."""
    jobs = tmp_path / "verify.yaml"
    params = "{start: 1, count: 30000, batch_size: 2500, sieve_bits: 6, sieve_extra_bits: 2, max_steps: 70}"
    jobs.write_text(f"jobs:\n  - {{name: v, type: verify, parameters: {params}}}\n")
    out = tmp_path / "verify.h5"
    proc = mpirun(3, "run", str(jobs), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    from hpcthreads.io.summaries import load_summary

    job = inspect_json(out)["jobs"]["v"]
    glides = [(n, ref.glide(n)) for n in range(1, 30001)]
    assert job["unresolved"] == [n for n, g in glides if g > 70]
    assert job["covered"] == 30000 - len(job["unresolved"])
    with h5py.File(out) as f:
        records = load_summary(f["jobs/v"]).glide_records
    assert records == ref.range_records([(n, g) for n, g in glides if g <= 70])


def test_a_rank_stuck_after_its_run_leaves_with_status_0_and_says_so():
    """The finalize guard: a C-level alarm ends a finished rank that MPI_Finalize would hold, with a
    line on stderr naming the rank and its host."""
    code = (
        "from hpcthreads.runtime.finalize import guard_finalize\n"
        "import time, sys\n"
        "guard_finalize(3, 4, 1)\n"
        "time.sleep(60)\n"
        "sys.exit(5)\n"
    )
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 30
    assert f"rank 3/4 on {socket.gethostname()}" in proc.stderr, proc.stderr
    assert proc.stderr.count(GUARD_FIRED) == 1, proc.stderr
