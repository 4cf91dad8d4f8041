"""Starting a run: MPI, logging, the plan for the output, then the coordinator or a worker.

Rank 0 coordinates; ranks 1..N-1 compute. With one rank (no launcher, or
`mpiexec -n 1`) the coordinator computes each chunk itself. A run writes
`OUT.partial` with its ledger beside it (see ledger.py) and renames it to
`OUT` when no work is left; a stopped run keeps them for `--resume`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcthreads import __version__
from hpcthreads.backends.simulated import SIMULATED_NOTE
from hpcthreads.config import Job, RunConfig
from hpcthreads.errors import HPCThreadsError, Interrupted, JobFailedError, OutputError, message_of
from hpcthreads.io import schema
from hpcthreads.io.paths import check_output_path, replace_output
from hpcthreads.io.space import (
    RESERVE_PER_JOB,
    DiskFullError,
    Reserve,
    allocate_file,
    check_room,
    folder_of,
    full_error,
    is_disk_full,
    reserve_path,
    reserve_size,
)
from hpcthreads.runtime import devices, ledger, topology
from hpcthreads.runtime.coordinator import Coordinator, Outcome
from hpcthreads.runtime.dispatch import TIMELINE_LIMIT, WorkerLostError
from hpcthreads.runtime.faults import Faults
from hpcthreads.runtime.monitor import Metrics, Monitor, Progress
from hpcthreads.runtime.mpiutil import (
    MPITransport,
    abort_on_exception,
    abort_world,
    init_mpi,
    rank0_answer,
    setup_logging,
)
from hpcthreads.runtime.outputlock import OutputLock
from hpcthreads.runtime.pacing import (
    GROUP_TARGET_SECONDS,
    TARGET_SECONDS,
    batch_seconds,
    heartbeat_seconds,
    target_seconds,
)
from hpcthreads.runtime.planning import Plan, make_plan
from hpcthreads.runtime.subcoordinator import SubCoordinator
from hpcthreads.runtime.worker import ChunkRunner, Worker, hello_for
from hpcthreads.workloads import make_workload
from hpcthreads.workloads.base import to_plain

log = logging.getLogger("hpcthreads")

# Largest number of path values one thread chunk holds in memory
MAX_CHUNK_VALUES = 1 << 21
# Exit status of a run stopped by a signal with its finished chunks saved: resume it
EXIT_INTERRUPTED = 75
# What a run that stopped for want of space before it saved any work tells its user
AGAIN_HINT = "nothing was saved: make room, then run the same command again"
# Seconds more a coordinator waits at start-up per level of sub-coordinators below it
STARTUP_MARGIN_SECONDS = 10.0


class InterruptedRun(HPCThreadsError):
    exit_code = EXIT_INTERRUPTED


@dataclass
class RunResult:
    rank: int = 0
    size: int = 1
    summaries: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    message: str = ""


def chunk_limit(job: Job) -> int:
    """Most items per chunk: a memory bound for thread paths, none otherwise."""
    if job.type == "thread":
        return max(1, MAX_CHUNK_VALUES // (job.params["max_depth"] + 1))
    return 1 << 62


def run(config: RunConfig, stop: Callable[[], str | None] | None = None) -> RunResult:
    """Run every job of `config` on this rank's side of the run.

    `stop` (rank 0) is asked while the run goes: a reason it returns stops the
    run as a signal would, finished chunks saved (a campaign's lost lease).
    """
    # The device is chosen before MPI and CUDA start, from launcher variables where they exist
    policy = devices.parse_policy(config.device)
    early = devices.plan(policy, os.environ, devices.count_physical())
    levels = topology.parse_groups(config.groups)
    faults = Faults.from_env()
    comm = init_mpi()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    setup_logging(rank, size, config.log_level, config.log_file)
    abort_on_exception(comm)
    faults.limit_files()
    plan, lock = _agree(comm, rank, size, config)
    if plan.complete:
        if lock is not None:
            lock.release()
        return RunResult(rank, size, message=f"{config.output} is already complete; nothing to resume")
    nodes = node_ids(comm) if size > 1 and levels else None
    tree = topology.build(size, topology.resolve(levels, size, nodes), nodes)
    choice = devices.settle(early, policy, comm, os.environ)
    if tree.depth > 1:
        # Sub-coordinators take no device: a worker's place on its node counts workers only
        role = tree.role(rank)
        slot = tree.workers_on_node(rank, nodes).index(rank) if role == "worker" else None
        choice = devices.for_slot(policy, slot, os.environ, f"a {role} computes nothing")
    devices.bind(choice)
    workloads = [make_workload(job) for job in config.jobs]
    if rank == 0:
        faults.folder = str(folder_of(config.output))
        try:
            faults.reach("layout")
            writer = _open_writer(comm, rank, plan, workloads, config, tree)
            return _coordinate(comm, config, plan, workloads, writer, faults, choice, tree, stop)
        finally:
            lock.release()
    writer = _open_writer(comm, rank, plan, workloads, config, tree)
    parent, siblings = tree.parent[rank], len(tree.children[tree.parent[rank]])
    heartbeat = config.heartbeat_interval or heartbeat_seconds(siblings, config.heartbeat_timeout)
    if tree.role(rank) == "worker":
        backend = devices.rank_backend(config.backend, choice, log, _simulation(config, rank))
        runner = ChunkRunner(workloads, backend, rank, faults)
        faults.before_hello(rank)
        Worker(comm, runner, hello_for(rank, backend), writer, parent, heartbeat).serve()
    else:
        _sub_coordinate(comm, config, workloads, tree, rank, heartbeat, batch_seconds(siblings))
    if writer is not None:
        writer.finish(comm.bcast(None, root=0))
        writer.close()
    return RunResult(rank, size)


def node_ids(comm: Any) -> list[int]:
    """For every rank, the lowest rank of its node (a shared-memory split; collective)."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        lowest = node.bcast(comm.Get_rank(), root=0)
    finally:
        node.Free()
    return comm.allgather(lowest)


def _target(config: RunConfig, tree: topology.Topology, rank: int) -> float:
    """Seconds of work per chunk this coordinator hands out: to groups, a share of theirs."""
    children = tree.children.get(rank, [])
    groups = any(tree.role(child) == "sub-coordinator" for child in children)
    if config.chunk_seconds is not None:
        return config.chunk_seconds * (GROUP_TARGET_SECONDS / TARGET_SECONDS if groups else 1.0)
    return target_seconds(len(children), groups)


def _sub_coordinate(
    comm: Any, config: RunConfig, workloads: list, tree: topology.Topology, rank: int, heartbeat: float,
    batch: float,
) -> None:  # fmt: skip
    sub = SubCoordinator(
        MPITransport(comm),
        workloads,
        rank,
        tree.parent[rank],
        tree.children[rank],
        _target(config, tree, rank),
        heartbeat,
        batch,
        [chunk_limit(w.job) for w in workloads],
        config.heartbeat_timeout,
        startup_timeout(config, tree, rank),
    )
    # The run's timeline holds TIMELINE_LIMIT chunks at most: each group sends its share
    subs = sum(tree.role(r) == "sub-coordinator" for r in range(len(tree.parent)))
    sub.timeline_limit = max(1000, TIMELINE_LIMIT // subs)
    try:
        sub.serve()
    except WorkerLostError as exc:
        log.error("%s; aborting all ranks", exc)
        abort_world(comm, 1)


def startup_timeout(config: RunConfig, tree: topology.Topology, rank: int) -> float:
    """A coordinator waits longer than the sub-coordinators below it, which name a missing worker."""
    return config.startup_timeout + STARTUP_MARGIN_SECONDS * max(0, tree.height(rank) - 1)


def _simulation(config: RunConfig, rank: int) -> dict[str, Any]:
    return {"rate": config.simulated_rate, "slow": config.simulated_slow, "rank": rank}


def _agree(comm: Any, rank: int, size: int, config: RunConfig) -> tuple[Plan, OutputLock | None]:
    """Rank 0 takes the output's lock and answers every filesystem question; all ranks get the same
    plan or error. Returns the plan and, on rank 0, the lock it holds for the rest of the run."""
    lock = OutputLock(config.output) if rank == 0 else None

    def decide() -> Plan:
        try:
            check_output_path(config.output, True)  # a place a file may go, before its lock is made
            lock.acquire()
            return make_plan(config, size)
        except BaseException:
            lock.release()
            raise

    plan = rank0_answer(comm, decide)
    return plan, lock


def _open_writer(
    comm: Any, rank: int, plan: Plan, workloads: list, config: RunConfig, tree: topology.Topology
) -> Any:
    from hpcthreads.io.writer import MPIOWriter, SerialWriter, claim_partial, layout_attrs

    # HDF5 follows links: the partial file is made here, exclusively, or checked not to be one
    if plan.io == "mpio":
        rank0_answer(comm, lambda: claim_partial(plan.partial, plan.fresh))
    elif rank == 0:
        claim_partial(plan.partial, plan.fresh)
    try:
        if plan.io == "mpio":
            writer = MPIOWriter(plan.partial, workloads, plan.fresh, comm)
        elif rank == 0:
            writer = SerialWriter(plan.partial, workloads, plan.fresh)
        else:
            return None
    except BaseException as exc:
        if plan.fresh and rank == 0:
            plan.partial.unlink(missing_ok=True)  # made above, empty
        if isinstance(exc, OutputError) and is_disk_full(exc):
            raise full_error(plan.partial, then=AGAIN_HINT) from None
        raise
    if plan.fresh:
        attrs = layout_attrs(_run_attrs(config, tree, plan.io)) if rank == 0 else None
        try:
            writer.create_layout(comm.bcast(attrs, root=0) if plan.io == "mpio" else attrs)
        except BaseException as exc:
            # A file that holds no work yet must not stay behind as a "stopped run"
            writer.abandon()
            if not isinstance(exc, Exception):
                raise  # an interrupt
            if is_disk_full(exc):
                raise full_error(plan.partial, then=AGAIN_HINT) from None
            raise OutputError(
                f"cannot create {plan.partial} ({exc.__class__.__name__}: {_first_line(exc)})"
            ) from None
    return writer


def _finish_bytes(finish: Any) -> int:
    """A generous estimate of what writing FINISH adds to the results file."""
    total = len(finish.chunks) * len(schema.CHUNK_COLUMNS) * 8 + 256 * len(finish.ranks)
    total += sum(16 * len(spans) for spans in finish.done.values())
    total += sum(24 * len(rows) for rows in finish.digests.values())
    for end in finish.jobs.values():
        total += RESERVE_PER_JOB + sum(24 * len(rows) for rows in end.extra.values())
        if end.summary is not None:
            total += len(json.dumps(to_plain(end.summary), default=str))
    return 2 * total


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


def _run_attrs(config: RunConfig, tree: topology.Topology, io: str) -> dict[str, Any]:
    size = len(tree.parent)
    attrs = {
        "job_file": config.source,
        "config": config.jobs_json(),
        "ranks": size,
        "io": io,
        "python": sys.version.split()[0],
        "hpcthreads_version": __version__,
    }
    if config.backend == "simulated":
        attrs["simulated"] = SIMULATED_NOTE
    return attrs


def _coordinate(
    comm: Any,
    config: RunConfig,
    plan: Plan,
    workloads: list,
    writer: Any,
    faults: Faults,
    choice: devices.DeviceChoice,
    tree: topology.Topology,
    stop: Callable[[], str | None] | None = None,
) -> RunResult:
    size = len(tree.parent)
    local = None
    reserve = Reserve(plan.output, reserve_size(len(workloads)))
    try:
        faults.reach("ledger")
        state = plan.state or ledger.LedgerState(config.jobs_json())
        journal = ledger.LedgerWriter(plan.output, state, config.checkpoint_interval)
    except BaseException as exc:
        if plan.fresh:
            _discard(plan, writer, None)
        if isinstance(exc, DiskFullError):
            raise exc.then(AGAIN_HINT if plan.fresh else ledger.RESUME_HINT) from None
        raise
    t0 = time.perf_counter()
    try:
        # Real blocks for the datasets: a chunk's data then never meets a full disk
        allocate_file(plan.partial)
        reserve.take()
        if size == 1:
            backend = devices.rank_backend(config.backend, choice, log, _simulation(config, 0))
            local = ChunkRunner(workloads, backend, 0, faults)
        coordinator = Coordinator(
            MPITransport(comm) if comm is not None and size > 1 else None,
            workloads,
            writer,
            local,
            config.heartbeat_timeout,
            [chunk_limit(w.job) for w in workloads],
            journal,
            _monitor(config),
            startup_timeout=startup_timeout(config, tree, 0),
            children=tree.children.get(0, []),
            target=_target(config, tree, 0),
            stop=stop,
        )
        outcome = coordinator.run()
        if outcome.interrupted and size == 1 and plan.fresh and not journal.has_work():
            # Stopped before its first chunk ended: nothing to resume, so nothing is kept
            raise _as_exception(outcome.interrupted)
        if outcome.interrupted:
            journal.state.stopped = f"{outcome.interrupted} received"
        journal.close()
        faults.reach("finish")
        finish = _finish(outcome, workloads, journal.state, tree)
        # The reserve's room is for this: the results, then a file closed whole
        reserve.release()
        faults.reach("results")
        check_room(plan.partial, _finish_bytes(finish), "writing the results at the end")
        if plan.io == "mpio":
            comm.bcast(finish, root=0)
        writer.finish(finish)
        writer.close()
    except BaseException as exc:
        reserve.release()
        if size > 1:
            log.error("run failed on the coordinator: %s; aborting all ranks", exc)
        saved = not plan.fresh or journal.has_work()
        if isinstance(exc, Exception) and not isinstance(exc, HPCThreadsError) and is_disk_full(exc):
            exc = full_error(plan.partial)
        if isinstance(exc, DiskFullError):
            exc = exc.then(ledger.RESUME_HINT if saved else AGAIN_HINT)
        if not saved and (isinstance(exc, DiskFullError) or not isinstance(exc, Exception)):
            # Stopped by a signal or a full disk before any chunk was saved: nothing is kept (a run
            # that failed otherwise keeps its ledger, so that `status` says why; the next run of the
            # output removes files that record no work)
            _discard(plan, writer, journal)
        else:
            journal.stop(message_of(exc) if isinstance(exc, HPCThreadsError) else _stop_reason(exc))
            try:
                writer.close()
            except Exception as close_error:  # noqa: BLE001 - the first error is the one to report
                log.warning("closing %s after the failure also failed: %s", plan.partial, close_error)
        if size > 1:
            abort_world(comm, 1)
        if isinstance(exc, DiskFullError):
            raise exc from None
        raise
    if not outcome.interrupted:
        faults.reach("rename")
        replace_output(plan.partial, plan.output)
        ledger.remove(plan.output)
    result = RunResult(
        0, size, {workloads[i].job.name: s for i, s in outcome.summaries.items()}, time.perf_counter() - t0
    )
    _raise_for(outcome, workloads, plan)
    return result


def _as_exception(name: str) -> BaseException:
    """The exception a signal named NAME raises where no handler stops the run gracefully."""
    return KeyboardInterrupt() if name == "SIGINT" else Interrupted(int(signal.Signals[name]))


def _stop_reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT received"
    return _first_line(exc) or type(exc).__name__


def _discard(plan: Plan, writer: Any, journal: ledger.LedgerWriter | None) -> None:
    """Remove the files of a fresh run that recorded no work; never raises."""
    if journal is not None:
        journal.discard()
    else:
        ledger.remove(plan.output)
    if writer is None:
        return
    if plan.io == "mpio":
        # Closing is collective there, and the other ranks are not closing: the run aborts
        plan.partial.unlink(missing_ok=True)
    else:
        writer.abandon()


def _monitor(config: RunConfig) -> Monitor:
    metrics = Metrics(config.metrics_dir, config.output) if config.metrics_dir else None
    return Monitor(Progress(interval=config.progress_interval, quiet=config.quiet), metrics)


def _finish(outcome: Outcome, workloads: list, state: ledger.LedgerState, tree: topology.Topology) -> Any:
    from hpcthreads.io.writer import Finish, JobEnd

    jobs = {}
    for i, workload in enumerate(workloads):
        name = workload.job.name
        extra = {key: [tuple(row) for row in rows] for key, rows in state.extra.get(name, {}).items()}
        if i in outcome.failed:
            jobs[name] = JobEnd(schema.STATE_FAILED, error=outcome.failed[i])
        elif i in outcome.summaries:
            jobs[name] = JobEnd(schema.STATE_COMPLETE, outcome.summaries[i], extra=extra)
        else:
            jobs[name] = JobEnd(schema.STATE_INTERRUPTED)
    if outcome.interrupted:
        run_state = schema.STATE_INTERRUPTED
    else:
        run_state = schema.STATE_FAILED if outcome.failed else schema.STATE_COMPLETE
    backends = sorted({r["backend"] for r in outcome.ranks.values() if r.get("backend")})
    size = len(tree.parent)
    run_attrs = {
        "backend": ",".join(backends),
        "ranks": size,
        "wall_seconds": outcome.wall,
        "makespan_seconds": outcome.makespan,
        "coordination_levels": tree.depth,
        "sub_coordinators": sum(tree.role(r) == "sub-coordinator" for r in range(size)),
        "chunks_not_in_timeline": outcome.unrecorded,
    }
    done = {name: ranges.spans for name, ranges in state.done.items()}
    return Finish(run_state, jobs, run_attrs, outcome.ranks, outcome.chunks, done, state.digests)


def _raise_for(outcome: Outcome, workloads: list, plan: Plan) -> None:
    if outcome.failed:
        lines = [f"job {workloads[i].job.name!r} failed: {msg}" for i, msg in outcome.failed.items()]
        raise JobFailedError("; ".join(lines) + f" (other jobs completed; results in {plan.output})")
    if outcome.interrupted:
        raise InterruptedRun(
            f"stopped by {outcome.interrupted}; finished chunks are saved in {plan.partial}: "
            "run the same command with --resume to finish"
        )


def describe_paths(output: Path) -> dict[str, Path]:
    """Where a run keeps its files: the final output, the partial file, the ledger."""
    ledger_path, checkpoint_path = ledger.paths(output)
    return {
        "output": output,
        "partial": output.with_name(output.name + ".partial"),
        "ledger": ledger_path,
        "checkpoint": checkpoint_path,
        "reserve": reserve_path(output),
    }
