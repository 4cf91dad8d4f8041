"""Stopping, killing and resuming: nothing lost, nothing counted twice, bad resumes refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from h5compare import assert_same_results
from helpers import cli, kill_run, mpiexec, wait_for_progress, write_job_file

pytestmark = pytest.mark.timeout(300)

JOBS = """
jobs:
  - {name: numbers, type: collatz, parameters: {start: '2**40', count: 3000000, batch_size: 100000,
     store: per-number}}
  - {name: check, type: verify, priority: high,
     parameters: {start: '2**64', count: 1500000, batch_size: 100000}}
  - {name: tree, type: thread, priority: low,
     parameters: {thread_count: 20000, max_depth: 80, batch_size: 1000}}
"""


@pytest.fixture(scope="module")
def job_file(tmp_path_factory):
    return write_job_file(tmp_path_factory, "resume", JOBS)


@pytest.fixture(scope="module")
def uninterrupted(job_file):
    out = job_file.parent / "whole.h5"
    cli("run", str(job_file), "-o", str(out), check=True)
    return out


def launch(ranks: int, *args: str, slow: float = 0) -> subprocess.Popen:
    """Start a run in its own session; `slow` stretches it so that a signal lands mid-run."""
    command = [sys.executable, "-m", "hpcthreads", *args]
    if ranks > 1:
        command = [mpiexec(), "-n", str(ranks), *command]
    env = {**os.environ, "HPCTHREADS_TEST_FAULTS": f"slow:factor={slow}"} if slow else None
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env
    )


@pytest.mark.parametrize("fraction", [0.0, 0.4, 0.85])
def test_sigkill_of_every_rank_then_resume_gives_identical_results(
    job_file, uninterrupted, tmp_path, fraction
):
    out = tmp_path / "killed.h5"
    args = ["run", str(job_file), "-o", str(out), "--checkpoint-interval", "0.5"]
    # Slowed down so that the kill lands before the end even at 85%: one chunk can be 14% of the work
    proc = launch(3, *args, slow=3)
    wait_for_progress(out, fraction, proc)
    kill_run(proc, signal.SIGKILL)
    if out.exists():
        pytest.skip("the run finished before it could be killed: this machine is faster than expected")
    if (tmp_path / "killed.h5.checkpoint").exists():
        status = cli("status", str(out))
        assert status.returncode == 3, status.stdout + status.stderr
    # Resume with another rank count: the ledger, not the layout of ranks, decides what is left
    resumed = launch(2, *args, "--resume")
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    assert_same_results(uninterrupted, out)
    assert not (tmp_path / "killed.h5.partial").exists() and not (tmp_path / "killed.h5.ledger").exists()
    assert cli("status", str(out)).returncode == 0


def test_sigkill_of_a_grouped_run_then_resume_with_another_grouping_is_identical(
    job_file, uninterrupted, tmp_path
):
    out = tmp_path / "grouped.h5"
    args = ["run", str(job_file), "-o", str(out), "--checkpoint-interval", "0.5"]
    # Sub-coordinators 1 and 4 lead ranks 2-3 and 5; their batches reach the ledger in groups
    proc = launch(6, *args, "--groups", "3", slow=3)
    wait_for_progress(out, 0.4, proc)
    kill_run(proc, signal.SIGKILL)
    if out.exists():
        pytest.skip("the run finished before it could be killed: this machine is faster than expected")
    resumed = launch(5, *args, "--resume", "--groups", "2")
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    assert_same_results(uninterrupted, out)


def test_sigterm_checkpoints_with_exit_75_then_resume_completes(job_file, uninterrupted, tmp_path):
    out = tmp_path / "stopped.h5"
    args = ["run", str(job_file), "-o", str(out)]
    proc = launch(3, *args, slow=4)
    wait_for_progress(out, 0.3, proc)
    _, stderr = kill_run(proc, signal.SIGTERM)
    assert proc.returncode == 75, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    second = launch(3, *args, "--resume")
    _, stderr = second.communicate(timeout=240)
    assert second.returncode == 0, stderr
    assert_same_results(uninterrupted, out)


def test_resume_of_a_complete_run_does_nothing(uninterrupted, job_file):
    before = uninterrupted.read_bytes()
    proc = cli("run", str(job_file), "-o", str(uninterrupted), "--resume", check=True)
    assert "already complete" in proc.stderr
    assert uninterrupted.read_bytes() == before


def _stopped_run(tmp_path, job_file):
    out = tmp_path / "partial.h5"
    proc = launch(1, "run", str(job_file), "-o", str(out), "--checkpoint-interval", "0.2", slow=4)
    wait_for_progress(out, 0.3, proc)
    kill_run(proc, signal.SIGTERM)
    assert proc.returncode == 75
    return out


def _files(out):
    return {p.name: p.read_bytes() for p in out.parent.glob(out.name + "*")}


def test_resume_with_a_different_job_file_is_refused(tmp_path, job_file):
    out = _stopped_run(tmp_path, job_file)
    before = _files(out)
    other = tmp_path / "other.yaml"
    other.write_text(JOBS.replace("count: 1500000", "count: 1500001"))
    proc = cli("run", str(other), "-o", str(out), "--resume")
    assert proc.returncode == 2
    assert "different job file (job 'check' differs)" in proc.stderr and "Traceback" not in proc.stderr
    assert _files(out) == before


def test_resume_may_change_only_the_sieve(tmp_path, job_file, uninterrupted):
    """The sieve changes no result: a run stopped with one sieve finishes with another, identically."""
    out = _stopped_run(tmp_path, job_file)
    other = tmp_path / "other-sieve.yaml"
    other_sieve = "count: 1500000, sieve_bits: 12, sieve_extra_bits: 3, sieve_mod9: 0,"
    other.write_text(JOBS.replace("count: 1500000,", other_sieve))
    proc = cli("run", str(other), "-o", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert_same_results(uninterrupted, out)


def test_a_stopped_run_is_not_overwritten_without_resume_or_force(tmp_path, job_file):
    out = _stopped_run(tmp_path, job_file)
    before = _files(out)
    proc = cli("run", str(job_file), "-o", str(out))
    assert proc.returncode == 2 and "use --resume to finish it or --force" in proc.stderr
    assert _files(out) == before


@pytest.mark.parametrize("damage", ["truncate-partial", "garbage-checkpoint", "missing-partial"])
def test_resume_of_a_damaged_run_is_refused_and_nothing_is_made_worse(tmp_path, job_file, damage):
    out = _stopped_run(tmp_path, job_file)
    partial, checkpoint = tmp_path / "partial.h5.partial", tmp_path / "partial.h5.checkpoint"
    if damage == "truncate-partial":
        partial.write_bytes(partial.read_bytes()[:1000])
    elif damage == "garbage-checkpoint":
        checkpoint.write_text("{not json")
    else:
        partial.unlink()
    before = _files(out)
    proc = cli("run", str(job_file), "-o", str(out), "--resume")
    assert proc.returncode == 2, proc.stderr
    assert "cannot resume" in proc.stderr and "Traceback" not in proc.stderr
    assert _files(out) == before


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "full.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "fsize:bytes=4000000"}
    proc = cli("run", "collatz", "--count", "2e6", "--store", "per-number", "-o", str(out), env=faults)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hpcthreads: error: cannot create") and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
