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
    *args: str, timeout: float = 300, env: dict | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """Run `python -m hpcthreads ARGS` in a subprocess; returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "hpcthreads", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hpcthreads {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def inspect_json(path: Path) -> dict:
    return json.loads(cli("inspect", str(path), "--json", check=True).stdout)
