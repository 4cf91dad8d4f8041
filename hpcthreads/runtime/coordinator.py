"""The coordinator (rank 0): hands out chunks, merges results, steals for idle workers.

Mirror image of worker.py. With one rank there are no workers to talk to:
the coordinator runs each chunk itself through the same ChunkRunner.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hpcthreads.errors import HPCThreadsError
from hpcthreads.runtime import protocol as p
from hpcthreads.runtime.ledger import LedgerWriter
from hpcthreads.runtime.monitor import Monitor, Snapshot
from hpcthreads.runtime.mpiutil import Poller
from hpcthreads.runtime.scheduling import WINDOW, Chunk, JobQueue, Scheduler, WorkerState
from hpcthreads.runtime.worker import ChunkRunner
from hpcthreads.workloads.base import BaseWorkload, to_plain

log = logging.getLogger("hpcthreads")

FINAL_TIMEOUT = 30.0
RETRY_SECONDS = 0.05


class WorkerLostError(HPCThreadsError):
    """A worker stopped answering while it held work."""

    exit_code = 1


@dataclass
class ChunkRecord:
    job: int
    offset: int
    count: int
    rank: int
    started: float
    ended: float
    stolen: bool


@dataclass
class Outcome:
    summaries: dict[int, Any] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    extra: dict[int, dict[str, list]] = field(default_factory=dict)
    job_wall: dict[int, float] = field(default_factory=dict)
    wall: float = 0.0
    interrupted: str | None = None
    ranks: dict[int, dict[str, Any]] = field(default_factory=dict)
    chunks: list[ChunkRecord] = field(default_factory=list)


class Coordinator:
    def __init__(
        self,
        comm: Any,
        workloads: list[BaseWorkload],
        writer: Any,
        local: ChunkRunner | None,
        heartbeat_timeout: float = 60.0,
        max_chunks: list[int] | None = None,
        ledger: LedgerWriter | None = None,
        monitor: Monitor | None = None,
        startup_timeout: float = 600.0,
    ) -> None:
        self.comm = comm
        self.monitor = monitor
        self.failures = 0
        self.last_progress = time.time()
        self.workloads = workloads
        self.writer = writer
        self.local = local
        self.ledger = ledger
        self.timeout = heartbeat_timeout
        # Start-up includes compiling kernels on a cold cache: far longer than a heartbeat
        self.startup_timeout = startup_timeout
        ranks = [0] if local is not None else list(range(1, comm.Get_size()))
        self.workers = {rank: WorkerState(rank) for rank in ranks}
        limits = max_chunks or [1 << 62] * len(workloads)
        queues = [self._queue(i, w, limits[i]) for i, w in enumerate(workloads)]
        self.scheduler = Scheduler(queues, list(self.workers.values()))
        self.summaries = {i: self._resumed_summary(w) for i, w in enumerate(workloads)}
        self.outcome = Outcome()
        self.local_queue: deque[p.Task] = deque()
        self.last_seen: dict[int, float] = {}
        self.interrupted: str | None = None
        self.t0 = time.time()
        self.job_started: dict[int, float] = {}

    def _queue(self, index: int, workload: BaseWorkload, limit: int) -> JobQueue:
        """A job's queue; when resuming, only the parts the ledger does not hold."""
        job = workload.job
        queue = JobQueue(index, job.name, job.size, job.batch_size, job.priority, job.gpu_preferred, limit)
        done = self.ledger.state.done.get(job.name) if self.ledger else None
        if done is not None:
            queue.cursor, queue.done = job.size, done.covered()
            queue.returned.extend(Chunk(0, index, offset, count) for offset, count in done.gaps(job.size))
        return queue

    def _resumed_summary(self, workload: BaseWorkload) -> Any:
        plain = self.ledger.state.summaries.get(workload.job.name) if self.ledger else None
        return workload.empty() if plain is None else workload.summary_from_plain(plain)

    # Main loop

    def run(self) -> Outcome:
        self._install_signals()
        self._greet()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for worker in self.workers.values():
            self._top_up(worker)
        poller = Poller()
        retry_at = 0.0
        while not self._done():
            if self._step():
                poller.reset()
            else:
                poller.wait()
            now = time.monotonic()
            if now > retry_at:
                # Idle workers whose last steal was refused try again
                self._top_up_idle()
                self._check_heartbeats(now)
                self._report()
                retry_at = now + RETRY_SECONDS
        coordinator = {"cpu": time.process_time() - cpu_start, "wall": time.perf_counter() - wall_start}
        self.outcome.wall = coordinator["wall"]
        self._stop_workers()
        self._finish_jobs()
        self._report(final=True)
        if self.local is None:
            self.outcome.ranks[0] = {"host": socket.gethostname(), "device": "coordinator", **coordinator}
        else:
            self.outcome.ranks[0].update(coordinator)
        self.outcome.interrupted = self.interrupted
        return self.outcome

    def _done(self) -> bool:
        if self.interrupted:
            return True
        return self.scheduler.all_finished() and not any(w.in_flight for w in self.workers.values())

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if not self.interrupted:
                log.warning("%s received: finishing chunks in flight, then stopping", name)
            self.interrupted = name

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, handler)

    def _greet(self) -> None:
        if self.local is not None:
            log.info("one rank: computing here with %s", self.local.backend.describe())
            self.workers[0].is_gpu = self.local.backend.is_gpu
            self.outcome.ranks[0] = {
                "host": socket.gethostname(),
                "device": self.local.backend.describe(),
                "backend": self.local.backend.name,
            }
            return
        deadline = time.monotonic() + self.startup_timeout
        waiting = set(self.workers)
        poller = Poller()
        while waiting:
            message, source = self._receive(p.TAG_HELLO)
            if message is None:
                if time.monotonic() > deadline:
                    raise WorkerLostError(
                        f"rank(s) {sorted(waiting)} did not start within {self.startup_timeout:.0f} s "
                        "(--startup-timeout)"
                    )
                poller.wait()
                continue
            waiting.discard(source)
            self.workers[source].is_gpu = message.is_gpu
            self.outcome.ranks[source] = {
                "host": message.host,
                "device": message.device,
                "backend": message.backend,
            }
            # A launcher that reports a dead process by its pid can be read against this line
            log.info("rank %d is pid %d on %s (%s)", source, message.pid, message.host, message.device)
        self.scheduler.any_gpu = any(w.is_gpu for w in self.workers.values())

    def _receive(self, tag: int | None = None) -> tuple[Any, int]:
        from mpi4py import MPI

        status = MPI.Status()
        tag = MPI.ANY_TAG if tag is None else tag
        if not self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=tag, status=status):
            return None, -1
        source = status.Get_source()
        return self.comm.recv(source=source, tag=status.Get_tag()), source

    def _step(self) -> bool:
        """Handle one message (or run one local chunk); False when there was nothing."""
        if self.local is not None:
            if not self.local_queue:
                return False
            task = self.local_queue.popleft()
            self._handle(self.local.run(task, self._local_service), 0)
            return True
        message, source = self._receive()
        if message is None:
            return False
        self._handle(message, source)
        return True

    def _local_service(self, cursor: int, end: int) -> int:
        return cursor if self.interrupted else end

    # Messages

    def _handle(self, message: Any, source: int) -> None:
        self.last_seen[source] = time.monotonic()
        worker = self.workers.get(source)
        if isinstance(message, p.Result):
            self._on_result(worker, message)
        elif isinstance(message, p.Failure):
            self._on_failure(worker, message)
        elif isinstance(message, p.GiveBack):
            log.debug("giveback from %d: %s", source, message)
            if message.count:
                thief = self.scheduler.given_back(worker, message.chunk, message.offset, message.count)
                if thief in self.workers:
                    self._top_up(self.workers[thief])
                self._top_up_idle()
            else:
                self.scheduler.refused(worker)
        elif isinstance(message, p.Final):
            self.outcome.ranks.setdefault(source, {}).update(message.stats)

    def _on_result(self, worker: WorkerState, result: p.Result) -> None:
        chunk = self.scheduler.finished(worker, result.chunk, result.count, result.seconds)
        job = self.scheduler.jobs[result.job]
        self.outcome.chunks.append(
            ChunkRecord(
                result.job,
                result.offset,
                result.count,
                worker.rank,
                result.started - self.t0,
                result.ended - self.t0,
                chunk.stolen,
            )
        )
        if job.failed is None and result.output is not None and result.count:
            self._record(result, worker.rank)
            if job.done >= job.size:
                self._end_job(result.job)
        self._top_up(worker)

    def _record(self, result: p.Result, rank: int) -> None:
        """Data first (unless a worker wrote it), then the ledger entry, then the merge."""
        self.last_progress = time.time()
        workload, output = self.workloads[result.job], result.output
        if self.local is not None or not self.writer.writes_on_workers:
            self.writer.write_chunk(result.job, output)
        if self.ledger is not None:
            self.ledger.append(
                workload.job.name,
                result.offset,
                result.count,
                rank,
                result.started,
                result.ended,
                to_plain(output.summary),
                output.extra,
            )
        self.summaries[result.job] = workload.merge(self.summaries[result.job], output.summary)
        for name, rows in output.extra.items():
            self.outcome.extra.setdefault(result.job, {}).setdefault(name, []).extend(rows)

    def _report(self, final: bool = False) -> None:
        """Feed the progress display and the metrics file."""
        if self.monitor is None:
            return
        jobs = self.scheduler.jobs
        elapsed = max(time.time() - self.t0, 1e-9)
        if final:
            state = "interrupted" if self.interrupted else ("failed" if self.outcome.failed else "complete")
        else:
            state = "running"
        snap = Snapshot(
            done={job.name: min(job.done, job.size) for job in jobs},
            total={job.name: job.size for job in jobs},
            busy={w.rank: w.busy / elapsed for w in self.workers.values()},
            stolen=sum(w.stolen_from for w in self.workers.values()),
            failures=self.failures,
            last_progress=self.last_progress,
            state=state,
        )
        self.monitor.update(snap, final)

    def _on_failure(self, worker: WorkerState, failure: p.Failure) -> None:
        self.failures += 1
        name = self.scheduler.jobs[worker.in_flight[failure.chunk].job].name
        log.error(
            "rank %d (%s) failed a chunk of job %s: %s\n%s",
            failure.rank,
            failure.host,
            name,
            failure.error,
            failure.traceback.rstrip(),
        )
        message = f"rank {failure.rank} on {failure.host}: {failure.error}"
        job_index = worker.in_flight[failure.chunk].job
        if self.scheduler.failed(worker, failure.chunk, message):
            log.warning("job %s: retrying the chunk on another worker", name)
            self._top_up_idle()
        else:
            log.error("job %s failed twice; giving it up: %s", name, message)
            self.outcome.failed[job_index] = message
        self._top_up(worker)

    # Dispatch and stealing

    def _send(self, worker: WorkerState, chunk: Chunk) -> None:
        if not worker.in_flight or worker.rank not in self.last_seen:
            self.last_seen[worker.rank] = time.monotonic()
        self.job_started.setdefault(chunk.job, time.time())
        task = p.Task(chunk.id, chunk.job, chunk.offset, chunk.count)
        if self.local is not None:
            self.local_queue.append(task)
        else:
            self.comm.send(task, dest=worker.rank, tag=p.TAG_TASK)

    def _top_up(self, worker: WorkerState) -> None:
        if self.interrupted:
            return
        window = 1 if self.local is not None else WINDOW
        while len(worker.in_flight) < window:
            before = set(worker.in_flight)
            chunk = self.scheduler.next_chunk(worker, time.monotonic())
            if chunk is None:
                break
            self._send(worker, chunk)
            if set(worker.in_flight) == before:
                break
        # Ask for stolen work before the worker runs dry, so that it never waits
        if len(worker.in_flight) < WINDOW and self.local is None:
            victim = self.scheduler.steal_for(worker, time.monotonic())
            if victim is not None:
                log.debug("steal from %d for %d", victim.rank, worker.rank)
                self.comm.send(p.Steal(), dest=victim.rank, tag=p.TAG_STEAL)

    def _top_up_idle(self) -> None:
        for worker in self.workers.values():
            if len(worker.in_flight) < WINDOW:
                self._top_up(worker)

    def _check_heartbeats(self, now: float) -> None:
        for worker in self.workers.values():
            if (
                worker.in_flight
                and worker.rank != 0
                and now - self.last_seen.get(worker.rank, now) > self.timeout
            ):
                host = self.outcome.ranks.get(worker.rank, {}).get("host", "?")
                raise WorkerLostError(
                    f"rank {worker.rank} on {host} sent nothing for {self.timeout:.0f} s while holding work; "
                    "it has probably died"
                )

    # Ending

    def _end_job(self, index: int) -> None:
        workload = self.workloads[index]
        wall = time.time() - self.job_started.get(index, self.t0)
        self.outcome.summaries[index] = workload.finish(self.summaries[index])
        self.outcome.job_wall[index] = wall
        log.info(
            "job %s (%s) complete: %d items in %.2f s",
            workload.job.name,
            workload.job.type,
            workload.job.size,
            wall,
        )

    def _finish_jobs(self) -> None:
        # Jobs with nothing left to do when resuming are complete without a chunk
        for index, job in enumerate(self.scheduler.jobs):
            if job.failed is None and job.done >= job.size and index not in self.outcome.summaries:
                self._end_job(index)

    def _stop_workers(self) -> None:
        if self.local is not None:
            stats = {"busy": self.local.busy, "items": self.local.items, "idle": 0.0, "gave_back": 0}
            self.outcome.ranks[0].update(stats)
            return
        for rank in self.workers:
            self.comm.send(p.Stop(self.interrupted or "done"), dest=rank, tag=p.TAG_STOP)
        waiting = set(self.workers)
        deadline = time.monotonic() + FINAL_TIMEOUT
        poller = Poller()
        while waiting and time.monotonic() < deadline:
            message, source = self._receive()
            if message is None:
                poller.wait()
                continue
            self._handle(message, source)
            if isinstance(message, p.Final):
                waiting.discard(source)
        if waiting:
            log.warning("rank(s) %s did not report at the end", sorted(waiting))
        for worker in self.workers.values():
            self.outcome.ranks.setdefault(worker.rank, {}).update(
                {"chunks": worker.chunks, "stolen_from": worker.stolen_from, "stolen_by": worker.stolen_by}
            )
