"""Chunking, priorities, GPU routing and stealing: a pure module, no MPI.

The coordinator feeds this module events (a worker joined, a chunk finished,
a chunk was given back or failed) and asks it what to send where. Every
decision depends only on those events, so the policy is unit-tested without
MPI and the results never depend on it (chunk results merge exactly).

No operation costs more than O(log N) in the number of workers N: victims
are kept in a heap keyed by the time their work in flight should end (stale
entries are skipped when they surface), the thief of every pending steal in
a map, and the items still to hand out in running totals.

A worker's remaining work is estimated from when its current chunk started
(the previous one's result, or the send to an idle worker) and its measured
speed, so a worker near the end of its chunk is not taken for one that has
just begun. All estimates shrink at the same rate as time passes, which is
why the heap never needs updating between a worker's own events.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from hpcthreads.config import PRIORITIES
from hpcthreads.runtime.pacing import FIRST_SHARE, MIN_STEAL_SECONDS, TARGET_SECONDS, steal_share
from hpcthreads.runtime.victims import VictimHeap

# Chunks in flight per worker: one running, one waiting, so no worker waits
WINDOW = 2
# Weight of the newest measurement in a worker's speed estimate
SPEED_WEIGHT = 0.5


@dataclass
class Chunk:
    """A range of one job's items, sent to one worker (or a group's share, to its sub-coordinator).

    `count` is what is still outstanding: a group reports its share done in
    parts, and given-back parts are taken off. `parent` is the id of the
    chunk of the level above that this range belongs to (sub-coordinators).
    """

    id: int
    job: int
    offset: int
    count: int
    rank: int = -1
    attempts: int = 0
    sent_at: float = 0.0
    stolen: bool = False
    parent: int = 0
    # A group's chunk whose items its sub-coordinator has all handed out to its workers
    taken: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.count


@dataclass
class JobQueue:
    """What remains to hand out of one job: fresh items from `cursor`, and returned ranges."""

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
    # Running total of the counts in `returned`
    returned_items: int = 0

    @property
    def unassigned(self) -> int:
        return 0 if self.failed else self.size - self.cursor + self.returned_items

    @property
    def finished(self) -> bool:
        return self.failed is not None or self.done >= self.size

    def put_back(self, chunk: Chunk, front: bool = True) -> None:
        """Queue a range to hand out again (a retry, a stolen part, a resumed gap, a granted share)."""
        if front:
            self.returned.appendleft(chunk)
        else:
            self.returned.append(chunk)
        self.returned_items += chunk.count

    def drop(self) -> list[Chunk]:
        """Take every returned range out (a failed job)."""
        dropped = list(self.returned)
        self.returned.clear()
        self.returned_items = 0
        return dropped


@dataclass(eq=False)
class WorkerState:
    """The coordinator's view of one worker, or of one group behind a sub-coordinator."""

    rank: int
    is_gpu: bool = False
    in_flight: dict[int, Chunk] = field(default_factory=dict)
    speed: dict[int, float] = field(default_factory=dict)
    steal_pending: bool = False
    # Answered a steal with nothing: no victim again until its next event
    refused: bool = False
    thief: int = -1
    busy: float = 0.0
    items: int = 0
    chunks: int = 0
    stolen_from: int = 0
    stolen_by: int = 0
    # Workers behind this rank (1 for a worker; a group's size for a sub-coordinator)
    capacity: int = 1
    # A sub-coordinator standing for a group: its window counts chunks not yet handed out in it
    group: bool = False
    # When the work in flight should end (see the module's docstring)
    finish_at: float = 0.0

    def work_seconds(self) -> float:
        """Seconds of the work in flight at the measured speeds (inf while a speed is unknown)."""
        total = 0.0
        for chunk in self.in_flight.values():
            speed = self.speed.get(chunk.job)
            total += chunk.count / speed if speed else math.inf
        return total

    def remaining_seconds(self, now: float = 0.0) -> float:
        """Estimated work left in flight on this worker at `now`."""
        if not self.in_flight:
            return 0.0
        return max(0.0, self.finish_at - now)

    def waiting(self) -> int:
        """Chunks that count against the window: all in flight, or for a group those not yet taken."""
        if not self.group:
            return len(self.in_flight)
        return sum(not chunk.taken for chunk in self.in_flight.values())


class Scheduler:
    """Hands out chunks by priority and speed; decides whom to steal from."""

    def __init__(
        self,
        jobs: list[JobQueue],
        workers: list[WorkerState],
        target: float = TARGET_SECONDS,
        steal_seconds: float | None = None,
    ):
        self.jobs = jobs
        self.workers = {w.rank: w for w in workers}
        self.target = target
        # Tail chunks scale with the target, so a long target never ends in tiny chunks
        self.min_seconds = MIN_STEAL_SECONDS * target / TARGET_SECONDS
        # A steal is worth it from this much difference on (between groups: MIN_STEAL_SECONDS)
        self.steal_seconds = self.min_seconds if steal_seconds is None else steal_seconds
        self._next_id = 0
        self._any_gpu = any(w.is_gpu for w in workers)
        self._orders: tuple[list[JobQueue], list[JobQueue]] = self._job_orders()
        # Workers behind every rank this scheduler feeds (see `workers_changed`)
        self.capacity = sum(w.capacity for w in workers)
        self.victims = VictimHeap()
        # Thief rank -> victim rank, for every steal asked and not yet answered
        self.stealing: dict[int, int] = {}
        self.in_flight = 0
        self.stolen = 0

    # Choosing what to send

    @property
    def any_gpu(self) -> bool:
        return self._any_gpu

    @any_gpu.setter
    def any_gpu(self, value: bool) -> None:
        self._any_gpu = value
        self._orders = self._job_orders()

    def workers_changed(self) -> None:
        """The workers said what they are (GPU or not, group sizes): recompute what depends on it."""
        self.capacity = sum(w.capacity for w in self.workers.values())
        self.any_gpu = any(w.is_gpu for w in self.workers.values())

    def _job_orders(self) -> tuple[list[JobQueue], list[JobQueue]]:
        """(order for GPU workers, order for CPU workers)."""
        by_priority = sorted(self.jobs, key=lambda j: (PRIORITIES.index(j.priority), j.index))
        if not self._any_gpu:
            return by_priority, by_priority
        preferred = [j for j in by_priority if j.gpu_preferred]
        others = [j for j in by_priority if not j.gpu_preferred]
        # GPU workers take GPU work first; CPU workers take it only when nothing else is left
        return preferred + others, others + preferred

    def order_for(self, worker: WorkerState) -> list[JobQueue]:
        """Jobs in the order this worker should take them."""
        return self._orders[0] if worker.is_gpu else self._orders[1]

    def has_work(self) -> bool:
        return any(job.unassigned for job in self.jobs)

    def next_chunk(self, worker: WorkerState, now: float = 0.0) -> Chunk | None:
        """The next chunk for `worker`, or None when no job has unassigned items."""
        for job in self.order_for(worker):
            if job.unassigned == 0:
                continue
            chunk = self._take(job, worker)
            if chunk is not None:
                chunk.rank, chunk.sent_at = worker.rank, now
                worker.in_flight[chunk.id] = chunk
                self.in_flight += 1
                speed = worker.speed.get(chunk.job)
                added = chunk.count / speed if speed else math.inf
                worker.finish_at = (max(worker.finish_at, now) if len(worker.in_flight) > 1 else now) + added
                self._changed(worker)
                return chunk
        return None

    def _take(self, job: JobQueue, worker: WorkerState) -> Chunk | None:
        if job.returned:
            return self._take_returned(job, worker)
        count = min(self.chunk_size(job, worker), job.size - job.cursor)
        chunk = Chunk(self._new_id(), job.index, job.cursor, count)
        job.cursor += count
        return chunk

    def _take_returned(self, job: JobQueue, worker: WorkerState) -> Chunk | None:
        # Retried and stolen chunks avoid the rank they came from when another rank exists
        for i, chunk in enumerate(job.returned):
            if chunk.rank == worker.rank and len(self.workers) > 1:
                continue
            size = self.chunk_size(job, worker)
            if chunk.count > size and not chunk.stolen:
                # A large returned range (a resumed gap, a granted share) is cut like fresh work
                job.returned[i] = Chunk(
                    0, chunk.job, chunk.offset + size, chunk.count - size, chunk.rank, chunk.attempts,
                    parent=chunk.parent,
                )  # fmt: skip
                chunk = Chunk(
                    0, chunk.job, chunk.offset, size, chunk.rank, chunk.attempts, parent=chunk.parent
                )
            else:
                del job.returned[i]
            job.returned_items -= chunk.count
            chunk.id = self._new_id()
            worker.stolen_by += chunk.stolen
            return chunk
        return None

    def chunk_size(self, job: JobQueue, worker: WorkerState) -> int:
        """Items for about `target` seconds on this worker, smaller at the tail.

        Near the end a chunk is at most a share of what is left, so that all
        workers finish together, but never less than `min_seconds` of work
        (MIN_STEAL_SECONDS at the default target).
        A group's chunk (its sub-coordinator's share) is sized the same way
        from the group's speed; before it is measured, a FIRST_SHARE of the
        group's part of the job (at least a batch per worker): a first share of
        a batch per worker would be gone before the group's speed is known,
        and all groups would ask again at once.
        """
        speed = worker.speed.get(job.index)
        share = math.ceil(job.unassigned * worker.capacity / (2 * max(1, self.capacity)))
        if speed is not None:
            size = int(speed * self.target)
        elif worker.group:
            size = max(job.batch_size * worker.capacity, math.ceil(2 * share * FIRST_SHARE))
        else:
            size = job.batch_size
        floor = 1 if speed is None else int(speed * self.min_seconds)
        return max(1, min(size, job.max_chunk * worker.capacity, max(share, floor)))

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _changed(self, worker: WorkerState) -> None:
        self.victims.update(worker)

    def _restart(self, worker: WorkerState, now: float) -> None:
        """The estimate once the worker (or group) goes on from `now` with what it has in flight."""
        worker.finish_at = now + worker.work_seconds()
        self._changed(worker)

    # Events

    def finished(
        self, worker: WorkerState, chunk_id: int, count: int, seconds: float, now: float = 0.0
    ) -> Chunk:
        """A worker reports its chunk done: `count` items in `seconds` of compute; its next starts now."""
        chunk = worker.in_flight.pop(chunk_id)
        self.in_flight -= 1
        self._account(worker, chunk, count)
        worker.chunks += 1
        worker.busy += seconds
        if seconds > 0 and count > 0:
            measured = count / seconds
            old = worker.speed.get(chunk.job)
            worker.speed[chunk.job] = measured if old is None else old + SPEED_WEIGHT * (measured - old)
        worker.refused = False
        self._restart(worker, now)
        return chunk

    def credit(self, worker: WorkerState, chunk_id: int, count: int, now: float = 0.0) -> Chunk | None:
        """A group reports `count` more items of its chunk done; the chunk ends when none is left."""
        chunk = worker.in_flight.get(chunk_id)
        if chunk is None:
            return None  # a chunk of a failed job, already dropped
        chunk.count -= count
        self._account(worker, chunk, count)
        if chunk.count <= 0:
            del worker.in_flight[chunk_id]
            self.in_flight -= 1
            worker.chunks += 1
        worker.refused = False
        self._restart(worker, now)
        return chunk

    def take(self, worker: WorkerState, chunk_id: int) -> None:
        """A group has handed out all of its chunk `chunk_id`: a slot of its window is free."""
        chunk = worker.in_flight.get(chunk_id)
        if chunk is not None:
            chunk.taken = True

    def _account(self, worker: WorkerState, chunk: Chunk, count: int) -> None:
        self.jobs[chunk.job].done += count
        worker.items += count

    def set_speed(self, worker: WorkerState, job: int, speed: float, now: float = 0.0) -> None:
        """A group's measured throughput for `job` (items per second of wall time)."""
        if speed > 0 and worker.speed.get(job) != speed:
            worker.speed[job] = speed
            self._restart(worker, now)

    def failed(self, worker: WorkerState, chunk_id: int, message: str, now: float = 0.0) -> bool:
        """A chunk raised; True when it is queued again, False when its job fails."""
        chunk = worker.in_flight.pop(chunk_id)
        self.in_flight -= 1
        self._restart(worker, now)
        job = self.jobs[chunk.job]
        if job.failed is not None:
            return False  # given up already: nothing of it is queued again
        if chunk.attempts >= 1:
            self.fail_job(chunk.job, message)
            return False
        chunk.attempts += 1
        job.put_back(chunk)
        return True

    def fail_job(self, index: int, message: str) -> list[Chunk]:
        """Give up a job: nothing more of it is handed out. Returns the ranges it still had queued."""
        job = self.jobs[index]
        if job.failed is None:
            job.failed = message
        return job.drop()

    def given_back(
        self, victim: WorkerState, chunk_id: int, offset: int, count: int, requeue: bool = True
    ) -> int:
        """The victim returned [offset, offset+count) of chunk `chunk_id` (its tail, or for a group any
        part of it), queued again unless `requeue` is False (it goes to a parent instead).
        Returns the rank of the thief that asked for it (or -1)."""
        thief = self._answered(victim)
        if count <= 0:
            return thief
        chunk = victim.in_flight[chunk_id]
        chunk.count -= count
        if chunk.count <= 0:
            del victim.in_flight[chunk_id]
            self.in_flight -= 1
        speed = victim.speed.get(chunk.job)
        if speed:
            victim.finish_at -= count / speed
        victim.stolen_from += 1
        self.stolen += 1
        if requeue:
            returned = Chunk(0, chunk.job, offset, count, rank=victim.rank, stolen=True, parent=chunk.parent)
            self.jobs[chunk.job].put_back(returned)
        self._changed(victim)
        return thief

    def refused(self, victim: WorkerState) -> int:
        """The victim had nothing worth giving; returns the thief that asked (or -1)."""
        thief = self._answered(victim)
        victim.refused = True
        self._changed(victim)
        return thief

    def _answered(self, victim: WorkerState) -> int:
        victim.steal_pending = False
        thief, victim.thief = victim.thief, -1
        if self.stealing.get(thief) == victim.rank:
            del self.stealing[thief]
        return thief

    def steal_for(self, thief: WorkerState, now: float = 0.0) -> WorkerState | None:
        """The victim to ask for work on behalf of an idle `thief`, if any is worth it."""
        if thief.rank in self.stealing:
            return None
        victim = self.victim_for(thief, now)
        if victim is not None:
            self.reserve(victim, thief.rank)
        return victim

    def reserve(self, victim: WorkerState, thief: int) -> None:
        """Record a steal asked of `victim` for `thief` (a rank, or a coordinator's parent)."""
        victim.steal_pending = True
        victim.thief = thief
        self.stealing[thief] = victim.rank
        self._changed(victim)

    def victim_for(
        self, thief: WorkerState | None, now: float = 0.0, speeds: dict[int, float] | None = None
    ) -> WorkerState | None:
        """The worker with the most work left, if splitting it is worth it.

        `thief` None: on behalf of a parent, whose thief has `speeds`. Worth it
        when the thief, having finished its own work and its share of the
        victim's (`steal_share`), still ends clearly before the victim would.
        """
        rank = self.victims.best(exclude=thief.rank if thief is not None else -1)
        if rank is None:
            return None
        victim = self.workers[rank]
        job = next(iter(victim.in_flight.values())).job
        thief_speed = thief.speed.get(job) if thief is not None else (speeds or {}).get(job)
        share = steal_share(thief_speed, victim.speed.get(job))
        mine = thief.remaining_seconds(now) if thief is not None else 0.0
        if victim.remaining_seconds(now) * share < mine + self.steal_seconds:
            return None
        return victim

    def all_finished(self) -> bool:
        return all(job.finished for job in self.jobs)
