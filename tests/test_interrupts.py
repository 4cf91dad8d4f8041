"""Signals at any moment: Ctrl-C during a run (its first compile included), and interrupted
`export` and `merge`.

A run stopped before any chunk was saved ends with one line and 128 + the
signal's number, and leaves no file behind that would block the next run; one
stopped later keeps its finished chunks and exits 75 (resumable). `export` and
`merge` leave, under their final names, the complete result or nothing.
"""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli, kill_run

JOB = ("verify", "--start", "1e12", "--count", "1.5e10")


def start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """`python -m hpcthreads ARGS` in a session of its own, as a shell runs a foreground command."""
    return subprocess.Popen(
        [sys.executable, "-m", "hpcthreads", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        # As at a terminal: a runner started in the background passes SIGINT on ignored
        preexec_fn=_default_signals,
    )


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def interrupt(proc: subprocess.Popen, delay: float, sig: int) -> str:
    """Signal the whole session after DELAY seconds (as Ctrl-C does); the command's stderr."""
    time.sleep(delay)
    return kill_run(proc, sig)[1]


def python_starting(proc: subprocess.Popen, stderr: str, sig: int) -> bool:
    """Whether the signal came while Python itself was starting: not hpcthreads' to handle."""
    return "init_import_site" in stderr or (proc.returncode == -sig and not stderr)


def lines_of(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("hpcthreads:")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_run_stopped_at_any_moment(tmp_path, sig):
    # An empty compile cache: the first chunks wait for Numba to compile the kernels
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    seen = set()
    # From the moment Python has started (a signal during its own start-up is Python's to report)
    for i, delay in enumerate((0.3, 0.6, 1.0, 2.0, 3.5, 6.0)):
        folder = tmp_path / f"try{i}"
        folder.mkdir()
        out = folder / "o.h5"
        proc = start(["run", *JOB, "-o", str(out), "--log-level", "warning"], folder, env)
        stderr = interrupt(proc, delay, sig)
        if python_starting(proc, stderr, sig):
            continue
        said = lines_of(stderr)
        seen.add(proc.returncode)
        if proc.returncode == 128 + sig:
            name = signal.Signals(sig).name
            assert said == [f"hpcthreads: stopped by {name}; no file was left half written"], stderr
            assert os.listdir(folder) == [], os.listdir(folder)
            # Nothing blocks the next run of the same output
            again = cli("run", "verify", "--start", "1e12", "--count", "1e6", "-o", str(out), cwd=folder)
            assert again.returncode == 0, again.stderr
        elif proc.returncode == 75:
            assert len(said) == 1 and "--resume" in said[0], stderr
            assert sorted(os.listdir(folder)) == ["o.h5.checkpoint", "o.h5.ledger", "o.h5.partial"]
        else:
            assert proc.returncode == 0, stderr  # finished before the signal came
    # Both ends were met: a stop with nothing saved, and one that saved chunks
    assert 128 + sig in seen, seen


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two halves of one range, their merge, and the merge's complete export (the references)."""
    folder = tmp_path_factory.mktemp("interrupts")
    half = 1_500_000
    parts = []
    for i in range(2):
        path = folder / f"part{i}.h5"
        where = ("--start", str(1 + i * half), "--count", str(half))
        cli("run", "collatz", *where, "--store", "per-number", "-o", str(path), check=True)
        parts.append(path)
    merged = folder / "merged.h5"
    cli("merge", str(merged), *map(str, parts), check=True)
    reference = folder / "reference"
    cli("export", str(merged), "--csv", str(reference), check=True)
    return folder, parts, merged, reference


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_export_leaves_all_tables_or_none(results, tmp_path, sig):
    _, _, merged, reference = results
    tables = sorted(os.listdir(reference))
    assert len(tables) >= 3
    outcomes = set()
    for i, delay in enumerate((0.3, 0.8, 1.5, 2.5)):
        folder = tmp_path / f"export{i}"
        proc = start(["export", str(merged), "--csv", str(folder)], tmp_path)
        stderr = interrupt(proc, delay, sig)
        names = sorted(os.listdir(folder)) if folder.exists() else []
        finals = [name for name in names if not name.startswith(".")]
        if sig != signal.SIGKILL:
            assert finals == names, f"temporary files left: {names}"
            if proc.returncode != 0:
                assert proc.returncode == 128 + sig, stderr
                assert len(lines_of(stderr)) == 1, stderr
        if finals:
            assert finals == tables, finals
            assert all(filecmp.cmp(folder / name, reference / name, shallow=False) for name in finals)
        outcomes.add(bool(finals))
    assert False in outcomes, "every export finished before the signal: the test tried nothing"


def writing(folder: Path, proc: subprocess.Popen) -> bool:
    """Wait until the command has a temporary file in FOLDER (it is writing); False if it ended first."""
    while proc.poll() is None:
        if folder.exists() and any(name.startswith(".") for name in os.listdir(folder)):
            return True
        time.sleep(0.002)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_merge_leaves_the_file_or_nothing(results, tmp_path, sig):
    _, parts, _, _ = results
    stopped = 0
    for i in range(3):
        folder = tmp_path / f"merge{i}"
        folder.mkdir()
        out = folder / "merged.h5"
        proc = start(["merge", str(out), *map(str, parts)], folder)
        # In the middle of writing the merged file, at a different moment each time
        caught = writing(folder, proc)
        stderr = interrupt(proc, 0.02 * i, sig)
        assert os.listdir(folder) in ([], ["merged.h5"]), os.listdir(folder)
        if out.exists():
            assert cli("check", str(out)).returncode == 0
        else:
            assert caught
            stopped += 1
            assert proc.returncode == 128 + sig, stderr
            assert len(lines_of(stderr)) == 1, stderr
    assert stopped, "every merge finished before the signal: the test tried nothing"
