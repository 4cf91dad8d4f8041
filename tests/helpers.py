"""Running the installed command line the way a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env)


def rank_table(path: Path) -> dict:
    """The per-rank accounting of a results file: column -> list, rows ordered by rank."""
    import h5py

    with h5py.File(path, "r") as f:
        return {key: f["run/ranks"][key][()].tolist() for key in f["run/ranks"]}
