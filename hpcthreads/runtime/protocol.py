"""Messages between coordinators and workers; no MPI calls here.

Every message is a small dataclass sent with its own tag. A run is a tree:
rank 0 at the root, workers at the leaves and, on large runs,
sub-coordinators in between (one per node by default, see topology.py). Each
rank talks only to its parent and its children; the parent's side lives in
coordinator.py (and subcoordinator.py, which is both), the child's in
worker.py. They mirror each other:

    child                       parent
    Hello            ->         (registers the child and what is behind it)
                     <-         Task (up to WINDOW in flight; to a group, its share)
    Result / Failure ->         (merges, writes, sends the next Task)
    Batch            ->         (a group's results since its last batch, merged)
                     <-         Steal (when another child is idle)
    GiveBack         ->         (re-queues the returned range; count 0: nothing to give)
    Heartbeat        ->         (while a long chunk runs)
    (Result, Batch and Heartbeat also carry the sender's memory and GPU samples, see usage.py)
    JobFailed / Lost ->         (a group gave a job up / cannot go on)
                     <-         Stop
    Final            ->         (per-rank accounting, for a group with its ranks' and chunks')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpcthreads.runtime.usage import Usage
from hpcthreads.workloads.base import ChunkOutput


@dataclass
class Hello:
    rank: int
    host: str
    backend: str
    device: str
    is_gpu: bool
    pid: int = 0
    cuda_visible_devices: str = "(unset)"
    # For a sub-coordinator: the workers behind it, how many have a GPU, and every rank's Hello fields
    group: bool = False
    capacity: int = 1
    gpus: int = 0
    ranks: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Task:
    chunk: int
    job: int
    offset: int
    count: int


@dataclass
class Result:
    chunk: int
    job: int
    offset: int
    count: int
    seconds: float
    started: float
    ended: float
    output: ChunkOutput | None = None
    # The worker's memory (and GPU) figures, at most once a second: None in between
    usage: Usage | None = None


@dataclass
class Part:
    """Finished ranges of one job, merged: what a group reports, and what a ledger line holds."""

    job: int
    spans: list[tuple[int, int]]
    summary: Any
    extra: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    # Chunk outputs whose per-item arrays rank 0 still has to write (gather mode)
    outputs: list[ChunkOutput] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    # (offset, count, data digest) of each chunk with per-item data
    digests: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass
class Batch:
    """A group's progress since its last batch.

    `credits` are (chunk id, items) of the parent's chunks: items done, or
    dropped with a failed job. `taken` are the parent's chunks the group has
    handed out entirely to its workers (the parent may send the next).
    `speeds` is the group's throughput per job.
    """

    rank: int
    credits: list[tuple[int, int]]
    parts: list[Part]
    taken: list[int] = field(default_factory=list)
    speeds: dict[int, float] = field(default_factory=dict)
    busy: float = 0.0
    failures: int = 0
    # The newest samples of the group's ranks (the sub-coordinator's own too) since the last batch
    usage: dict[int, Usage] = field(default_factory=dict)


@dataclass
class Failure:
    chunk: int
    rank: int
    host: str
    error: str
    traceback: str


@dataclass
class JobFailed:
    job: int
    message: str


@dataclass
class Lost:
    """A sub-coordinator cannot go on (a silent worker, a worker that never started)."""

    reason: str


@dataclass
class Steal:
    """Give back part of your unstarted work at the next sub-batch boundary.

    `speeds` are the thief's items per second per job: the victim keeps a
    part in proportion to its own speed (`scheduling.steal_share`).
    """

    speeds: dict[int, float] = field(default_factory=dict)


@dataclass
class GiveBack:
    chunk: int
    offset: int = 0
    count: int = 0  # 0: nothing worth giving
    # More (chunk, offset, count) ranges: a group answers a steal with several workers' parts at once
    more: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass
class Heartbeat:
    rank: int
    usage: Usage | None = None


@dataclass
class Stop:
    reason: str = "done"


@dataclass
class Final:
    rank: int
    stats: dict[str, Any] = field(default_factory=dict)
    # A sub-coordinator's ranks (rank -> stats), their chunk records and how many were not kept
    ranks: dict[int, dict[str, Any]] = field(default_factory=dict)
    chunks: list[Any] = field(default_factory=list)
    unrecorded: int = 0


MESSAGES = (Hello, Task, Result, Failure, Steal, GiveBack, Heartbeat, Stop, Final, Batch, JobFailed, Lost)
TAGS: dict[type, int] = {kind: 11 + i for i, kind in enumerate(MESSAGES)}
TAG_HELLO = TAGS[Hello]


def tag_of(message: Any) -> int:
    return TAGS[type(message)]
