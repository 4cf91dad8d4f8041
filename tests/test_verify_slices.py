"""Verify jobs cut by residue, as a user runs them: several ranks, kill and resume, inspect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import reference as ref
from helpers import cli, inspect_json, kill_run, mpiexec, mpirun, wait_for_progress, write_job_file

pytestmark = pytest.mark.timeout(300)

START = 2**64 - 60000
COUNT = 120000
JOBS = f"""
jobs:
  - {{name: v, type: verify, parameters: {{start: {START}, count: {COUNT}, batch_size: 7000,
     sieve_slice_bits: 12, verified_below: 1, max_steps: 300}}}}
"""


@pytest.fixture(scope="module")
def job_file(tmp_path_factory):
    return write_job_file(tmp_path_factory, "slices", JOBS)


@pytest.fixture(scope="module")
def one_rank(job_file):
    out = job_file.parent / "one.h5"
    cli("run", str(job_file), "-o", str(out), check=True)
    return inspect_json(out)["jobs"]["v"]


def test_a_sliced_job_gives_the_brute_force_results_on_one_and_three_ranks(job_file, one_rank, tmp_path):
    glides = [(n, ref.glide(n)) for n in range(START, START + COUNT)]
    # verified_below 1: the 3^2 sieve only skips values whose predecessor is in the range
    want = ref.range_records([g for g in glides if g[1] <= 300])
    assert one_rank["glide_records"] == [list(p) for p in want]
    assert one_rank["unresolved"] == [n for n, g in glides if g > 300]
    assert one_rank["count"] == COUNT and one_rank["sieve_slice_bits"] == 12
    assert one_rank["verified_below"] == 1
    out = tmp_path / "three.h5"
    proc = mpirun(3, "run", str(job_file), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    three = inspect_json(out)["jobs"]["v"]
    for key in ("glide_records", "unresolved", "walked", "covered", "max_glide"):
        assert three[key] == one_rank[key], key
    assert "cut by residue mod 2^12" in cli("inspect", str(out), check=True).stdout


def test_a_killed_sliced_run_resumes_identically_and_refuses_another_cut(job_file, one_rank, tmp_path):
    out = tmp_path / "killed.h5"
    args = ["run", str(job_file), "-o", str(out), "--checkpoint-interval", "0.3"]
    env = {**os.environ, "HPCTHREADS_TEST_FAULTS": "slow:rate=3e4"}
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "hpcthreads", *args]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env
    )
    wait_for_progress(out, 0.4, proc)
    kill_run(proc, signal.SIGKILL)
    assert out.with_name(out.name + ".partial").exists() and not out.exists()
    # Another K would give the same items other integers: refused, files left as they are
    other = job_file.parent / "other.yaml"
    other.write_text(job_file.read_text().replace("sieve_slice_bits: 12", "sieve_slice_bits: 11"))
    refused = cli("run", str(other), "-o", str(out), "--resume")
    assert refused.returncode == 2 and "different job file" in refused.stderr
    assert "Traceback" not in refused.stderr
    cli("run", str(job_file), "-o", str(out), "--resume", check=True)
    resumed = inspect_json(out)["jobs"]["v"]
    for key in ("glide_records", "unresolved", "walked", "covered", "count"):
        assert resumed[key] == one_rank[key], key
    assert cli("check", str(out)).returncode == 0
