"""The project's sbatch scripts under a real Slurm of three nodes (.ci/cluster-up.sh).

Every multi-node test reads the host of each rank back from the results file, and compares
the results with a one-rank run of the same job file. Skipped when no test cluster answers;
with HPCTHREADS_REQUIRE_CLUSTER=1 (set by CI) that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import h5py
import pytest
from h5compare import assert_same_results
from helpers import ROOT, cli, write_job_file
from slurmkit import (
    cluster_fixture,
    job_env,
    job_state,
    node_command,
    pids_by_rank,
    rank_hosts,
    submit,
    wait_for,
    wait_until_finished,
    work_done,
)

pytestmark = pytest.mark.timeout(300)

THREE = {"node1", "node2", "node3"}

# All three job types, small enough for a few seconds on two cores
JOBS = """
jobs:
  - {name: numbers, type: collatz, parameters: {start: '2**40', count: 200000, batch_size: 20000,
     store: per-number}}
  - {name: check, type: verify, priority: high,
     parameters: {start: '2**64 - 100000', count: 300000, batch_size: 30000}}
  - {name: tree, type: thread, priority: low,
     parameters: {thread_count: 2000, max_depth: 40, batch_size: 200}}
"""

MPIO_PYTHON = os.environ.get("HPCTHREADS_MPIO_PYTHON", str(ROOT / ".venv-mpio" / "bin" / "python"))


@pytest.fixture(scope="module")
def cluster():
    return cluster_fixture(3)


@pytest.fixture(scope="module")
def job_file(tmp_path_factory):
    return write_job_file(tmp_path_factory, "cluster", JOBS)


@pytest.fixture(scope="module")
def one_rank(job_file):
    """The reference: the same job file run by one process, no launcher."""
    out = job_file.parent / "one-rank.h5"
    cli("run", str(job_file), "-o", str(out), check=True)
    return out


def script_run(cluster, tmp_path, script, *sbatch_args, **variables) -> tuple[Path, str]:
    """slurm/SCRIPT submitted with SBATCH_ARGS, until it ends; the results file and the job's log."""
    out, log = tmp_path / "out.h5", tmp_path / "job.log"
    env = job_env(cluster, HPCTHREADS_OUTPUT=str(out), **variables)
    job = submit(env, *sbatch_args, f"--output={log}", str(ROOT / "slurm" / script), cwd=tmp_path)
    try:
        state = wait_until_finished(env, job, log, timeout=240)
    finally:
        subprocess.run(["scancel", job], env=env)
    text = read(log)
    assert state == "COMPLETED", f"job {job} {state}:\n{text}"
    return out, text


def test_cpu_script_on_three_nodes_gives_the_one_rank_results(cluster, job_file, one_rank, tmp_path):
    out, text = script_run(
        cluster, tmp_path, "cpu.sbatch", "-N", "3", "--ntasks-per-node=2", HPCTHREADS_TARGET=str(job_file)
    )
    hosts = rank_hosts(out)
    assert len(hosts) == 6 and set(hosts) == THREE, text
    assert hosts[0] == "node1"  # the coordinator, on the first node of the allocation
    assert_same_results(one_rank, out)


def test_one_sub_coordinator_per_node(cluster, job_file, one_rank, tmp_path):
    out, text = script_run(
        cluster,
        tmp_path,
        "cpu.sbatch",
        "-N",
        "3",
        "--ntasks-per-node=3",
        HPCTHREADS_TARGET=str(job_file),
        HPCTHREADS_ARGS="--groups node",
    )
    with h5py.File(out) as f:
        assert int(f.attrs["sub_coordinators"]) == 3 and int(f.attrs["coordination_levels"]) == 2, text
        devices = [d.decode() for d in f["run/ranks/device"][:]]
    hosts = rank_hosts(out)
    subs = {host for host, device in zip(hosts, devices) if device.startswith("sub-coordinator")}
    assert subs == THREE, (hosts, devices)
    assert_same_results(one_rank, out)


def test_gpu_script_on_two_nodes_binds_each_worker_to_its_node_local_gpu(cluster, tmp_path):
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, env=cluster).stdout
    assert "gpu:2" in gres, f"the test cluster declares no fake GPUs: {gres!r}"
    out, text = script_run(
        cluster,
        tmp_path,
        "gpu.sbatch",
        "-N",
        "2",
        "--gpus-per-node=2",
        "--ntasks-per-node=3",
        "--cpus-per-task=1",
        HPCTHREADS_COUNT="40000",
    )
    # As the script logs them: rank -> (host, CUDA_VISIBLE_DEVICES)
    logged = {
        int(rank): (host, visible)
        for rank, host, visible in re.findall(r"rank (\d+) on (\S+): CUDA_VISIBLE_DEVICES=\[([^\]]*)\]", text)
    }
    assert sorted(logged) == [0, 1, 2, 3, 4], text
    with h5py.File(out) as f:
        recorded = [v.decode() for v in f["run/ranks/cuda_visible_devices"][:]]
    hosts = rank_hosts(out)
    assert [(hosts[r], recorded[r]) for r in range(5)] == [logged[r] for r in range(5)], (hosts, recorded)
    # Rank 0 sees no GPU; on each node the two workers take devices 0 and 1, one each
    assert logged[0] == ("node1", "")
    for node in ("node1", "node2"):
        assert sorted(v for r, (h, v) in logged.items() if r and h == node) == ["0", "1"], logged
    assert_same_results(cli_reference(tmp_path, "collatz", "--count", "40000"), out)


def cli_reference(tmp_path: Path, *args: str) -> Path:
    path = tmp_path / "reference.h5"
    cli("run", *args, "-o", str(path), check=True)
    return path


def test_parallel_hdf5_with_ranks_on_three_nodes_matches_gather(cluster, job_file, one_rank, tmp_path):
    if not Path(MPIO_PYTHON).exists():
        message = f"no parallel h5py at {MPIO_PYTHON} (scripts/install-parallel-h5py.sh .venv-mpio)"
        if os.environ.get("HPCTHREADS_REQUIRE_MPIO") == "1":
            pytest.fail(message)
        pytest.skip(message)
    out, text = script_run(
        cluster,
        tmp_path,
        "cpu.sbatch",
        "-N",
        "3",
        "--ntasks-per-node=2",
        HPCTHREADS_TARGET=str(job_file),
        HPCTHREADS_PYTHON=MPIO_PYTHON,
        HPCTHREADS_ARGS="--io mpio",
    )
    with h5py.File(out) as f:
        assert f.attrs["io"] == "mpio", text
    with h5py.File(one_rank) as f:
        assert f.attrs["io"] == "gather"
    assert set(rank_hosts(out)) == THREE
    assert_same_results(one_rank, out)


def test_a_signalled_three_node_job_checkpoints_requeues_and_resumes(cluster, tmp_path):
    out, log = tmp_path / "requeue.h5", tmp_path / "requeue.log"
    env = job_env(cluster, HPCTHREADS_START="2**64", HPCTHREADS_COUNT="2e7", HPCTHREADS_OUTPUT=str(out))
    # Slow workers, so the run is surely mid-way when the signal comes
    env.update(HPCTHREADS_ARGS="--batch-size 1e5", HPCTHREADS_TEST_FAULTS="slow:factor=6")
    args = ["-N", "3", "--ntasks-per-node=1", f"--output={log}", str(ROOT / "slurm/cpu.sbatch")]
    job = submit(env, *args, cwd=tmp_path)
    try:
        wait_for(lambda: len(pids_by_rank(read(log))) == 2, "the workers started", env, job, log)
        # Signalled once chunks are on disk, whatever the speed of this machine
        wait_for(lambda: work_done(out) > 0, "the first finished chunk", env, job, log)
        # What Slurm does at --signal=B:USR1@SECONDS before the time limit
        subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=env, check=True)
        deadline = time.monotonic() + 60
        while job_state(env, job).get("Restarts") != "1":
            assert time.monotonic() < deadline, "no requeue:\n" + read(log)
            time.sleep(0.3)
        # A requeued job waits AuthInfo's cred_expire (10 s in .ci/cluster-up.sh) before it starts again
        state = wait_until_finished(env, job, log, timeout=200)
    finally:
        subprocess.run(["scancel", job], env=env)
    text = read(log)
    assert state == "COMPLETED", text
    assert "stopped by SIGUSR1" in text and "checkpointed; requeueing job" in text, text
    assert "restart 1:" in text, text
    assert set(rank_hosts(out)) == THREE, text
    plain = cli_reference(tmp_path, "collatz", "--start", "2**64", "--count", "2e7", "--batch-size", "1e5")
    assert_same_results(plain, out)


def test_a_rank_killed_on_one_node_ends_the_run_and_the_rest_resume_it(cluster, job_file, one_rank, tmp_path):
    out, log = tmp_path / "killed.h5", tmp_path / "killed.log"
    env = job_env(
        cluster,
        HPCTHREADS_TARGET=str(job_file),
        HPCTHREADS_OUTPUT=str(out),
        HPCTHREADS_ARGS="--checkpoint-interval 0.5",
        HPCTHREADS_TEST_FAULTS="slow:factor=40",
    )
    args = ["-N", "3", "--ntasks-per-node=2", f"--output={log}", str(ROOT / "slurm/cpu.sbatch")]
    job = submit(env, *args, cwd=tmp_path)
    try:
        wait_for(lambda: len(pids_by_rank(read(log))) == 5, "the workers started", env, job, log)
        wait_for(lambda: work_done(out) > 0, "the first finished chunk", env, job, log)
        victim, (pid, host) = next((r, ph) for r, ph in pids_by_rank(read(log)).items() if ph[1] == "node3")
        # SIGKILL from inside node3, as a node's OOM killer or a crash would
        subprocess.run(node_command("node3", "kill", "-KILL", str(pid)), check=True)
        killed = time.monotonic()
        state = wait_until_finished(env, job, log, timeout=60)
        ended = time.monotonic() - killed
    finally:
        subprocess.run(["scancel", job], env=env)
    text = read(log)
    assert state == "FAILED" and ended < 60, text
    # Slurm names the node and task; the coordinator's log maps that task to its pid and host
    assert re.search(rf"node3: tasks? [0-9,-]*\b{victim}\b[0-9,-]*: Killed", text), text
    assert f"rank {victim} is pid {pid} on node3" in text
    assert not out.exists() and (tmp_path / "killed.h5.ledger").exists()
    # The same job, resumed on the two nodes left
    env.pop("HPCTHREADS_TEST_FAULTS")
    resumed = tmp_path / "resumed.log"
    args = ["-N", "2", "--exclude=node3", "--ntasks-per-node=2", f"--output={resumed}"]
    job = submit(env, *args, str(ROOT / "slurm/cpu.sbatch"), cwd=tmp_path)
    try:
        state = wait_until_finished(env, job, resumed, timeout=240)
    finally:
        subprocess.run(["scancel", job], env=env)
    assert state == "COMPLETED", read(resumed)
    assert "resuming from the ledger" in read(resumed), read(resumed)
    assert set(rank_hosts(out)) == {"node1", "node2"}
    assert_same_results(one_rank, out)


def test_campaign_tasks_leave_and_join_and_merge_into_the_one_rank_result(
    cluster, job_file, one_rank, tmp_path
):
    campaign = tmp_path / "campaign"
    env = job_env(
        cluster,
        HPCTHREADS_TARGET=str(job_file),
        HPCTHREADS_UNITS="3",
        HPCTHREADS_TASKS="2",
        HPCTHREADS_CAMPAIGN_DIR=str(campaign),
        HPCTHREADS_SBATCH_ARGS="--ntasks-per-node=2",
        HPCTHREADS_ARGS="--lease-timeout 4 --checkpoint-interval 0.3",
        HPCTHREADS_TEST_FAULTS="slow:rate=20000",
    )
    proc = subprocess.run(
        [str(ROOT / "slurm/campaign.sh")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    array = re.search(r"array job (\d+)", proc.stdout).group(1)
    merge = re.search(r"merge job (\d+)", proc.stdout).group(1)
    merge_log = campaign / f"hpcthreads-merge-{merge}.out"
    try:
        # Task 0 is cancelled while it holds a unit with finished chunks saved
        wait_for(lambda: holding(campaign, f"slurm {array}_0"), "task 0 mid-unit", env, merge, merge_log)
        subprocess.run(["scancel", f"{array}_0"], env=env, check=True)
        added = subprocess.run(
            [str(ROOT / "slurm/campaign-add.sh"), str(campaign), "1", "--ntasks-per-node=2"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
        )  # fmt: skip
        assert added.returncode == 0, added.stdout + added.stderr
        assert f"merge job {merge} now also waits" in added.stdout
        later = re.search(r"array job (\d+)", added.stdout).group(1)
        state = wait_until_finished(env, merge, merge_log, timeout=240)
    finally:
        subprocess.run(["scancel", array, merge], env=env)
    logs = "".join(p.read_text() for p in sorted(campaign.glob("*.out")))
    assert state == "COMPLETED", logs
    assert job_state(env, f"{array}_0").get("JobState") == "CANCELLED"
    assert_same_results(one_rank, campaign.with_name(campaign.name + ".h5"))
    done = {p.name: json.loads(p.read_text()) for p in (campaign / "done").iterdir()}
    assert len(done) == 9
    by_task = {record["job_id"] for record in done.values()}
    assert f"slurm {later}_0" in by_task, "the task added later took units"
    assert {record["host"] for record in done.values()} <= THREE


def holding(campaign: Path, job_id: str) -> bool:
    """Whether the campaign's run of this Slurm job holds a unit whose part has finished chunks."""
    from hpcthreads.campaign.store import Campaign

    for path in (campaign / "holders").glob("*.json"):
        try:
            info = json.loads(path.read_text())
        except ValueError:
            continue
        if info.get("job_id") == job_id and info.get("unit"):
            opened = Campaign.open(campaign)
            part = opened.part_path(opened.by_id[info["unit"]], info["generation"])
            return work_done(part) > 0
    return False


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
