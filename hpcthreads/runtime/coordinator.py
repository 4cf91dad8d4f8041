"""The coordinator (rank 0): hands out chunks, merges results into the file and the ledger.

Its children are workers, or sub-coordinators that each stand for a group of
workers (subcoordinator.py); towards them it is a `BaseDispatcher`. With one
rank there are no children to talk to: the coordinator runs each chunk
itself through the same ChunkRunner. Mirror image of worker.py.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hpcthreads.errors import received_signal
from hpcthreads.runtime import devices
from hpcthreads.runtime import protocol as p
from hpcthreads.runtime.dispatch import BaseDispatcher, ChunkRecord, WorkerLostError
from hpcthreads.runtime.ledger import LedgerWriter
from hpcthreads.runtime.monitor import Monitor, Snapshot
from hpcthreads.runtime.mpiutil import Poller
from hpcthreads.runtime.pacing import TARGET_SECONDS
from hpcthreads.runtime.scheduling import Chunk, JobQueue, WorkerState
from hpcthreads.runtime.usage import UsageSampler
from hpcthreads.runtime.worker import ChunkRunner
from hpcthreads.workloads.base import BaseWorkload, split_union, to_plain

log = logging.getLogger("hpcthreads")

__all__ = ["Coordinator", "Outcome", "WorkerLostError"]


@dataclass
class Outcome:
    summaries: dict[int, Any] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    extra: dict[int, dict[str, list]] = field(default_factory=dict)
    job_wall: dict[int, float] = field(default_factory=dict)
    wall: float = 0.0
    # First chunk handed out to last result in, in seconds
    makespan: float = 0.0
    interrupted: str | None = None
    ranks: dict[int, dict[str, Any]] = field(default_factory=dict)
    chunks: list[ChunkRecord] = field(default_factory=list)
    # Finished chunks left out of the timeline (dispatch.TIMELINE_LIMIT)
    unrecorded: int = 0


class Coordinator(BaseDispatcher):
    def __init__(
        self,
        transport: Any,
        workloads: list[BaseWorkload],
        writer: Any,
        local: ChunkRunner | None,
        heartbeat_timeout: float = 60.0,
        max_chunks: list[int] | None = None,
        ledger: LedgerWriter | None = None,
        monitor: Monitor | None = None,
        startup_timeout: float = 600.0,
        children: list[int] | None = None,
        target: float = TARGET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        stop: Callable[[], str | None] | None = None,
    ) -> None:
        self.ledger = ledger
        # Asked between messages and sub-batches: a reason to stop as on a signal (a lost lease)
        self.stop = stop
        self.local = local
        limits = max_chunks or [1 << 62] * len(workloads)
        queues = [self._queue(i, w, limits[i]) for i, w in enumerate(workloads)]
        if resumed := sum(queue.done for queue in queues):
            total = sum(w.job.size for w in workloads)
            log.info("resuming from the ledger: %s of %s items already done", f"{resumed:,}", f"{total:,}")
        ranks = [0] if local is not None else list(children or [])
        super().__init__(
            transport, workloads, ranks, queues, target, heartbeat_timeout, startup_timeout, clock
        )  # fmt: skip
        if local is not None:
            self.window = 1
        self.wallclock = wallclock
        self.writer = writer
        self.monitor = monitor
        self.last_progress = wallclock()
        # The running merge of each job, its union fields (unresolved values) kept apart in `grown`:
        # merging and committing a chunk then cost what the chunk brings, not what came before
        self.summaries: dict[int, Any] = {}
        self.grown: dict[int, dict[str, list[int]]] = {}
        for i, workload in enumerate(workloads):
            self.summaries[i], self.grown[i] = split_union(self._resumed_summary(workload))
        if ledger is not None:
            ledger.summaries = self.plain_summaries
            ledger.lean_summaries = lambda: self.plain_summaries(whole=False)
        self.outcome = Outcome()
        self.local_queue: deque[p.Task] = deque()
        self.interrupted: str | None = None
        self.t0 = wallclock()
        self.first_sent: float | None = None
        self.last_result = 0.0
        self.job_started: dict[int, float] = {}
        self.ending = False
        # Rank 0's own figures; computing alone, its runner's sampler knows the device
        self.sampler = local.sampler if local is not None else UsageSampler()

    def _queue(self, index: int, workload: BaseWorkload, limit: int) -> JobQueue:
        """A job's queue; when resuming, only the parts the ledger does not hold."""
        job = workload.job
        queue = JobQueue(index, job.name, job.size, job.batch_size, job.priority, job.gpu_preferred, limit)
        done = self.ledger.state.done.get(job.name) if self.ledger else None
        if done is not None:
            queue.cursor, queue.done = job.size, done.covered()
            for offset, count in done.gaps(job.size):
                queue.put_back(Chunk(0, index, offset, count), front=False)
        return queue

    def _resumed_summary(self, workload: BaseWorkload) -> Any:
        plain = self.ledger.state.summaries.get(workload.job.name) if self.ledger else None
        return workload.empty() if plain is None else workload.summary_from_plain(plain)

    def plain_summaries(self, whole: bool = True) -> dict[str, dict[str, Any]]:
        """The merged summary of every job with finished work, as the ledger's snapshot holds them.

        Not `whole`: without the union fields, as a ledger commit writes them beside their new values.
        """
        out = {}
        for index, workload in enumerate(self.workloads):
            if self.scheduler.jobs[index].done or workload.job.name in self.ledger.state.summaries:
                plain = to_plain(self.whole_summary(index) if whole else self.summaries[index])
                for name in () if whole else self.grown[index]:
                    del plain[name]
                out[workload.job.name] = plain
        return out

    def whole_summary(self, index: int) -> Any:
        """Job INDEX's merged summary with its union fields filled in: for snapshots and the job's end."""
        grown = self.grown[index]
        if not grown:
            return self.summaries[index]  # a job type without union fields
        for name, values in grown.items():
            # Kept sorted and unique: the next sort finds one long run and merges the new tail into it
            grown[name] = sorted(set(values))
        return replace(self.summaries[index], **{name: list(v) for name, v in grown.items()})

    # Main loop

    def run(self) -> Outcome:
        self._install_signals()
        self._greet()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for worker in self.workers.values():
            self.top_up(worker)
        poller = Poller()
        while not self._done():
            if self._step():
                poller.reset()
            else:
                poller.wait()
            now = self.clock()
            if self.ledger is not None:
                self.ledger.tick(now)
            if self.duties(now):
                self.report()
        coordinator = {"cpu": time.process_time() - cpu_start, "wall": time.perf_counter() - wall_start}
        self.outcome.wall = coordinator["wall"]
        if self.first_sent is not None:
            self.outcome.makespan = max(0.0, self.last_result - self.first_sent)
        self._stop_workers()
        self._finish_jobs()
        self.report(final=True)
        if self.local is None:
            self.ranks[0] = {
                "host": socket.gethostname(),
                "device": "coordinator",
                "cuda_visible_devices": devices.visible_setting(),
                **coordinator,
            }
        else:
            self.ranks[0].update(coordinator)
        self.outcome.ranks = self.ranks
        self.outcome.chunks = [
            ChunkRecord(c.job, c.offset, c.count, c.rank, c.started - self.t0, c.ended - self.t0, c.stolen)
            for c in self.chunks
        ]
        self.outcome.unrecorded = self.unrecorded
        self.outcome.interrupted = self.interrupted
        return self.outcome

    def _done(self) -> bool:
        if self._stopped():
            return True
        return self.scheduler.in_flight == 0 and self.scheduler.all_finished()

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if not self.interrupted:
                log.warning("%s received: finishing chunks in flight, then stopping", name)
            self.interrupted = name
            self.stopping = True

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, handler)
        # One that came while the run was starting, and was lost on its way out (inside a compile)
        early = received_signal()
        if early is not None:
            handler(early, None)

    def _greet(self) -> None:
        if self.local is None:
            self.greet()
            return
        log.info("one rank: computing here with %s", self.local.backend.describe())
        self.workers[0].is_gpu = self.local.backend.is_gpu
        self.scheduler.any_gpu = self.local.backend.is_gpu
        self.ranks[0] = {
            "host": socket.gethostname(),
            "device": self.local.backend.describe(),
            "backend": self.local.backend.name,
            "cuda_visible_devices": devices.visible_setting(),
        }

    def _step(self) -> bool:
        """Handle one message (or run one local chunk); False when there was nothing."""
        if self.local is not None:
            if not self.local_queue:
                return False
            task = self.local_queue.popleft()
            self.handle(self.local.run(task, self._local_service), 0)
            return True
        message, source = self.transport.receive()
        if message is None:
            return False
        self.handle(message, source)
        return True

    def _local_service(self, cursor: int, end: int) -> int:
        return cursor if self._stopped() else end

    def _stopped(self) -> bool:
        if not self.interrupted and self.stop is not None and (reason := self.stop()):
            log.warning("%s: finishing chunks in flight, then stopping", reason)
            self.interrupted = reason
            self.stopping = True
        return self.interrupted is not None

    # Results

    def handle(self, message: Any, source: int) -> None:
        if isinstance(message, (p.Result, p.Batch)):
            self.last_result = self.clock()
        super().handle(message, source)
        if self.ending:
            self.ending = False
            self._end_finished_jobs()

    def chunk_done(self, chunk: Chunk, count: int) -> None:
        job = self.scheduler.jobs[chunk.job]
        # The job ends once this message is handled (its results merged)
        self.ending = self.ending or job.done >= job.size

    def send_chunk(self, worker: WorkerState, chunk: Chunk) -> None:
        now = self.clock()
        if self.first_sent is None:
            self.first_sent = now
        self.job_started.setdefault(chunk.job, self.wallclock())
        if self.local is None:
            super().send_chunk(worker, chunk)
        else:
            self.local_queue.append(p.Task(chunk.id, chunk.job, chunk.offset, chunk.count))

    def accept(self, part: p.Part, rank: int) -> None:
        """Data first (unless a worker wrote it), then the merge, then the ledger's record of it."""
        self.last_progress = self.wallclock()
        workload = self.workloads[part.job]
        for output in part.outputs:
            self.writer.write_chunk(part.job, output)
        summary, added = split_union(part.summary)
        self.summaries[part.job] = workload.merge(self.summaries[part.job], summary)
        for name, values in added.items():
            self.grown[part.job].setdefault(name, []).extend(values)
        for name, rows in part.extra.items():
            self.outcome.extra.setdefault(part.job, {}).setdefault(name, []).extend(rows)
        if self.ledger is not None:
            self.ledger.append(workload.job.name, part.spans, part.ended, part.extra, part.digests, added)

    def job_given_up(self, job: int, message: str, dropped: list[Chunk]) -> None:
        self.outcome.failed.setdefault(job, message)

    def report(self, final: bool = False) -> None:
        """Feed the progress display and the metrics file, from running totals."""
        if self.monitor is None or not (final or self.monitor.due(self.clock())):
            return
        jobs = self.scheduler.jobs
        elapsed = max(self.wallclock() - self.t0, 1e-9)
        if final:
            state = "interrupted" if self.interrupted else ("failed" if self.outcome.failed else "complete")
        else:
            state = "running"
        if own := self.sampler.sample():
            self.usage[0] = own
        snap = Snapshot(
            done={job.name: min(job.done, job.size) for job in jobs},
            total={job.name: job.size for job in jobs},
            busy=lambda: {w.rank: w.busy / elapsed / w.capacity for w in self.workers.values()},
            stolen=self.scheduler.stolen,
            failures=self.failures,
            last_progress=self.last_progress,
            state=state,
            usage=self.usage,
        )
        self.monitor.update(snap, final)

    # Ending

    def _end_finished_jobs(self) -> None:
        for index, job in enumerate(self.scheduler.jobs):
            if job.failed is None and job.done >= job.size and index not in self.outcome.summaries:
                self._end_job(index)

    def _end_job(self, index: int) -> None:
        workload = self.workloads[index]
        wall = self.wallclock() - self.job_started.get(index, self.t0)
        self.outcome.summaries[index] = workload.finish(self.whole_summary(index))
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
        self._end_finished_jobs()

    def _stop_workers(self) -> None:
        if self.local is not None:
            stats = {"busy": self.local.busy, "items": self.local.items, "idle": 0.0, "gave_back": 0}
            self.ranks[0].update(stats, chunks=self.workers[0].chunks, stolen_from=0, stolen_by=0)
            return
        self.stop_children(self.interrupted or "done", self.transport.receive)
