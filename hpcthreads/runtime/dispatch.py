"""What every coordinator does for its children: greet, dispatch, steal, watch, stop.

Rank 0 (coordinator.py) and every sub-coordinator (subcoordinator.py) are a
`BaseDispatcher` towards the ranks below them; they differ only in where
finished work goes (the results file and the ledger, or the next batch for
the parent) and in where new work comes from. Nothing here costs more than
O(log N) per message in the number of children N: idle children wait in
ordered sets and are fed when work appears, heartbeats are checked against a
deadline heap, totals are kept running.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from hpcthreads.errors import HPCThreadsError
from hpcthreads.runtime import protocol as p
from hpcthreads.runtime.mpiutil import Poller
from hpcthreads.runtime.pacing import MIN_STEAL_SECONDS
from hpcthreads.runtime.scheduling import WINDOW, Chunk, JobQueue, Scheduler, WorkerState
from hpcthreads.runtime.usage import Usage
from hpcthreads.workloads.base import BaseWorkload

log = logging.getLogger("hpcthreads")

# Seconds between the periodic duties of a coordinator (steal retries, heartbeats, progress)
RETRY_SECONDS = 0.05
# Idle children given a steal attempt per periodic pass, at most
RETRY_LIMIT = 16
# Seconds a coordinator waits for its children's final reports
FINAL_TIMEOUT = 30.0
# A group's last shares are this part of its target at least
GROUP_TAIL_FRACTION = 0.25
# Chunks a run records in its timeline (/run/chunks), at most: memory stays bounded on long runs
TIMELINE_LIMIT = 500_000
# Shares a group holds that its sub-coordinator has not yet handed out entirely: its workers' own
# windows keep them busy while the next share comes, and whatever a group holds is out of reach of
# the others until they steal it
GROUP_WINDOW = 1


class WorkerLostError(HPCThreadsError):
    """A worker stopped answering while it held work."""

    exit_code = 1


@dataclass
class ChunkRecord:
    """One finished chunk in the run's timeline (times are Unix seconds until the file is written)."""

    job: int
    offset: int
    count: int
    rank: int
    started: float
    ended: float
    stolen: bool


class BaseDispatcher:
    """Chunks out to the children, results and give-backs in; subclasses decide where results go."""

    # One chunk at a time when the coordinator computes its chunks itself
    window = WINDOW

    def __init__(
        self,
        transport: Any,
        workloads: list[BaseWorkload],
        children: list[int],
        queues: list[JobQueue],
        target: float,
        heartbeat_timeout: float = 120.0,
        startup_timeout: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.workloads = workloads
        self.clock = clock
        self.workers = {rank: WorkerState(rank) for rank in children}
        self.scheduler = Scheduler(queues, list(self.workers.values()), target)
        self.target = target
        self.timeout = heartbeat_timeout
        # Start-up includes compiling kernels on a cold cache: far longer than a heartbeat
        self.startup_timeout = startup_timeout
        # Children below their window with no steal asked for them: empty-handed first
        self.starving: dict[int, None] = {}
        self.low: dict[int, None] = {}
        self.last_seen: dict[int, float] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.watched: set[int] = set()
        # Accounting of every rank of this subtree (rank -> fields of /run/ranks), and its chunks
        self.ranks: dict[int, dict[str, Any]] = {}
        self.chunks: list[ChunkRecord] = []
        self.timeline_limit = TIMELINE_LIMIT
        self.unrecorded = 0
        self.failures = 0
        # The newest memory (and GPU) sample of every rank of this subtree
        self.usage: dict[int, Usage] = {}
        self.stopping = False
        self.next_duty = 0.0

    # Start-up

    def greet(self) -> None:
        """Wait for every child's Hello (within --startup-timeout)."""
        deadline = self.clock() + self.startup_timeout
        waiting = set(self.workers)
        poller = Poller()
        while waiting:
            message, source = self.transport.receive()
            if isinstance(message, p.Lost):
                self.on_lost(message, source)
            if message is None or not isinstance(message, p.Hello):
                if self.clock() > deadline:
                    raise WorkerLostError(
                        f"rank(s) {sorted(waiting)} did not start within {self.startup_timeout:.0f} s "
                        "(--startup-timeout)"
                    )
                poller.wait()
                continue
            waiting.discard(source)
            self.on_hello(message, source)
        self.workers_known()

    def workers_known(self) -> None:
        """Every child has said what it is: GPU or not, a group or a worker."""
        self.scheduler.workers_changed()
        if any(w.group for w in self.workers.values()):
            # A steal between groups costs a few messages here whatever the groups' sizes: it pays
            # from MIN_STEAL_SECONDS on. Shares end at a quarter of the target: each costs a task
            # and a notice here, and a group finishes a small one fast, so all ask at once
            self.scheduler.steal_seconds = MIN_STEAL_SECONDS
            self.scheduler.min_seconds = self.target * GROUP_TAIL_FRACTION

    def on_hello(self, hello: p.Hello, source: int) -> None:
        worker = self.workers[source]
        worker.is_gpu = hello.is_gpu or hello.gpus > 0
        worker.capacity = hello.capacity
        worker.group = hello.group
        self.ranks[source] = {
            "host": hello.host,
            "device": hello.device,
            "backend": hello.backend,
            "cuda_visible_devices": hello.cuda_visible_devices,
        }
        for rank, fields in hello.ranks.items():
            self.ranks.setdefault(rank, {}).update(fields)
        # A launcher that reports a dead process by its pid can be read against this line
        log.info("rank %d is pid %d on %s (%s)", source, hello.pid, hello.host, hello.device)

    # Messages from children

    def handle(self, message: Any, source: int) -> None:
        self.last_seen[source] = self.clock()
        worker = self.workers.get(source)
        if isinstance(message, (p.Result, p.Heartbeat)) and message.usage is not None:
            self.note_usage({source: message.usage})
        elif isinstance(message, p.Batch) and message.usage:
            self.note_usage(message.usage)
        if isinstance(message, p.Result):
            self.on_result(worker, message)
        elif isinstance(message, p.Batch):
            self.on_batch(worker, message)
        elif isinstance(message, p.GiveBack):
            self.on_give_back(worker, message)
        elif isinstance(message, p.Failure):
            self.on_failure(worker, message)
        elif isinstance(message, p.JobFailed):
            self.fail_job(message.job, message.message)
        elif isinstance(message, p.Lost):
            self.on_lost(message, source)
        elif isinstance(message, p.Final):
            self.on_final(message, source)

    def on_result(self, worker: WorkerState, result: p.Result) -> None:
        chunk = self.scheduler.finished(worker, result.chunk, result.count, result.seconds, self.clock())
        self.chunk_done(chunk, result.count)
        if len(self.chunks) < self.timeline_limit:
            record = (result.job, result.offset, result.count, worker.rank, result.started, result.ended)
            self.chunks.append(ChunkRecord(*record, chunk.stolen))
        else:
            self.unrecorded += 1
        output = result.output
        if self.scheduler.jobs[result.job].failed is None and output is not None and result.count:
            outputs = [output] if output.arrays else []
            digests = [] if output.digest is None else [(result.offset, result.count, output.digest)]
            part = p.Part(
                result.job, [(result.offset, result.count)], output.summary, output.extra, outputs,
                result.started, result.ended, digests,
            )  # fmt: skip
            self.accept(part, worker.rank)
        self.top_up(worker)

    def on_batch(self, worker: WorkerState, batch: p.Batch) -> None:
        now = self.clock()
        for chunk_id, count in batch.credits:
            chunk = self.scheduler.credit(worker, chunk_id, count, now)
            if chunk is not None:
                self.chunk_done(chunk, count)
        for chunk_id in batch.taken:
            self.scheduler.take(worker, chunk_id)
        for job, speed in batch.speeds.items():
            self.scheduler.set_speed(worker, job, speed, now)
        worker.busy += batch.busy
        self.failures += batch.failures
        for part in batch.parts:
            if self.scheduler.jobs[part.job].failed is None:
                self.accept(part, worker.rank)
        self.top_up(worker)

    def on_give_back(self, worker: WorkerState, message: p.GiveBack) -> None:
        if message.count:
            thief = self.scheduler.given_back(worker, message.chunk, message.offset, message.count)
            for chunk, offset, count in message.more:
                self.scheduler.given_back(worker, chunk, offset, count)
        else:
            thief = self.scheduler.refused(worker)
        if thief in self.workers:
            self.top_up(self.workers[thief])
        self.feed_hungry()
        self.retry_steals(1)

    def on_failure(self, worker: WorkerState, failure: p.Failure) -> None:
        self.failures += 1
        chunk = worker.in_flight[failure.chunk]
        name = self.scheduler.jobs[chunk.job].name
        log.error(
            "rank %d (%s) failed a chunk of job %s: %s\n%s",
            failure.rank, failure.host, name, failure.error, failure.traceback.rstrip(),
        )  # fmt: skip
        message = f"rank {failure.rank} on {failure.host}: {failure.error}"
        queued = list(self.scheduler.jobs[chunk.job].returned)
        given_up = self.scheduler.jobs[chunk.job].failed is not None
        if self.scheduler.failed(worker, failure.chunk, message, self.clock()):
            log.warning("job %s: retrying the chunk on another worker", name)
            self.feed_hungry()
        else:
            if not given_up:
                log.error("job %s failed twice; giving it up: %s", name, message)
            self.job_given_up(chunk.job, message, [chunk, *queued])
        self.top_up(worker)

    def fail_job(self, job: int, message: str) -> None:
        """A child gave `job` up: so does this coordinator."""
        queued = self.scheduler.fail_job(job, message)
        self.job_given_up(job, message, queued)

    def on_lost(self, message: p.Lost, source: int) -> None:
        raise WorkerLostError(message.reason)

    def on_final(self, final: p.Final, source: int) -> None:
        self.ranks.setdefault(source, {}).update(final.stats)
        for rank, stats in final.ranks.items():
            self.ranks.setdefault(rank, {}).update(stats)
        room = max(0, self.timeline_limit - len(self.chunks))
        self.chunks.extend(final.chunks[:room])
        self.unrecorded += final.unrecorded + max(0, len(final.chunks) - room)

    def note_usage(self, samples: dict[int, Usage]) -> None:
        """Newer memory and GPU samples of ranks of this subtree."""
        self.usage.update(samples)

    # What subclasses decide

    def accept(self, part: p.Part, rank: int) -> None:
        """Finished work of a child (its data written, unless `part.outputs` still hold it)."""
        raise NotImplementedError

    def chunk_done(self, chunk: Chunk, count: int) -> None:
        """`count` items of `chunk` are finished (sub-coordinators tell their parent)."""

    def job_given_up(self, job: int, message: str, dropped: list[Chunk]) -> None:
        """`job` failed here; `dropped` are its ranges that will never be computed."""
        raise NotImplementedError

    # Dispatch and stealing

    def send_chunk(self, worker: WorkerState, chunk: Chunk) -> None:
        self.watch(worker)
        self.transport.send(p.Task(chunk.id, chunk.job, chunk.offset, chunk.count), worker.rank)

    def top_up(self, worker: WorkerState, limit: int | None = None) -> None:
        """Fill the child's window (with at most `limit` chunks); ask for stolen work before it runs
        dry, so that it never waits."""
        if self.stopping:
            return
        now = self.clock()
        window = GROUP_WINDOW if worker.group else self.window
        if limit is not None:
            window = min(window, worker.waiting() + limit)
        while worker.waiting() < window:
            chunk = self.scheduler.next_chunk(worker, now)
            if chunk is None:
                break
            self.send_chunk(worker, chunk)
        self.starving.pop(worker.rank, None)
        self.low.pop(worker.rank, None)
        if worker.waiting() >= window or worker.rank in self.scheduler.stealing:
            return
        victim = self.scheduler.steal_for(worker, now) if self.window == WINDOW else None
        if victim is not None:
            log.debug("steal from %d for %d", victim.rank, worker.rank)
            self.transport.send(p.Steal(dict(worker.speed)), victim.rank)
        elif worker.in_flight:
            self.low[worker.rank] = None
        else:
            self.starving[worker.rank] = None

    def feed_hungry(self) -> None:
        """Work appeared in the queues: the children waiting for some get a chunk each, empty-handed
        first, then the rest of their windows; those still without work try to steal at once."""
        for hungry, limit in ((self.starving, 1), (self.low, None)):
            for _ in range(len(hungry)):
                if not hungry or not self.scheduler.has_work():
                    break
                self.top_up(self.workers[next(iter(hungry))], limit)
        self.retry_steals(RETRY_LIMIT)

    def retry_steals(self, limit: int) -> None:
        """Ask for stolen work for up to `limit` waiting children, while victims are worth it."""
        if self.stopping or self.window != WINDOW:
            return
        for hungry in (self.starving, self.low):
            for rank in list(islice(hungry, limit)):
                worker = self.workers[rank]
                victim = self.scheduler.steal_for(worker, self.clock())
                if victim is None:
                    break
                del hungry[rank]
                self.transport.send(p.Steal(dict(worker.speed)), victim.rank)

    # Watching

    def watch(self, worker: WorkerState) -> None:
        """Start the heartbeat clock of a child that gets work."""
        if not worker.in_flight or worker.rank not in self.last_seen:
            self.last_seen[worker.rank] = self.clock()
        if worker.rank not in self.watched:
            self.watched.add(worker.rank)
            heapq.heappush(self.deadlines, (self.last_seen[worker.rank] + self.timeout, worker.rank))

    def check_heartbeats(self, now: float) -> None:
        """Raise for a child that holds work and has been silent for the heartbeat timeout."""
        while self.deadlines and self.deadlines[0][0] <= now:
            _, rank = heapq.heappop(self.deadlines)
            self.watched.discard(rank)
            worker = self.workers[rank]
            if not worker.in_flight:
                continue  # watched again when it gets work
            last = self.last_seen.get(rank, now)
            if now - last > self.timeout:
                host = self.ranks.get(rank, {}).get("host", "?")
                raise WorkerLostError(
                    f"rank {rank} on {host} sent nothing for {self.timeout:.0f} s while holding work; "
                    "it has probably died"
                )
            self.watched.add(rank)
            heapq.heappush(self.deadlines, (last + self.timeout, rank))

    def duties(self, now: float) -> bool:
        """The periodic work of the loop; True when it was due."""
        if now < self.next_duty:
            return False
        self.next_duty = now + RETRY_SECONDS
        self.retry_steals(RETRY_LIMIT)
        self.check_heartbeats(now)
        return True

    # Stopping

    def stop_children(self, reason: str, receive: Callable[[], tuple[Any, int]]) -> None:
        """Send Stop to every child and handle messages until each has sent its Final."""
        self.stopping = True
        for rank in self.workers:
            self.transport.send(p.Stop(reason), rank)
        waiting = set(self.workers)
        deadline = self.clock() + FINAL_TIMEOUT
        poller = Poller()
        while waiting and self.clock() < deadline:
            message, source = receive()
            if message is None:
                poller.wait()
                continue
            poller.reset()
            self.handle(message, source)
            if isinstance(message, p.Final):
                waiting.discard(source)
        if waiting:
            log.warning("rank(s) %s did not report at the end", sorted(waiting))
        for worker in self.workers.values():
            self.ranks.setdefault(worker.rank, {}).setdefault("chunks", worker.chunks)
            self.ranks[worker.rank].setdefault("stolen_from", worker.stolen_from)
            self.ranks[worker.rank].setdefault("stolen_by", worker.stolen_by)
