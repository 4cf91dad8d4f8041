"""Running the installed command line the way a user does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def cli(
    *args: str, timeout: float = 300, env: dict | None = None, check: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m hpcthreads ARGS` in a subprocess; returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    command = [sys.executable, "-m", "hpcthreads", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"hpcthreads {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def inspect_json(path: Path) -> dict:
    return json.loads(cli("inspect", str(path), "--json", check=True).stdout)


def mpiexec() -> str:
    """The mpiexec beside this Python (the PyPI MPI runtime), else the one on PATH."""
    local = BIN / "mpiexec"
    return str(local) if local.exists() else "mpiexec"


def mpirun(n: int, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`mpiexec -n N python -m hpcthreads ARGS`, oversubscribing as needed."""
    full_env = {
        **os.environ,
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        **(env or {}),
    }
    command = [mpiexec(), "-n", str(n), sys.executable, "-m", "hpcthreads", *args]
    return run_session(command, timeout=timeout, env=full_env)


def run_session(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run` in a session of its own: on a timeout every rank is killed, not only mpiexec.

    A rank left behind would load the machine for the rest of the tests.
    """
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_run(proc, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def rank_table(path: Path) -> dict:
    """The per-rank accounting of a results file: column -> list, rows ordered by rank."""
    import h5py

    with h5py.File(path, "r") as f:
        return {key: f["run/ranks"][key][()].tolist() for key in f["run/ranks"]}


def wait_for_progress(out, fraction: float, proc: subprocess.Popen) -> None:
    """Return once the run's ledger holds `fraction` of all work (0: once the file exists)."""
    from hpcthreads.tools.status import run_status

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if fraction == 0 and out.with_name(out.name + ".partial").exists():
            return
        try:
            jobs = run_status(out)["jobs"].values()
        except Exception:  # noqa: BLE001 - not started yet, or mid-snapshot
            jobs = []
        if jobs and sum(j["done"] or 0 for j in jobs) >= fraction * sum(j["total"] for j in jobs) > 0:
            return
        time.sleep(0.05)


def _live_members(group: int) -> list[int]:
    """Pids of the processes of a process group that are still running (zombies excluded)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def kill_run(proc: subprocess.Popen, sig: int, timeout: float = 60) -> tuple[str, str]:
    """Signal every process of a run started in its own session; wait for all of them to end.

    Returns the run's (stdout, stderr).
    Waiting for the launcher alone is not enough after SIGKILL: a rank may
    still hold the results file's lock for a moment.
    """
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # the run ended on its own; the caller finds out from the files
    output = proc.communicate(timeout=timeout)
    deadline = time.monotonic() + timeout
    while _live_members(proc.pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {_live_members(proc.pid)} outlived the run's launcher")
        time.sleep(0.05)
    return output


def write_job_file(factory, folder: str, text: str) -> Path:
    """A job file with `text` in a new temporary folder (for module-scoped fixtures)."""
    path = factory.mktemp(folder) / "jobs.yaml"
    path.write_text(text)
    return path
