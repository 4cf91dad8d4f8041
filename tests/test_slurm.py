"""The project's sbatch scripts under a real Slurm (see .ci/slurm-up.sh): world size, results, requeue.

Skipped when no Slurm answers; with HPCTHREADS_REQUIRE_SLURM=1 (set by CI) that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from h5compare import assert_same_results
from helpers import ROOT, cli

pytestmark = pytest.mark.timeout(300)

SLURM_DIR = Path(os.environ.get("HPCTHREADS_SLURM_DIR", "/tmp/hpcthreads-slurm"))


def slurm_env() -> dict[str, str]:
    env = dict(os.environ)
    if "SLURM_CONF" not in env and (SLURM_DIR / "slurm.conf").exists():
        env["SLURM_CONF"] = str(SLURM_DIR / "slurm.conf")
    return env


def slurm_problem() -> str | None:
    """Why no Slurm can take jobs here, or None."""
    if not shutil.which("sbatch"):
        return "no sbatch on PATH (start one with .ci/slurm-up.sh)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=slurm_env())
    states = proc.stdout.split()
    if proc.returncode != 0 or not any(s.rstrip("*") in ("idle", "mix", "alloc") for s in states):
        return (
            f"no Slurm node takes jobs (sinfo: {(proc.stdout + proc.stderr).strip()!r}); see .ci/slurm-up.sh"
        )
    return None


@pytest.fixture(scope="module")
def slurm():
    problem = slurm_problem()
    if problem:
        if os.environ.get("HPCTHREADS_REQUIRE_SLURM") == "1":
            pytest.fail(f"HPCTHREADS_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)
    return slurm_env()


def job_env(slurm: dict, **variables: str) -> dict[str, str]:
    """The jobs' environment: this Python and checkout, and tiny parameters."""
    env = {**slurm, "HPCTHREADS_PYTHON": sys.executable, "HPCTHREADS_HOME": str(ROOT)}
    env.update(variables)
    return env


def sbatch(env: dict, *args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["sbatch", "--wait", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )
    return proc


def plain_run(path: Path, *args: str) -> Path:
    cli("run", *args, "-o", str(path), check=True)
    return path


def world_size(path: Path) -> int:
    with h5py.File(path) as f:
        assert f.attrs["state"] == "complete"
        return int(f.attrs["ranks"])


def test_cpu_script_runs_every_rank_in_one_world(slurm, tmp_path):
    out, log = tmp_path / "cpu.h5", tmp_path / "cpu.log"
    env = job_env(slurm, HPCTHREADS_START="2**40", HPCTHREADS_COUNT="50000", HPCTHREADS_OUTPUT=str(out))
    env["HPCTHREADS_ARGS"] = "--batch-size 5000"
    proc = sbatch(env, "--ntasks-per-node=3", f"--output={log}", str(ROOT / "slurm/cpu.sbatch"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + log.read_text()
    # sbatch succeeds even when ranks ran as singletons: the file says how many ranks shared the run
    assert world_size(out) == 3, log.read_text()
    base = plain_run(
        tmp_path / "plain.h5", "collatz", "--start", "2**40", "--count", "50000", "--batch-size", "5000"
    )
    assert_same_results(base, out)


def test_gpu_script_keeps_the_coordinator_off_the_gpus(slurm, tmp_path):
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, env=slurm).stdout
    if "gpu:" not in gres:
        pytest.skip("the Slurm node declares no GPUs (.ci/slurm-up.sh declares fake ones)")
    out, log = tmp_path / "gpu.h5", tmp_path / "gpu.log"
    env = job_env(slurm, HPCTHREADS_COUNT="40000", HPCTHREADS_OUTPUT=str(out))
    args = ["--gpus-per-node=2", "--ntasks-per-node=3", "--cpus-per-task=1", f"--output={log}"]
    proc = sbatch(env, *args, str(ROOT / "slurm/gpu.sbatch"), cwd=tmp_path)
    text = log.read_text()
    assert proc.returncode == 0, proc.stderr + text
    assert world_size(out) == 3, text
    bound = dict(re.findall(r"rank (\d+) on \S+: CUDA_VISIBLE_DEVICES=\[([^\]]*)\]", text))
    assert bound["0"] == "" and {bound["1"], bound["2"]} == {"0", "1"}, text
    assert_same_results(plain_run(tmp_path / "plain.h5", "collatz", "--count", "40000"), out)


def test_a_signalled_job_checkpoints_requeues_and_resumes_to_the_plain_result(slurm, tmp_path):
    out, log = tmp_path / "requeue.h5", tmp_path / "requeue.log"
    env = job_env(slurm, HPCTHREADS_START="2**64", HPCTHREADS_COUNT="2e7", HPCTHREADS_OUTPUT=str(out))
    # Slow workers, so the run is surely mid-way when the signal comes
    env.update(HPCTHREADS_ARGS="--batch-size 1e5", HPCTHREADS_TEST_FAULTS="slow:factor=6")
    submit = subprocess.run(
        ["sbatch", "--parsable", "--ntasks-per-node=3", f"--output={log}", str(ROOT / "slurm/cpu.sbatch")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    job = submit.stdout.strip().split(";")[0]
    try:
        started = lambda: log.exists() and "rank 2 is pid" in log.read_text()  # noqa: E731
        wait_for(started, "the workers started", env, job, log)
        # Signalled once chunks are on disk, whatever the speed of this machine
        wait_for(lambda: _work_done(out) > 0, "the first finished chunk", env, job, log)
        # What Slurm does at --signal=B:USR1@SECONDS before the time limit
        subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=env, check=True)
        deadline = time.monotonic() + 60
        while job_state(env, job).get("Restarts") != "1":
            assert time.monotonic() < deadline, "no requeue:\n" + log.read_text()
            time.sleep(0.3)
        # A requeued job waits AuthInfo's cred_expire (10 s in .ci/slurm-up.sh) before it starts again
        deadline = time.monotonic() + 200
        while job_state(env, job).get("JobState") not in FINISHED:
            assert time.monotonic() < deadline, "the resumed job did not end:\n" + log.read_text()
            time.sleep(0.3)
    finally:
        subprocess.run(["scancel", job], env=env)
    text = log.read_text()
    assert job_state(env, job)["JobState"] == "COMPLETED", text
    assert "stopped by SIGUSR1" in text and "checkpointed; requeueing job" in text, text
    assert "restart 1:" in text, text
    assert world_size(out) == 3, text
    assert_same_results(
        plain_run(
            tmp_path / "plain.h5", "collatz", "--start", "2**64", "--count", "2e7", "--batch-size", "1e5"
        ),
        out,
    )


def test_array_campaign_parts_merge_into_the_plain_result(slurm, tmp_path):
    campaign = tmp_path / "campaign"
    env = job_env(
        slurm,
        HPCTHREADS_START="2**64 - 1000",
        HPCTHREADS_COUNT="30001",
        HPCTHREADS_TASKS="3",
        HPCTHREADS_CAMPAIGN_DIR=str(campaign),
        HPCTHREADS_SBATCH_ARGS="--ntasks-per-node=2",
        HPCTHREADS_WAIT="1",
    )
    proc = subprocess.run(
        [str(ROOT / "slurm/campaign.sh")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240
    )
    logs = "".join(p.read_text() for p in sorted(campaign.glob("*.out")))
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    parts = sorted(campaign.glob("part-*.h5"))
    assert len(parts) == 3 and all(world_size(part) == 2 for part in parts), logs
    base = plain_run(tmp_path / "plain.h5", "collatz", "--start", "2**64 - 1000", "--count", "30001")
    assert_same_results(base, campaign / "merged.h5")


def job_state(env: dict, job: str) -> dict[str, str]:
    text = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, env=env
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")


def _work_done(out: Path) -> int:
    from hpcthreads.tools.status import run_status

    try:
        return sum(job["done"] or 0 for job in run_status(out)["jobs"].values())
    except Exception:  # noqa: BLE001 - no ledger yet, or mid-snapshot
        return 0


def wait_for(predicate, what: str, env: dict, job: str, log: Path, timeout: float = 120) -> None:
    """Poll `predicate` until true; fail early, with the job's log, if the job ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        state = job_state(env, job).get("JobState")
        text = log.read_text() if log.exists() else ""
        assert state not in FINISHED, f"job {job} ended ({state}) before {what}:\n{text}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{text}"
        time.sleep(0.3)
