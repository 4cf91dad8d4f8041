"""Chunking, priorities, GPU routing and stealing: a pure module, no MPI.

The coordinator feeds this module events (a worker joined, a chunk finished,
a chunk was given back or failed) and asks it what to send where. Every
decision depends only on those events, so the policy is unit-tested without
MPI and the results never depend on it (chunk results merge exactly).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from hpcthreads.config import PRIORITIES

# Aim for chunks of about this much work, and at least this much at the tail
TARGET_SECONDS = 0.5
MIN_STEAL_SECONDS = 0.05
# Chunks in flight per worker: one running, one waiting, so no worker waits
WINDOW = 2
# Weight of the newest measurement in a worker's speed estimate
SPEED_WEIGHT = 0.5


@dataclass
class Chunk:
    """A contiguous range of one job's items, sent to one worker."""

    id: int
    job: int
    offset: int
    count: int
    rank: int = -1
    attempts: int = 0
    sent_at: float = 0.0
    stolen: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.count


@dataclass
class JobQueue:
    """What remains to hand out of one job."""

    index: int
    name: str
    size: int
    batch_size: int
    priority: str = "normal"
    gpu_preferred: bool = False
    max_chunk: int = 1 << 40
    cursor: int = 0
    returned: deque[Chunk] = field(default_factory=deque)
    done: int = 0
    failed: str | None = None

    @property
    def unassigned(self) -> int:
        return 0 if self.failed else self.size - self.cursor + sum(c.count for c in self.returned)

    @property
    def finished(self) -> bool:
        return self.failed is not None or self.done >= self.size


@dataclass
class WorkerState:
    rank: int
    is_gpu: bool = False
    in_flight: dict[int, Chunk] = field(default_factory=dict)
    speed: dict[int, float] = field(default_factory=dict)
    steal_pending: bool = False
    thief: int = -1
    busy: float = 0.0
    items: int = 0
    chunks: int = 0
    stolen_from: int = 0
    stolen_by: int = 0

    def remaining_seconds(self, now: float) -> float:
        """Estimated work left in flight on this worker."""
        total = 0.0
        for chunk in self.in_flight.values():
            speed = self.speed.get(chunk.job)
            total += chunk.count / speed if speed else math.inf
        return total


class Scheduler:
    """Hands out chunks by priority and speed; decides whom to steal from."""

    def __init__(self, jobs: list[JobQueue], workers: list[WorkerState], target: float = TARGET_SECONDS):
        self.jobs = jobs
        self.workers = {w.rank: w for w in workers}
        self.target = target
        self._next_id = 0
        self.any_gpu = any(w.is_gpu for w in workers)

    # Choosing what to send

    def order_for(self, worker: WorkerState) -> list[JobQueue]:
        """Jobs in the order this worker should take them."""
        by_priority = sorted(self.jobs, key=lambda j: (PRIORITIES.index(j.priority), j.index))
        if not self.any_gpu:
            return by_priority
        preferred = [j for j in by_priority if j.gpu_preferred]
        others = [j for j in by_priority if not j.gpu_preferred]
        # GPU workers take GPU work first; CPU workers take it only when nothing else is left
        return preferred + others if worker.is_gpu else others + preferred

    def next_chunk(self, worker: WorkerState, now: float = 0.0) -> Chunk | None:
        """The next chunk for `worker`, or None when no job has unassigned items."""
        for job in self.order_for(worker):
            if job.unassigned == 0:
                continue
            chunk = self._take(job, worker)
            if chunk is not None:
                chunk.rank, chunk.sent_at = worker.rank, now
                worker.in_flight[chunk.id] = chunk
                return chunk
        return None

    def _take(self, job: JobQueue, worker: WorkerState) -> Chunk | None:
        if job.returned:
            # Retried and stolen chunks avoid the rank they came from when another rank exists
            for i, chunk in enumerate(job.returned):
                if chunk.rank != worker.rank or len(self.workers) == 1:
                    size = self.chunk_size(job, worker)
                    if chunk.count > size and not chunk.stolen:
                        # A large returned range (a resumed gap) is cut like fresh work
                        rest = Chunk(
                            0,
                            chunk.job,
                            chunk.offset + size,
                            chunk.count - size,
                            chunk.rank,
                            chunk.attempts,
                            stolen=chunk.stolen,
                        )
                        job.returned[i] = rest
                        chunk = Chunk(
                            0, chunk.job, chunk.offset, size, chunk.rank, chunk.attempts, stolen=chunk.stolen
                        )
                    else:
                        del job.returned[i]
                    chunk.id = self._new_id()
                    worker.stolen_by += chunk.stolen
                    return chunk
            return None
        count = min(self.chunk_size(job, worker), job.size - job.cursor)
        chunk = Chunk(self._new_id(), job.index, job.cursor, count)
        job.cursor += count
        return chunk

    def chunk_size(self, job: JobQueue, worker: WorkerState) -> int:
        """Items for about `target` seconds on this worker, smaller at the tail.

        Near the end a chunk is at most a share of what is left, so that all
        workers finish together, but never less than MIN_STEAL_SECONDS of work.
        """
        speed = worker.speed.get(job.index)
        size = job.batch_size if speed is None else int(speed * self.target)
        share = math.ceil(job.unassigned / (2 * max(1, len(self.workers))))
        floor = 1 if speed is None else int(speed * MIN_STEAL_SECONDS)
        return max(1, min(size, job.max_chunk, max(share, floor)))

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # Events

    def finished(self, worker: WorkerState, chunk_id: int, count: int, seconds: float) -> Chunk:
        """A worker reports `count` items of a chunk done in `seconds` of compute."""
        chunk = worker.in_flight.pop(chunk_id)
        job = self.jobs[chunk.job]
        job.done += count
        worker.items += count
        worker.chunks += 1
        worker.busy += seconds
        if seconds > 0 and count > 0:
            measured = count / seconds
            old = worker.speed.get(chunk.job)
            worker.speed[chunk.job] = measured if old is None else old + SPEED_WEIGHT * (measured - old)
        return chunk

    def failed(self, worker: WorkerState, chunk_id: int, message: str) -> bool:
        """A chunk raised; True when it is queued again, False when its job fails."""
        chunk = worker.in_flight.pop(chunk_id)
        job = self.jobs[chunk.job]
        if chunk.attempts >= 1:
            job.failed = message
            job.returned.clear()
            return False
        chunk.attempts += 1
        job.returned.appendleft(chunk)
        return True

    def given_back(self, victim: WorkerState, chunk_id: int, offset: int, count: int) -> int:
        """The victim shortened chunk `chunk_id`, returning [offset, offset+count).

        Returns the rank of the thief that asked for it (or -1).
        """
        victim.steal_pending = False
        thief, victim.thief = victim.thief, -1
        if count <= 0:
            return thief
        chunk = victim.in_flight[chunk_id]
        if offset == chunk.offset:
            del victim.in_flight[chunk_id]
        else:
            chunk.count = offset - chunk.offset
        victim.stolen_from += 1
        self.jobs[chunk.job].returned.appendleft(
            Chunk(0, chunk.job, offset, count, rank=victim.rank, stolen=True)
        )
        return thief

    def refused(self, victim: WorkerState) -> None:
        victim.steal_pending = False
        victim.thief = -1

    def steal_for(self, thief: WorkerState, now: float = 0.0) -> WorkerState | None:
        """The victim to ask for work on behalf of an idle `thief`, if any is worth it."""
        if any(w.thief == thief.rank for w in self.workers.values()):
            return None
        victim = self.victim_for(thief, now)
        if victim is not None:
            victim.steal_pending = True
            victim.thief = thief.rank
        return victim

    def victim_for(self, thief: WorkerState, now: float = 0.0) -> WorkerState | None:
        """The worker with the most work left, if it is worth splitting."""
        candidates = [
            w for w in self.workers.values() if w is not thief and w.in_flight and not w.steal_pending
        ]
        if not candidates:
            return None
        victim = max(candidates, key=lambda w: (w.remaining_seconds(now), -w.rank))
        # Worth it only if the victim has clearly more left than the thief
        if victim.remaining_seconds(now) < thief.remaining_seconds(now) + MIN_STEAL_SECONDS:
            return None
        return victim

    def all_finished(self) -> bool:
        return all(job.finished for job in self.jobs)
