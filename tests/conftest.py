import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHM = Path("/dev/shm")


@pytest.fixture(autouse=True)
def no_leaked_mpi_shared_memory():
    """Remove the MPICH shared-memory segments that a test's killed ranks could not unlink.

    Tests kill MPI runs with SIGKILL on purpose; their segments (a few MB each,
    in memory) would otherwise stay until the machine restarts. Every process
    a test starts has ended when it returns, so new segments are garbage.
    """
    before = set(SHM.glob("mpich_shm_*")) if SHM.is_dir() else set()
    yield
    if SHM.is_dir():
        for leftover in set(SHM.glob("mpich_shm_*")) - before:
            leftover.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def cpu():
    """The numba-cpu backend: the reference the GPU backends' results are compared with."""
    from hpcthreads.backends import make_backend

    return make_backend("numba-cpu")
