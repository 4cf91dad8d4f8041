"""Parallel HDF5 (mpio) against gather mode: identical files, and resume after a kill.

These tests need a Python whose h5py has MPI, and that MPI's mpiexec:
HPCTHREADS_MPIO_PYTHON and HPCTHREADS_MPIO_MPIEXEC, by default `.venv-mpio/bin/python`
(built by scripts/install-parallel-h5py.sh) and `mpiexec.mpich`. Without them
they skip; CI sets HPCTHREADS_REQUIRE_MPIO=1, which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
from h5compare import assert_same_results
from helpers import ROOT, cli, kill_run, wait_for_progress, write_job_file

pytestmark = pytest.mark.timeout(300)

PYTHON = os.environ.get("HPCTHREADS_MPIO_PYTHON", str(ROOT / ".venv-mpio" / "bin" / "python"))
MPIEXEC = os.environ.get("HPCTHREADS_MPIO_MPIEXEC", "mpiexec.mpich")

JOBS = """
jobs:
  - {name: numbers, type: collatz, parameters: {start: '2**64 - 5000', count: 60000, batch_size: 4000,
     store: per-number}}
  - {name: small, type: collatz, parameters: {start: 1, count: 200000, batch_size: 9000, store: per-number}}
  - {name: check, type: verify, parameters: {start: '2**40', count: 300000, batch_size: 20000}}
  - {name: tree, type: thread, parameters: {thread_count: 5000, max_depth: 50, batch_size: 300}}
  - {name: wide, type: thread, parameters: {start: '48503373501652785085', thread_count: 4, max_depth: 500}}
"""


def _parallel_ready() -> str | None:
    """Why the parallel path cannot run here, or None."""
    if not os.path.exists(PYTHON):
        return f"no Python with parallel h5py at {PYTHON} (build it with scripts/install-parallel-h5py.sh)"
    if shutil.which(MPIEXEC) is None:
        return f"{MPIEXEC} not found"
    probe = subprocess.run([PYTHON, "-c", "import h5py; assert h5py.get_config().mpi"], capture_output=True)
    return None if probe.returncode == 0 else f"h5py at {PYTHON} has no MPI"


@pytest.fixture(scope="module")
def parallel():
    reason = _parallel_ready()
    if reason is not None:
        if os.environ.get("HPCTHREADS_REQUIRE_MPIO") == "1":
            pytest.fail(f"HPCTHREADS_REQUIRE_MPIO=1 but {reason}")
        pytest.skip(reason)


def prun(ranks: int, *args: str, **kwargs) -> subprocess.Popen:
    command = [MPIEXEC, "-n", str(ranks), PYTHON, "-m", "hpcthreads", *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )


def finish(proc: subprocess.Popen) -> str:
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    return stderr


@pytest.fixture(scope="module")
def job_file(tmp_path_factory):
    return write_job_file(tmp_path_factory, "pio", JOBS)


@pytest.fixture(scope="module")
def serial(job_file):
    out = job_file.parent / "serial.h5"
    cli("run", str(job_file), "-o", str(out), check=True)
    return out


@pytest.mark.parametrize("ranks", [1, 2, 4])
@pytest.mark.parametrize("io", ["mpio", "gather"])
def test_mpio_and_gather_write_identical_content(parallel, job_file, serial, tmp_path, ranks, io):
    out = tmp_path / f"{io}{ranks}.h5"
    finish(prun(ranks, "run", str(job_file), "-o", str(out), "--io", io))
    assert_same_results(serial, out)
    if shutil.which("h5diff"):
        diff = subprocess.run(
            ["h5diff", str(serial), str(out), "/jobs", "/jobs"], capture_output=True, text=True
        )
        assert diff.returncode == 0, diff.stdout
    import h5py

    with h5py.File(out) as f:
        assert f.attrs["io"] == io and f.attrs["ranks"] == ranks


def test_mpio_run_killed_mid_write_resumes_to_identical_results(parallel, job_file, serial, tmp_path):
    out = tmp_path / "killed.h5"
    args = ["run", str(job_file), "-o", str(out), "--io", "mpio", "--checkpoint-interval", "0.3"]
    proc = prun(3, *args, env={**os.environ, "HPCTHREADS_TEST_FAULTS": "slow:factor=4"})
    wait_for_progress(out, 0.5, proc)
    kill_run(proc, signal.SIGKILL)
    finish(prun(4, *args, "--resume"))
    assert_same_results(serial, out)


def test_mpio_is_refused_where_h5py_has_no_mpi(tmp_path):
    import h5py

    if h5py.get_config().mpi:
        pytest.skip("this test's own h5py has MPI")
    proc = cli("run", "collatz", "--count", "10", "-o", str(tmp_path / "x.h5"), "--io", "mpio")
    assert proc.returncode == 2 and "built without MPI" in proc.stderr
    assert not list(tmp_path.iterdir())
