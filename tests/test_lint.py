"""The code passes its own linters: ruff (lint and format) and, where installed, shellcheck."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from helpers import ROOT

PYTHON_TREES = ["hpcthreads", "tests", "benchmarks"]


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *PYTHON_TREES], cwd=ROOT, capture_output=True, text=True
    )


def test_ruff_lint_is_clean():
    pytest.importorskip("ruff")
    proc = ruff("check")
    assert proc.returncode == 0, proc.stdout


def test_ruff_format_is_clean():
    pytest.importorskip("ruff")
    proc = ruff("format", "--check")
    assert proc.returncode == 0, proc.stdout


def test_shell_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    scripts = sorted(str(p) for p in ROOT.glob("**/*.sh") if ".venv" not in p.parts) + [
        str(ROOT / ".ci" / "run")
    ]
    proc = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
