"""Tests that run inside MPI: `mpiexec -n N python -m pytest --with-mpi tests/mpi`.

Without --with-mpi (a plain `pytest`), pytest-mpi skips them; tests/test_mpi_runs.py
launches them under mpiexec so the README's test command runs them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import reference as ref


def comm_world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def shared_tmpdir(comm) -> Path:
    """A directory made on rank 0, its path broadcast (filesystem questions go to root)."""
    path = tempfile.mkdtemp(prefix="hpcthreads-mpi-") if comm.Get_rank() == 0 else None
    return Path(comm.bcast(path, root=0))


@pytest.mark.mpi(min_size=2)
def test_a_collective_run_gives_reference_results_on_rank_0():
    from hpcthreads.config import RunConfig, make_jobs
    from hpcthreads.runtime.start import run

    comm = comm_world()
    jobs = make_jobs(
        {
            "jobs": [
                {
                    "name": "c",
                    "type": "collatz",
                    "parameters": {"start": 1, "count": 3000, "batch_size": 250},
                },
                {
                    "name": "v",
                    "type": "verify",
                    "parameters": {"start": "2**64", "count": 700, "batch_size": 60},
                },
            ]
        }
    )
    out = shared_tmpdir(comm) / "collective.h5"
    result = run(RunConfig(jobs=jobs, output=out))
    assert (result.rank, result.size) == (comm.Get_rank(), comm.Get_size())
    if result.rank == 0:
        want = ref.collatz_summary(1, 3000)
        got = result.summaries["c"]
        assert got.sum_delay == want["sum_delay"]
        assert got.delay_records == want["delay_records"]
        assert got.path_records == want["path_records"]
        glides = [(n, ref.glide(n)) for n in range(2**64, 2**64 + 700)]
        assert result.summaries["v"].glide_records == ref.range_records(glides)
    else:
        assert result.summaries == {}
    comm.Barrier()


@pytest.mark.mpi(min_size=2)
def test_every_rank_refuses_an_output_that_exists():
    from hpcthreads.config import RunConfig, make_jobs
    from hpcthreads.errors import OutputError
    from hpcthreads.runtime.start import run

    comm = comm_world()
    out = shared_tmpdir(comm) / "taken.h5"
    if comm.Get_rank() == 0:
        out.write_text("taken")
    comm.Barrier()
    jobs = make_jobs({"jobs": [{"type": "collatz", "parameters": {"count": 10}}]})
    with pytest.raises(OutputError, match="exists"):
        run(RunConfig(jobs=jobs, output=out))
    comm.Barrier()
