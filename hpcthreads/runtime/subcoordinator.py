"""A sub-coordinator: schedules its own group of workers and trades work with its parent in large pieces.

Towards its children it is a `BaseDispatcher`, like rank 0: it cuts what it
holds into chunks sized to each worker, keeps two in flight per worker and
steals between them. Towards its parent it looks like one big worker: it
says hello for the whole group, receives shares of jobs (Tasks of about
GROUP_TARGET_SECONDS of the group's work, one not yet handed out at a time:
a short Batch says at once when a share has been handed out entirely),
reports its results merged in one Batch every `batch_seconds` (at once when
it has nothing left), and answers a steal with the thief's share of what it holds,
or, once it holds nothing unassigned, with what several workers give back. So rank
0 deals with a few messages per group and second, whatever the group's size.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from hpcthreads.runtime import devices
from hpcthreads.runtime import protocol as p
from hpcthreads.runtime.dispatch import BaseDispatcher, WorkerLostError
from hpcthreads.runtime.mpiutil import Poller
from hpcthreads.runtime.pacing import steal_share
from hpcthreads.runtime.scheduling import Chunk, JobQueue, WorkerState
from hpcthreads.runtime.usage import Usage, UsageSampler
from hpcthreads.workloads.base import BaseWorkload

log = logging.getLogger("hpcthreads")

# The thief's rank when a sub-coordinator steals from its workers for its parent
PARENT = -2
# Workers asked at once to give back for the parent (the thief is a group that may be idle)
PARENT_STEAL_FANOUT = 8
# A sub-coordinator's poll spins this long after a message (a worker waits for nothing from it: its
# window holds its next chunk), then sleeps: less spinning leaves the cores to the workers
SPIN_SECONDS = 0.0002
# Spreads the groups' reporting phases evenly: the first batch of rank r comes after frac(r * PHASE)
PHASE = (5**0.5 - 1) / 2


class SubCoordinator(BaseDispatcher):
    def __init__(
        self,
        transport: Any,
        workloads: list[BaseWorkload],
        rank: int,
        parent: int,
        children: list[int],
        target: float,
        heartbeat: float,
        batch_seconds: float,
        max_chunks: list[int] | None = None,
        heartbeat_timeout: float = 120.0,
        startup_timeout: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        limits = max_chunks or [1 << 62] * len(workloads)
        queues = [
            JobQueue(i, w.job.name, 0, w.job.batch_size, w.job.priority, w.job.gpu_preferred, limits[i])
            for i, w in enumerate(workloads)
        ]
        super().__init__(
            transport, workloads, children, queues, target, heartbeat_timeout, startup_timeout, clock
        )
        self.rank = rank
        self.parent = parent
        self.heartbeat = heartbeat
        self.batch_seconds = batch_seconds
        # Parent chunk id -> its items neither credited nor given back yet
        self.outstanding: dict[int, int] = {}
        # Parent chunks with no range left unassigned here, not yet reported as taken
        self.taken: list[int] = []
        self.reported_taken: set[int] = set()
        self.credits: dict[int, int] = {}
        self.parts: dict[int, p.Part] = {}
        # A full batch now (the group ran out of work), or a short one that only says what was taken
        self.flush_now = False
        self.taken_now = False
        # Groups report out of phase with each other, so that rank 0 sees no bursts
        self.next_flush = clock() + batch_seconds * ((rank * PHASE) % 1.0)
        self.last_sent = clock()
        self.reported_busy = 0.0
        self.reported_failures = 0
        self.given_up: set[int] = set()
        # Workers asked to give back for the parent, and what they have given so far
        self.for_parent: set[int] = set()
        self.for_parent_pieces: list[tuple[int, int, int]] = []
        self.stop: p.Stop | None = None
        # Samples not yet passed up; this rank's own process is sampled too
        self.unsent_usage: dict[int, Usage] = {}
        self.sampler = UsageSampler()

    def send_up(self, message: Any) -> None:
        self.transport.send(message, self.parent)
        self.last_sent = self.clock()

    # The loop

    def serve(self) -> None:
        """Greet the group, say hello for it, then coordinate it until the parent says stop."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, lambda *_: None)  # rank 0 decides what a signal means
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        try:
            self.greet()
            for worker in self.workers.values():
                self.top_up(worker)  # nothing to give yet: every child waits as starving
            self.send_up(self._hello())
            poller = Poller(spin=SPIN_SECONDS)
            while self.stop is None:
                message, source = self.transport.receive()
                if message is None:
                    poller.wait()
                else:
                    poller.reset()
                    self.route(message, source)
                self.sub_duties(self.clock())
        except WorkerLostError as exc:
            # Rank 0 records the reason and ends the run
            self.send_up(p.Lost(str(exc)))
            raise
        self.stop_children(self.stop.reason, self.transport.receive)
        self.flush()
        stats = {
            "host": socket.gethostname(),
            "device": f"sub-coordinator of {len(self.workers)} ranks",
            "backend": "",
            "cuda_visible_devices": devices.visible_setting(),
            "items": 0,
            "busy": 0.0,
            "chunks": 0,
            "cpu": time.process_time() - cpu_start,
            "wall": time.perf_counter() - wall_start,
        }
        self.send_up(p.Final(self.rank, stats, self.ranks, self.chunks, self.unrecorded))

    def _hello(self) -> p.Hello:
        workers = self.workers.values()
        return p.Hello(
            self.rank,
            socket.gethostname(),
            "",
            f"sub-coordinator of {len(self.workers)} ranks",
            False,
            os.getpid(),
            group=True,
            capacity=sum(w.capacity for w in workers),
            gpus=sum(w.is_gpu for w in workers),
            ranks=self.ranks,
        )

    def route(self, message: Any, source: int) -> None:
        if source != self.parent:
            self.handle(message, source)
        elif isinstance(message, p.Task):
            self.on_share(message)
        elif isinstance(message, p.Steal):
            self.on_parent_steal(message.speeds)
        elif isinstance(message, p.Stop):
            self.stop = message

    def sub_duties(self, now: float) -> None:
        self.duties(now)
        if self.flush_now or (now >= self.next_flush and (self.credits or self.parts or self.taken)):
            self.flush()
        elif self.taken_now and self.speeds():
            # Said once the group's speed is known: the parent sizes the next share from it
            self.taken_now = False
            self.send_up(p.Batch(self.rank, [], [], self.taken, self.speeds()))
            self.taken = []
        if self.outstanding and now - self.last_sent > self.heartbeat:
            self.send_up(p.Heartbeat(self.rank, self.sampler.sample(now)))

    # Work from the parent

    def on_share(self, task: p.Task) -> None:
        self.outstanding[task.chunk] = task.count
        queue = self.scheduler.jobs[task.job]
        if queue.failed is not None:
            self.credit_parent(task.chunk, task.count)
            return
        queue.put_back(Chunk(0, task.job, task.offset, task.count, parent=task.chunk), front=False)
        self.feed_hungry()

    def on_parent_steal(self, speeds: dict[int, float]) -> None:
        """A share of the largest unassigned range goes back; else the workers with most work left are
        asked (several at once: the thief is a whole group); else nothing.

        `speeds` are the thief's: the shares follow `steal_share` as between workers.
        """
        found = max(
            ((queue, chunk) for queue in self.scheduler.jobs for chunk in queue.returned),
            key=lambda pair: pair[1].count,
            default=None,
        )
        if found is not None:
            queue, piece = found
            own = sum(w.speed.get(piece.job, 0.0) for w in self.workers.values())
            amount = int(piece.count * steal_share(speeds.get(piece.job), own))
            if amount >= 1:
                piece.count -= amount
                queue.returned_items -= amount
                self.give_up_to_parent([(piece.parent, piece.offset + piece.count, amount)])
                return
        now = self.clock()
        asked = 0
        while asked < PARENT_STEAL_FANOUT:
            victim = self.scheduler.victim_for(None, now, speeds)
            if victim is None:
                break
            self.scheduler.reserve(victim, PARENT)
            self.transport.send(p.Steal(speeds), victim.rank)
            self.for_parent.add(victim.rank)
            asked += 1
        if not asked:
            self.send_up(p.GiveBack(-1))

    def on_give_back(self, worker: WorkerState, message: p.GiveBack) -> None:
        if worker.thief != PARENT:
            super().on_give_back(worker, message)
            return
        self.for_parent.discard(worker.rank)
        if message.count:
            parent = worker.in_flight[message.chunk].parent
            self.scheduler.given_back(worker, message.chunk, message.offset, message.count, requeue=False)
            self.for_parent_pieces.append((parent, message.offset, message.count))
        else:
            self.scheduler.refused(worker)
        if not self.for_parent:
            # Every worker asked has answered: their parts go up in one message
            pieces, self.for_parent_pieces = self.for_parent_pieces, []
            if pieces:
                self.give_up_to_parent(pieces)
            else:
                self.send_up(p.GiveBack(-1))

    def send_chunk(self, worker: WorkerState, chunk: Chunk) -> None:
        super().send_chunk(worker, chunk)
        queue = self.scheduler.jobs[chunk.job]
        if chunk.parent not in self.reported_taken and all(
            piece.parent != chunk.parent for piece in queue.returned
        ):
            # All of the parent's chunk is handed out: report it at once, so the next share comes
            self.reported_taken.add(chunk.parent)
            self.taken.append(chunk.parent)
            self.taken_now = True

    def give_up_to_parent(self, pieces: list[tuple[int, int, int]]) -> None:
        """Return (parent chunk, offset, count) ranges to the parent, in one message."""
        for parent, _, count in pieces:
            left = self.outstanding.get(parent, 0) - count
            if left > 0:
                self.outstanding[parent] = left
            else:
                self.outstanding.pop(parent, None)
        (parent, offset, count), *more = pieces
        self.send_up(p.GiveBack(parent, offset, count, more))

    # Results to the parent

    def chunk_done(self, chunk: Chunk, count: int) -> None:
        self.credit_parent(chunk.parent, count)

    def credit_parent(self, parent: int, count: int) -> None:
        self.credits[parent] = self.credits.get(parent, 0) + count
        left = self.outstanding.get(parent, 0) - count
        if left > 0:
            self.outstanding[parent] = left
        else:
            self.outstanding.pop(parent, None)
            self.reported_taken.discard(parent)
            # With nothing left the group is idle: everything is reported at once
            self.flush_now = not self.outstanding

    def accept(self, part: p.Part, rank: int) -> None:
        held = self.parts.get(part.job)
        if held is None:
            self.parts[part.job] = p.Part(
                part.job, list(part.spans), part.summary, {k: list(v) for k, v in part.extra.items()},
                list(part.outputs), part.started, part.ended, list(part.digests),
            )  # fmt: skip
            return
        held.spans.extend(part.spans)
        held.summary = self.workloads[part.job].merge(held.summary, part.summary)
        for name, rows in part.extra.items():
            held.extra.setdefault(name, []).extend(rows)
        held.outputs.extend(part.outputs)
        held.digests.extend(part.digests)
        held.started, held.ended = min(held.started, part.started), max(held.ended, part.ended)

    def job_given_up(self, job: int, message: str, dropped: list[Chunk]) -> None:
        for chunk in dropped:
            self.credit_parent(chunk.parent, chunk.count)
        if job not in self.given_up:
            self.given_up.add(job)
            self.send_up(p.JobFailed(job, message))

    def note_usage(self, samples: dict[int, Usage]) -> None:
        """Kept, and passed up with the next batch (the newest sample of each rank only)."""
        super().note_usage(samples)
        self.unsent_usage.update(samples)

    def speeds(self) -> dict[int, float]:
        """The group's throughput per job: the sum of its workers' measured speeds."""
        speeds = {}
        for job in range(len(self.workloads)):
            total = sum(w.speed.get(job, 0.0) for w in self.workers.values())
            if total > 0:
                speeds[job] = total
        return speeds

    def flush(self) -> None:
        """Send the batch: credits, merged parts with coalesced ranges, the group's speeds."""
        self.flush_now = self.taken_now = False
        self.next_flush = self.clock() + self.batch_seconds
        if not (self.credits or self.parts or self.taken):
            return
        speeds = self.speeds()
        busy = sum(w.busy for w in self.workers.values())
        parts = list(self.parts.values())
        for part in parts:
            part.spans = coalesce(part.spans)
        if own := self.sampler.sample():
            self.unsent_usage[self.rank] = own
        batch = p.Batch(
            self.rank, list(self.credits.items()), parts, self.taken, speeds, busy - self.reported_busy,
            self.failures - self.reported_failures, self.unsent_usage,
        )  # fmt: skip
        self.reported_busy, self.reported_failures = busy, self.failures
        self.credits, self.parts, self.taken, self.unsent_usage = {}, {}, [], {}
        self.send_up(batch)


def coalesce(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, count) ranges sorted, with adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for offset, count in sorted(spans):
        if out and out[-1][0] + out[-1][1] == offset:
            out[-1] = (out[-1][0], out[-1][1] + count)
        else:
            out.append((offset, count))
    return out
