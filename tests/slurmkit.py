"""Helpers for tests under a real Slurm: the test cluster of .ci/cluster-up.sh, or any Slurm on PATH.

The test cluster is three nodes in network namespaces on this machine (node1..node3), with a
slurmd and an sshd on each; `node_command` runs a command inside one of them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import pytest
from helpers import ROOT

CLUSTER_DIR = Path(os.environ.get("HPCTHREADS_CLUSTER_DIR", "/tmp/hpcthreads-cluster"))


def _cluster_python() -> str:
    """The Python that Slurm's steps run: HPCTHREADS_CLUSTER_PYTHON, else the parallel-HDF5 venv's.

    That venv's mpi4py is built on Debian's MPICH (4.0). PyPI's MPICH (5.0) under Slurm 22.05's
    pmi2 plugin, over TCP between nodes, now and then sent PMI put requests with bytes from
    beyond its buffer ("value not properly terminated in client request"; UCX then fails to
    unpack an address in MPI_Init), so steps of several nodes failed at random (docs/deploy.md).
    Without that venv: this Python.
    """
    mpio = Path(os.environ.get("HPCTHREADS_MPIO_PYTHON", str(ROOT / ".venv-mpio" / "bin" / "python")))
    return os.environ.get("HPCTHREADS_CLUSTER_PYTHON") or str(mpio if mpio.exists() else sys.executable)


CLUSTER_PYTHON = _cluster_python()

FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")


def slurm_env() -> dict[str, str]:
    """This environment, pointed at the test cluster's Slurm unless SLURM_CONF names another."""
    env = dict(os.environ)
    if "SLURM_CONF" not in env and (CLUSTER_DIR / "slurm.conf").exists():
        env["SLURM_CONF"] = str(CLUSTER_DIR / "slurm.conf")
    if env.get("SLURM_CONF") == str(CLUSTER_DIR / "slurm.conf"):
        # The nodes are namespaces of one machine: without this, MPI (UCX) talks between them
        # through shared memory and nothing crosses their network; and with every interface in
        # a rank's address, Slurm's pmi2 plugin may split MPICH's PMI requests (.ci/cluster-exec.sh)
        env.setdefault("UCX_TLS", "tcp,self")
        env.setdefault("UCX_NET_DEVICES", "eth0")
    return env


def idle_nodes(env: dict[str, str]) -> list[str] | None:
    """Names of the nodes that take jobs, or None when no Slurm answers."""
    if not shutil.which("sbatch"):
        return None
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return None
    fields = (line.split() for line in proc.stdout.splitlines())
    up = ("idle", "mix", "alloc", "comp")  # comp: ending the last test's job, about to take more
    return sorted({f[0] for f in fields if len(f) == 2 and f[1].rstrip("*") in up})


def require(problem: str | None, variable: str) -> None:
    """Skip for `problem`, or fail when `variable` (set by CI) says the test must run."""
    if problem:
        if os.environ.get(variable) == "1":
            pytest.fail(f"{variable}=1 but {problem}")
        pytest.skip(problem)


def cluster_fixture(count: int = 3) -> dict[str, str]:
    """The test cluster's environment, once `count` of its nodes take jobs."""
    env = slurm_env()
    nodes = idle_nodes(env) if env.get("SLURM_CONF") == str(CLUSTER_DIR / "slurm.conf") else None
    wanted = [f"node{i}" for i in range(1, count + 1)]
    problem = None
    if nodes is None:
        problem = f"the test cluster is not up ({CLUSTER_DIR}; start it with .ci/cluster-up.sh)"
    elif not set(wanted) <= set(nodes):
        problem = f"the test cluster has {nodes} taking jobs, not {wanted}"
    require(problem, "HPCTHREADS_REQUIRE_CLUSTER")
    return env


def node_command(node: str, *command: str) -> list[str]:
    """`command` run inside `node` of the test cluster (its network and hostname)."""
    return [str(ROOT / ".ci" / "cluster-node.sh"), node, *command]


def job_env(slurm: dict, **variables: str) -> dict[str, str]:
    """The jobs' environment: the cluster's Python, this checkout, and tiny parameters."""
    env = {**slurm, "HPCTHREADS_PYTHON": CLUSTER_PYTHON, "HPCTHREADS_HOME": str(ROOT)}
    env.update(variables)
    return env


def submit(env: dict, *args: str, cwd: Path) -> str:
    """`sbatch ARGS` without waiting; the job id."""
    proc = subprocess.run(
        ["sbatch", "--parsable", *args], capture_output=True, text=True, env=env, cwd=cwd, check=True
    )
    return proc.stdout.strip().split(";")[0]


def job_state(env: dict, job: str) -> dict[str, str]:
    text = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, env=env
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait_for(
    predicate: Callable[[], bool], what: str, env: dict, job: str, log: Path, timeout: float = 120
) -> None:
    """Poll `predicate` until true; fail early, with the job's log, if the job ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        state = job_state(env, job).get("JobState")
        text = log.read_text() if log.exists() else ""
        assert state not in FINISHED, f"job {job} ended ({state}) before {what}:\n{text}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{text}"
        time.sleep(0.3)


def wait_until_finished(env: dict, job: str, log: Path, timeout: float) -> str:
    """The job's final state, once it has one (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while (state := job_state(env, job).get("JobState")) not in FINISHED:
        assert time.monotonic() < deadline, f"job {job} still {state} after {timeout} s:\n" + (
            log.read_text() if log.exists() else ""
        )
        time.sleep(0.3)
    return state


def work_done(out: Path) -> int:
    """Items the ledger of a running run has finished (0 before it has any)."""
    from hpcthreads.tools.status import run_status

    try:
        return sum(job["done"] or 0 for job in run_status(out)["jobs"].values())
    except Exception:  # noqa: BLE001 - no ledger yet, or mid-snapshot
        return 0


def rank_hosts(path: Path) -> list[str]:
    """The host of every rank, as the results file records it (the run must be complete)."""
    with h5py.File(path) as f:
        assert f.attrs["state"] == "complete"
        return [h.decode() for h in f["run/ranks/host"][:]]


def world_size(path: Path) -> int:
    with h5py.File(path) as f:
        assert f.attrs["state"] == "complete"
        return int(f.attrs["ranks"])


def pids_by_rank(log_text: str) -> dict[int, tuple[int, str]]:
    """rank -> (pid, host) from the coordinator's 'rank N is pid P on HOST' lines."""
    return {
        int(rank): (int(pid), host)
        for rank, pid, host in re.findall(r"rank (\d+) is pid (\d+) on (\S+)", log_text)
    }
