"""Load balance with one slow worker: hpcthreads vs the ideal and vs a static equal split.

Run under MPI, for example (rank 0 coordinates, ranks 1.. compute)::

    .venv/bin/mpiexec -n 3 .venv/bin/python benchmarks/bench_balance.py --count 4e6 --factor 4

Rank 1 is slowed `--factor` times (the HPCTHREADS_TEST_FAULTS testing knob).
In one run the script measures:

- the makespan of a real hpcthreads run of a collatz job at offset 2^40
  (first chunk start to last chunk end, from the file's chunk timeline);
- the ideal makespan, total work / total speed, each worker's speed being its
  items per busy second in that run;
- the makespan of a static equal split of the same range over the same
  workers (each computes its share with the same code, no coordinator).

Rank 0 prints the three and the ratios ideal/hpcthreads (efficiency, 1.0 is
perfect) and static/hpcthreads (speed-up over the static split).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

OFFSET = 2**40


def hpcthreads_run(comm: Any, count: int, batch: int, out: Path) -> dict[str, float] | None:
    from hpcthreads.config import RunConfig, make_jobs
    from hpcthreads.runtime.start import run

    params = {"start": OFFSET, "count": count, "batch_size": batch}
    jobs = make_jobs({"jobs": [{"name": "balance", "type": "collatz", "parameters": params}]})
    run(RunConfig(jobs=jobs, output=out, force=True, log_level="WARNING"))
    if comm.Get_rank() != 0:
        return None
    import h5py

    with h5py.File(out, "r") as f:
        chunks, ranks = f["run/chunks"], f["run/ranks"]
        makespan = float(chunks["ended"][()].max() - chunks["started"][()].min())
        items, busy = ranks["items"][()][1:], ranks["busy"][()][1:]
    speeds = items / busy
    return {"makespan": makespan, "ideal": count / float(speeds.sum())}


def static_split(comm: Any, count: int) -> float | None:
    from hpcthreads.backends import make_backend
    from hpcthreads.config import make_job
    from hpcthreads.runtime.faults import Faults
    from hpcthreads.runtime.protocol import Task
    from hpcthreads.runtime.worker import ChunkRunner
    from hpcthreads.workloads import make_workload

    rank, workers = comm.Get_rank(), comm.Get_size() - 1
    elapsed = 0.0
    if rank > 0:
        job = make_job({"name": "s", "type": "collatz", "parameters": {"start": OFFSET, "count": count}}, 0)
        runner = ChunkRunner([make_workload(job)], make_backend("numba-cpu"), rank, Faults.from_env())
        share = count // workers
        first = (rank - 1) * share
        last = count if rank == workers else first + share
    comm.Barrier()
    if rank > 0:
        t0 = time.perf_counter()
        runner.run(Task(0, 0, first, last - first))
        elapsed = time.perf_counter() - t0
    times = comm.gather(elapsed, root=0)
    return max(times) if rank == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=float, default=4e6)
    parser.add_argument("--batch-size", type=float, default=2e5)
    parser.add_argument("--factor", type=float, default=4.0)
    args = parser.parse_args()
    os.environ["HPCTHREADS_TEST_FAULTS"] = f"slow:rank=1,factor={args.factor}"
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() < 3:
        raise SystemExit("run under mpiexec with at least 3 ranks (a coordinator and two workers)")
    count = int(args.count)
    folder = comm.bcast(tempfile.mkdtemp(prefix="hpcthreads-bench-") if comm.Get_rank() == 0 else None)
    ours = hpcthreads_run(comm, count, int(args.batch_size), Path(folder) / "balance.h5")
    static = static_split(comm, count)
    if comm.Get_rank() == 0:
        print(f"{comm.Get_size() - 1} workers, rank 1 slowed {args.factor:g}x, {count:,} numbers at 2^40")
        print(f"makespan hpcthreads   {ours['makespan']:8.3f} s")
        print(f"makespan ideal        {ours['ideal']:8.3f} s   (total work / total speed)")
        print(f"makespan static split {static:8.3f} s")
        print(f"efficiency ideal/hpcthreads   {ours['ideal'] / ours['makespan']:6.3f}")
        print(f"speed-up static/hpcthreads    {static / ours['makespan']:6.3f}")


if __name__ == "__main__":
    main()
