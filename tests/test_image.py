"""The container image (containers/Dockerfile, built by .ci/image-build.sh), run with podman.

Inside the image: `hpcthreads info`, parallel h5py and mpi4py on the image's MPICH, and a job file
with every job type under `mpiexec -n 3`, whose results must equal a one-rank run on the host, for
both writers (gather, and mpio through the image's parallel HDF5).

The image is HPCTHREADS_IMAGE (default localhost/hpcthreads:ci). Skipped without podman or the
image; with HPCTHREADS_REQUIRE_IMAGE=1 (as in CI) that is a failure.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import h5py.defs
import pytest
from h5compare import assert_same_results
from helpers import cli

from hpcthreads import __version__

pytestmark = pytest.mark.timeout(300)

IMAGE = os.environ.get("HPCTHREADS_IMAGE", "localhost/hpcthreads:ci")
# Where a test's folder appears in the container
DATA = "/data"

JOBS = """
jobs:
  - {name: numbers, type: collatz, parameters: {start: '2**64 - 5000', count: 30000, batch_size: 3000,
     store: per-number}}
  - {name: small, type: collatz, parameters: {start: 1, count: 100000, batch_size: 9000, store: per-number}}
  - {name: check, type: verify, parameters: {start: '2**40', count: 200000, batch_size: 20000}}
  - {name: tree, type: thread, parameters: {thread_count: 2000, max_depth: 50, batch_size: 300}}
"""

# Run under mpiexec in the image: every rank writes its own element of one dataset through the
# mpio driver; rank 0 reads it back and reports, with what the extension modules link against
PROBE = r"""
import json, subprocess
import h5py
import h5py.defs
from mpi4py import MPI

comm = MPI.COMM_WORLD
with h5py.File("/tmp/probe.h5", "w", driver="mpio", comm=comm) as f:
    ranks = f.create_dataset("ranks", (comm.size,), dtype="i8")
    ranks[comm.rank] = comm.rank
if comm.rank == 0:
    with h5py.File("/tmp/probe.h5", "r") as f:
        written = f["ranks"][()].tolist()
    ldd = lambda module: subprocess.run(["ldd", module.__file__], capture_output=True, text=True).stdout
    print(json.dumps({
        "mpi": h5py.get_config().mpi, "size": comm.size, "written": written,
        "library": MPI.Get_library_version(),
        "mpi4py_links": ldd(MPI), "h5py_links": ldd(h5py.defs),
    }))
"""

_names = itertools.count()


def image_problem() -> str | None:
    """Why the image cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/image-build.sh installs it and builds the image)"
    proc = subprocess.run(["podman", "image", "exists", IMAGE], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return f"no image {IMAGE} ({proc.stderr.strip() or 'build it with .ci/image-build.sh'})"
    return None


@pytest.fixture(scope="module")
def image():
    problem = image_problem()
    if problem:
        if os.environ.get("HPCTHREADS_REQUIRE_IMAGE") == "1":
            pytest.fail(f"HPCTHREADS_REQUIRE_IMAGE=1 but {problem}")
        pytest.skip(problem)
    return IMAGE


def in_image(image: str, *command: str, folder: Path | None = None, timeout: float = 180):
    """Run COMMAND in a fresh container of the image, as its user (uid 1000), without a network.

    FOLDER is mounted at /data. On a timeout the container is removed, not only the podman client.
    """
    name = f"hpcthreads-test-{os.getpid()}-{next(_names)}"
    args = ["podman", "run", "--rm", "--name", name, "--network", "none"]
    if folder is not None:
        args += ["--volume", f"{folder}:{DATA}"]
    try:
        return subprocess.run([*args, image, *command], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, timeout=60)
        raise


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """A folder the image's user may write to, holding the job file."""
    folder = tmp_path_factory.mktemp("image")
    folder.chmod(0o777)  # the container's uid 1000 writes results here; the bind mount skips the parents
    (folder / "jobs.yaml").write_text(JOBS)
    return folder


@pytest.fixture(scope="module")
def host_run(shared) -> Path:
    """The reference: one rank on the host, this checkout's Python."""
    out = shared / "host.h5"
    cli("run", str(shared / "jobs.yaml"), "-o", str(out), "--io", "gather", check=True)
    return out


def test_info_in_the_image(image):
    proc = in_image(image, "hpcthreads", "info", timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["hpcthreads", __version__]
    fields = {line.split()[0]: line.split(None, 1)[1] for line in lines if line.strip() and line[0] != " "}
    assert fields["h5py"].endswith("with MPI (parallel mpio driver)"), fields["h5py"]
    assert "MPICH" in fields["mpi"], fields["mpi"]
    assert "backend    numba-cpu: available" in lines


def test_the_image_carries_its_compiled_kernels(image):
    # The build ran `hpcthreads info --warm-up`: another warm-up compiles and writes nothing
    script = "touch /tmp/t && sleep 1 && hpcthreads info --warm-up && find ~/.cache/hpcthreads -newer /tmp/t"
    proc = in_image(image, "bash", "-c", script, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _, found, written = proc.stdout.partition("kernels compiled into")
    assert found, proc.stdout
    assert written.strip().splitlines()[1:] == [], "the warm-up wrote to the cache again"


def test_parallel_h5py_and_mpi4py_share_the_image_mpi(image):
    proc = in_image(image, "mpiexec", "-n", "3", "python", "-c", PROBE, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["mpi"] is True and report["size"] == 3
    assert report["written"] == [0, 1, 2]  # three ranks wrote one file through the mpio driver
    assert "MPICH" in report["library"]

    def resolved(links: str, library: str) -> str:
        found = [line.split("=>")[1].split()[0] for line in links.splitlines() if library in line]
        assert found and "not found" not in links, links
        return found[0]

    mpi = resolved(report["mpi4py_links"], "libmpich")
    assert resolved(report["h5py_links"], "libmpich") == mpi  # one MPI for both
    assert "mpich" in resolved(report["h5py_links"], "libhdf5")  # HDF5's MPICH build


@pytest.mark.parametrize("io", ["gather", "mpio"])
def test_three_ranks_in_the_image_match_one_rank_on_the_host(image, shared, host_run, io):
    name = f"image-{io}.h5"
    proc = in_image(
        image,
        *["mpiexec", "-n", "3", "hpcthreads", "run", f"{DATA}/jobs.yaml", "-o", f"{DATA}/{name}"],
        *["--io", io, "--force"],
        folder=shared,
    )
    assert proc.returncode == 0, proc.stderr
    out = shared / name
    with h5py.File(out, "r") as f:
        assert f.attrs["state"] == "complete"
        assert f.attrs["ranks"] == 3 and f.attrs["io"] == io
    assert_same_results(out, host_run)
    assert cli("check", str(out)).returncode == 0
