"""Coordinator dispatch rate: empty chunks through hpcthreads vs mpi4py.futures.

Run under MPI with at least 2 ranks, for example::

    .venv/bin/mpiexec -n 4 .venv/bin/python benchmarks/bench_dispatch.py --tasks 20000

Both sides dispatch the same number of no-op tasks, one item each, to the same
workers in the same run: first hpcthreads' coordinator and workers (the real
loops, with a no-op workload and no output file), then
`mpi4py.futures.MPICommExecutor.map` with chunksize 1. Rank 0 prints tasks per
second of each and their ratio.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from hpcthreads.backends.base import BaseBackend
from hpcthreads.config import Job
from hpcthreads.runtime.coordinator import Coordinator
from hpcthreads.runtime.faults import Faults
from hpcthreads.runtime.mpiutil import MPITransport
from hpcthreads.runtime.worker import ChunkRunner, Worker, hello_for
from hpcthreads.workloads.base import BaseWorkload, ChunkOutput


class NoopBackend(BaseBackend):
    name = "noop"

    def warm_up(self, types: Any = ()) -> None:
        pass


class NoopWorkload(BaseWorkload):
    type = "noop"

    def empty(self) -> None:
        return None

    def compute(self, backend: BaseBackend, offset: int, count: int) -> ChunkOutput:
        return ChunkOutput(offset, count, None)

    def merge(self, a: Any, b: Any) -> None:
        return None


class NullWriter:
    writes_on_workers = False

    def write_chunk(self, job: int, out: ChunkOutput) -> None:
        pass

    def end_job(self, job: Job, summary: Any, wall: float) -> None:
        pass

    def fail_job(self, job: Job, message: str) -> None:
        pass


def noop(item: int) -> int:
    return item


def hpcthreads_rate(comm: Any, tasks: int) -> float | None:
    job = Job(name="noop", type="noop", params={"start": 1, "count": tasks, "batch_size": 1})
    workloads = [NoopWorkload(job)]
    comm.Barrier()
    if comm.Get_rank() != 0:
        backend = NoopBackend()
        Worker(
            comm, ChunkRunner(workloads, backend, comm.Get_rank(), Faults()), hello_for(0, backend)
        ).serve()
        return None
    t0 = time.perf_counter()
    children = list(range(1, comm.Get_size()))
    outcome = Coordinator(
        MPITransport(comm), workloads, NullWriter(), None, max_chunks=[1], children=children
    ).run()
    elapsed = time.perf_counter() - t0
    assert sum(c.count for c in outcome.chunks) == tasks, "not every task was dispatched"
    return tasks / elapsed


def futures_rate(comm: Any, tasks: int) -> float | None:
    from mpi4py.futures import MPICommExecutor

    comm.Barrier()
    t0 = time.perf_counter()
    with MPICommExecutor(comm, root=0) as executor:
        if executor is None:
            return None
        done = sum(1 for _ in executor.map(noop, range(tasks), chunksize=1))
    assert done == tasks
    return tasks / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20000)
    args = parser.parse_args()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        raise SystemExit("run under mpiexec with at least 2 ranks")
    ours = hpcthreads_rate(comm, args.tasks)
    theirs = futures_rate(comm, args.tasks)
    if comm.Get_rank() == 0:
        print(f"ranks {comm.Get_size()} ({comm.Get_size() - 1} workers), {args.tasks} empty tasks")
        print(f"hpcthreads coordinator   {ours:12,.0f} tasks/s")
        print(f"mpi4py MPICommExecutor   {theirs:12,.0f} tasks/s")
        print(f"ratio hpcthreads/futures {ours / theirs:12.2f}")


if __name__ == "__main__":
    main()
