"""Messages between the coordinator (rank 0) and the workers; no MPI calls here.

Every message is a small dataclass sent with its own tag, so a receiver can
probe for the tags it handles. The coordinator's side lives in
coordinator.py and the worker's in worker.py; they mirror each other:

    worker                      coordinator
    Hello            ->         (registers the worker)
                     <-         Task (up to WINDOW in flight)
    Result / Failure ->         (merges, writes, sends the next Task)
                     <-         Steal (when another worker is idle)
    GiveBack         ->         (re-queues the returned range)
    Heartbeat        ->         (while a long chunk runs)
                     <-         Stop
    Final            ->         (per-rank accounting)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpcthreads.workloads.base import ChunkOutput

TAG_HELLO = 11
TAG_TASK = 12
TAG_RESULT = 13
TAG_FAILURE = 14
TAG_STEAL = 15
TAG_GIVEBACK = 16
TAG_HEARTBEAT = 17
TAG_STOP = 18
TAG_FINAL = 19


@dataclass
class Hello:
    rank: int
    host: str
    backend: str
    device: str
    is_gpu: bool
    pid: int = 0


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


@dataclass
class Failure:
    chunk: int
    rank: int
    host: str
    error: str
    traceback: str


@dataclass
class Steal:
    """Give back the unstarted half of your work at the next sub-batch boundary."""


@dataclass
class GiveBack:
    chunk: int
    offset: int = 0
    count: int = 0  # 0: nothing worth giving


@dataclass
class Heartbeat:
    rank: int


@dataclass
class Stop:
    reason: str = "done"


@dataclass
class Final:
    rank: int
    stats: dict[str, Any] = field(default_factory=dict)
