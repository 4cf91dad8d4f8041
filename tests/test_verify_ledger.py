"""`verify` with a value unresolved for every odd start (--max-steps 1): the ledger grows with what is new."""

from __future__ import annotations

import json

import pytest
from h5compare import assert_same_results
from helpers import cli

pytestmark = pytest.mark.timeout(300)

JOB = ["verify", "--count", "2e5", "--max-steps", "1", "--chunk-seconds", "0.02", "--quiet"]
# Paced so that a commit (every 50 ms) holds a few chunks; killed after 30 chunks, before the end
FAULTS = {"HPCTHREADS_TEST_FAULTS": "slow:rate=1e5;kill:rank=0,after=30"}


def odds(start: int, end: int) -> int:
    """Odd numbers of at least 3 in [start, end)."""
    start = max(start, 3)
    return max(0, (end - start + (start & 1)) // 2)


def test_a_killed_run_left_a_ledger_linear_in_its_values_and_resumes_to_the_same_file(tmp_path):
    out, whole = tmp_path / "killed.h5", tmp_path / "whole.h5"
    # No snapshot folds the ledger before the kill: every commit since the start stays in it
    killed = cli("run", *JOB, "-o", str(out), "--checkpoint-interval", "1e6", env=FAULTS)
    assert killed.returncode == -9, killed.stderr
    lines = (tmp_path / "killed.h5.ledger").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert len(entries) >= 3, "the kill came too early to see several commits"
    # The values the lines stand for: every odd n from 3 on in the ranges they record (n = 1 + offset)
    values = sum(
        odds(1 + offset, 1 + offset + count) for entry in entries for offset, count in entry["spans"]
    )
    assert values > 50_000
    # Each value is written once (about 7 bytes); rewriting the whole set per commit is quadratic
    assert sum(map(len, lines)) < 12 * values + 4096 * len(lines)

    status = cli("status", str(out))
    assert status.returncode == 3 and "Traceback" not in status.stderr, status.stdout + status.stderr
    resumed = cli("run", *JOB, "-o", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    cli("run", *JOB, "-o", str(whole), check=True)
    assert_same_results(whole, out)
    job = json.loads(cli("inspect", str(out), "--json", check=True).stdout)["jobs"]["verify"]
    # One step takes every even n below itself; every odd n from 3 on is left unresolved
    assert job["unresolved"] == list(range(3, 200_000, 2)) and job["covered"] == 100_001
