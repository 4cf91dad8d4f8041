"""Starting a run: MPI, logging, the output file, then the coordinator or a worker.

Rank 0 coordinates and writes; ranks 1..N-1 compute. With one rank (no
launcher, or `mpiexec -n 1`) the coordinator computes each chunk itself.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hpcthreads import __version__, devices
from hpcthreads.config import Job, RunConfig
from hpcthreads.coordinator import Coordinator
from hpcthreads.errors import HPCThreadsError, JobFailedError
from hpcthreads.io import schema
from hpcthreads.io.writer import H5Writer, check_output_path
from hpcthreads.mpiutil import abort_on_exception, init_mpi, setup_logging
from hpcthreads.testing import Faults
from hpcthreads.worker import ChunkRunner, Worker, hello_for
from hpcthreads.workloads import make_workload

log = logging.getLogger("hpcthreads")

# Largest number of path values one thread chunk holds in memory
MAX_CHUNK_VALUES = 1 << 21
# Exit status of a run stopped early by a signal, its finished chunks saved
EXIT_INTERRUPTED = 75


class InterruptedRun(HPCThreadsError):
    exit_code = EXIT_INTERRUPTED


@dataclass
class RunResult:
    rank: int = 0
    size: int = 1
    summaries: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0


def chunk_limit(job: Job) -> int:
    """Most items per chunk: a memory bound for thread paths, none otherwise."""
    if job.type == "thread":
        return max(1, MAX_CHUNK_VALUES // (job.params["max_depth"] + 1))
    return 1 << 62


def run_attrs(config: RunConfig, backend_name: str, size: int) -> dict[str, Any]:
    return {
        "job_file": config.source,
        "config": schema.to_json({"jobs": [job.to_dict() for job in config.jobs]}),
        "backend": backend_name,
        "ranks": size,
        "python": sys.version.split()[0],
        "hpcthreads_version": __version__,
    }


def run(config: RunConfig) -> RunResult:
    """Run every job of `config` on this rank's side of the run."""
    # The device is chosen before MPI and CUDA start, from launcher variables where they exist
    policy = devices.parse_policy(config.device)
    early = devices.plan(policy, os.environ, devices.count_physical())
    comm = init_mpi()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    setup_logging(rank, size, config.log_level, config.log_file)
    abort_on_exception(comm)
    _agree_on_output(comm, rank, config)
    choice = devices.settle(early, policy, comm, os.environ)
    devices.bind(choice)
    workloads = [make_workload(job) for job in config.jobs]
    faults = Faults.from_env()
    if rank != 0:
        backend = devices.rank_backend(config.backend, choice, log)
        Worker(comm, ChunkRunner(workloads, backend, rank, faults), hello_for(rank, backend)).serve()
        return RunResult(rank, size)
    return _coordinate(comm, size, config, workloads, faults, choice)


def _agree_on_output(comm: Any, rank: int, config: RunConfig) -> None:
    """The output path is checked on rank 0 and the verdict shared, so all ranks stop alike."""
    error = None
    if rank == 0:
        try:
            check_output_path(config.output, config.force)
        except HPCThreadsError as exc:
            error = exc
    if comm is not None and comm.Get_size() > 1:
        error = comm.bcast(error, root=0)
    if error is not None:
        raise error


def _coordinate(
    comm: Any, size: int, config: RunConfig, workloads: list, faults: Faults, choice: devices.DeviceChoice
) -> RunResult:
    backend = devices.rank_backend(config.backend, choice, log) if size == 1 else None
    local = ChunkRunner(workloads, backend, 0, faults) if backend is not None else None
    backend_name = local.backend.name if local else config.backend
    writer = H5Writer(config.output, run_attrs(config, backend_name, size))
    t0 = time.perf_counter()
    try:
        for workload in workloads:
            writer.begin_job(workload.job, workload)
        coordinator = Coordinator(
            comm, workloads, writer, local, config.heartbeat_timeout, [chunk_limit(w.job) for w in workloads]
        )
        outcome = coordinator.run()
        writer.write_accounting(outcome.ranks, outcome.chunks)
    except BaseException as exc:
        writer.close(schema.STATE_FAILED)
        if size > 1:
            log.error("run failed on the coordinator: %s; aborting all ranks", exc)
            comm.Abort(1)
        raise
    state = (
        schema.STATE_INTERRUPTED
        if outcome.interrupted
        else (schema.STATE_FAILED if outcome.failed else schema.STATE_COMPLETE)
    )
    backends = sorted({r["backend"] for r in outcome.ranks.values() if r.get("backend")})
    writer.close(state, {"backend": ",".join(backends)})
    result = RunResult(
        0, size, {workloads[i].job.name: s for i, s in outcome.summaries.items()}, time.perf_counter() - t0
    )
    if outcome.failed:
        lines = [f"job {workloads[i].job.name!r} failed: {msg}" for i, msg in outcome.failed.items()]
        raise JobFailedError("; ".join(lines) + f" (other jobs completed; results in {config.output})")
    if outcome.interrupted:
        raise InterruptedRun(f"stopped by {outcome.interrupted}; finished chunks are in {config.output}")
    return result
