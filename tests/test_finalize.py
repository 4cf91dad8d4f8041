"""MPI_Finalize on MPICH 4.0's UCX netmod over TCP returns (hpcthreads/runtime/finalize.py).

On one machine, MPIR_CVAR_NOLOCAL=1 with UCX_TLS=tcp,self makes MPICH send between ranks
through UCX's TCP transport, as between the nodes of the test cluster. A rank that only
received, and so has nothing to flush, finishes its endpoint closes at once and waits in
MPICH's PMI barrier; rank 0, finalizing a second later, then waits forever for the
acknowledgement of the flush it sends that rank (4 runs in 5 hung without the fix). Needs the
parallel-HDF5 environment's Python and mpiexec (as tests/test_parallel_io.py).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from test_parallel_io import MPIEXEC, PYTHON, parallel  # noqa: F401 - the fixture

from hpcthreads.runtime.finalize import GUARD_FIRED

pytestmark = pytest.mark.timeout(120)

ONE_WAY = """
import time
from mpi4py import MPI
from hpcthreads.runtime.finalize import finalize_can_hang, guard_finalize, skip_endpoint_closes

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
if rank == 0:
    for peer in range(1, size):
        comm.send("stop", dest=peer, tag=1)
    time.sleep(1)
else:
    comm.recv(source=0, tag=1)
guard_finalize(rank, size, 20)
if finalize_can_hang(MPI.Get_library_version()):
    assert skip_endpoint_closes() is None
"""


@pytest.mark.parametrize("attempt", [1, 2])
def test_ranks_finalize_over_ucx_tcp_when_rank_0_is_last_to_leave(parallel, tmp_path, attempt):  # noqa: F811
    script = tmp_path / "one_way.py"
    script.write_text(ONE_WAY)
    env = {**os.environ, "MPIR_CVAR_NOLOCAL": "1", "UCX_TLS": "tcp,self"}
    t0 = time.monotonic()
    command = [MPIEXEC, "-n", "3", PYTHON, str(script)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=90, env=env)
    assert proc.returncode == 0, proc.stderr
    assert GUARD_FIRED not in proc.stderr, proc.stderr
    assert time.monotonic() - t0 < 20, proc.stderr
