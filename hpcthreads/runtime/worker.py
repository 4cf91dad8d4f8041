"""The worker side: run chunks in sub-batches, give work back when asked, never spin.

Mirror image of coordinator.py: every message the coordinator sends is
handled here, and every message sent from here is handled there.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from hpcthreads.backends.base import BaseBackend
from hpcthreads.io.digest import data_digest
from hpcthreads.runtime import devices
from hpcthreads.runtime import protocol as p
from hpcthreads.runtime.faults import Faults
from hpcthreads.runtime.mpiutil import Poller
from hpcthreads.runtime.pacing import HEARTBEAT_SECONDS, steal_share
from hpcthreads.runtime.usage import UsageSampler
from hpcthreads.workloads.base import BaseWorkload, ChunkOutput

log = logging.getLogger("hpcthreads")

# Sub-batches last about this long: the latency of a steal or a heartbeat
SUB_BATCH_SECONDS = 0.02
FIRST_SUB_BATCH = 1024


def combine(workload: BaseWorkload, parts: list[ChunkOutput]) -> ChunkOutput:
    """One output for consecutive sub-batch outputs of one chunk."""
    if len(parts) == 1:
        return parts[0]
    summary = workload.empty()
    extra: dict[str, list] = {}
    for part in parts:
        summary = workload.merge(summary, part.summary)
        for name, rows in part.extra.items():
            extra.setdefault(name, []).extend(rows)
    arrays = {name: np.concatenate([part.arrays[name] for part in parts]) for name in parts[0].arrays}
    count = sum(part.count for part in parts)
    return ChunkOutput(parts[0].offset, count, summary, arrays, extra)


class ChunkRunner:
    """Computes chunks of the run's jobs on one backend, in adaptive sub-batches."""

    def __init__(self, workloads: list[BaseWorkload], backend: BaseBackend, rank: int, faults: Faults):
        self.workloads = workloads
        self.backend = backend
        self.rank = rank
        self.faults = faults
        self.speed: dict[int, float] = {}
        self.busy = 0.0
        self.items = 0
        self.sampler = UsageSampler(gpu=backend.is_gpu)
        backend.warm_up({workload.type for workload in workloads})
        for workload in workloads:
            workload.prepare(backend)
        self.dtypes = [{name: dtype for name, (_, dtype) in w.datasets().items()} for w in workloads]

    def sub_size(self, job: int) -> int:
        speed = self.speed.get(job)
        # A device backend's sub-batches are at least its min_batch, whatever the job's hint
        floor = self.backend.min_batch
        limit = max(floor, self.workloads[job].job.batch_size)
        if speed is None:
            return max(1, min(max(FIRST_SUB_BATCH, floor), limit))
        return max(1, min(limit, max(floor, int(speed * SUB_BATCH_SECONDS))))

    def run(self, task: p.Task, service: Callable[[int, int], int] | None = None) -> p.Result:
        """Compute a task; `service(cursor, end)` runs between sub-batches and may lower `end`."""
        workload = self.workloads[task.job]
        self.faults.before_chunk(self.rank, workload.job.name)
        cursor, end = task.offset, task.offset + task.count
        parts, seconds, started = [], 0.0, time.time()
        while cursor < end:
            n = min(self.sub_size(task.job), end - cursor)
            t0 = time.perf_counter()
            parts.append(workload.compute(self.backend, cursor, n))
            self.faults.slow_down(self.rank, time.perf_counter() - t0, n)
            elapsed = time.perf_counter() - t0
            self.speed[task.job] = n / max(elapsed, 1e-9)
            seconds += elapsed
            cursor += n
            if service is not None:
                end = service(cursor, end)
        self.busy += seconds
        self.items += cursor - task.offset
        output = combine(workload, parts) if parts else None
        if output is not None and output.arrays:
            output.digest = data_digest(output.arrays, self.dtypes[task.job])
        return p.Result(
            task.chunk, task.job, task.offset, cursor - task.offset, seconds, started, time.time(), output,
            self.sampler.sample(),
        )  # fmt: skip


class Worker:
    """The MPI loop of a computing rank: every rank but the coordinator and the sub-coordinators."""

    def __init__(
        self,
        comm: Any,
        runner: ChunkRunner,
        hello: p.Hello,
        writer: Any = None,
        parent: int = 0,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.comm = comm
        self.runner = runner
        self.hello = hello
        self.writer = writer
        self.parent = parent
        self.heartbeat = heartbeat
        self.queue: deque[p.Task] = deque()
        self.stop: p.Stop | None = None
        self.last_sent = time.monotonic()
        self.idle = 0.0
        self.idle_cpu = 0.0
        self.gave_back = 0
        self.current: p.Task | None = None

    def send(self, message: Any) -> None:
        self.comm.send(message, dest=self.parent, tag=p.tag_of(message))
        self.last_sent = time.monotonic()

    def serve(self) -> None:
        """Run tasks until the coordinator says stop."""
        # Signals reach every rank under a launcher; the coordinator decides what happens
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, lambda *_: None)
        self.send(self.hello)
        log.info("worker ready: %s, pid %d", self.hello.device, self.hello.pid)
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        poller = Poller()
        while self.stop is None:
            if self.queue:
                self._run(self.queue.popleft())
                poller.reset()
                continue
            t0, cpu0 = time.perf_counter(), time.process_time()
            if not self._receive():
                poller.wait()
            self.idle += time.perf_counter() - t0
            self.idle_cpu += time.process_time() - cpu0
        stats = {
            "host": self.hello.host,
            "device": self.hello.device,
            "backend": self.hello.backend,
            "busy": self.runner.busy,
            "idle": self.idle,
            "items": self.runner.items,
            "gave_back": self.gave_back,
            "idle_cpu": self.idle_cpu,
            "cpu": time.process_time() - cpu_start,
            "wall": time.perf_counter() - wall_start,
        }
        self.send(p.Final(self.hello.rank, stats))
        log.info(
            "worker done: %d items, busy %.2f s, idle %.2f s", self.runner.items, self.runner.busy, self.idle
        )

    def _run(self, task: p.Task) -> None:
        self.current = task
        try:
            result = self.runner.run(task, self._service)
            if self.writer is not None and result.output is not None:
                # Parallel mode: the slice is written here; only the summary travels
                self.writer.write_chunk(task.job, result.output)
                result.output.arrays = {}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the coordinator
            failure = p.Failure(
                task.chunk,
                self.hello.rank,
                self.hello.host,
                f"{type(exc).__name__}: {exc}",
                traceback.format_exc(),
            )
            self.send(failure)
        else:
            self.send(result)
        finally:
            self.current = None

    def _service(self, cursor: int, end: int) -> int:
        """Between sub-batches: take messages, answer steals, send a heartbeat."""
        while True:
            status = self._probe()
            if status is None:
                break
            message = self.comm.recv(source=self.parent, tag=status.Get_tag())
            if isinstance(message, p.Steal):
                end = self._give_back(cursor, end, message.speeds)
            else:
                self._take(message)
        if self.stop is not None:
            # Stopping early: report what is done, the rest stays unassigned
            return cursor
        if time.monotonic() - self.last_sent > self.heartbeat:
            self.send(p.Heartbeat(self.hello.rank, self.runner.sampler.sample()))
        return end

    def _give_back(self, cursor: int, end: int, speeds: dict[int, float]) -> int:
        """Give back the thief's share of the unstarted work: from the waiting chunk (whole if it is
        no more than the share), else the tail of the running one; nothing if it is under a
        sub-batch. Returns the running chunk's new end."""
        task = self.current
        job = self.queue[-1].job if self.queue else task.job if task is not None else None
        unstarted = sum(t.count for t in self.queue) + (end - cursor if task is not None else 0)
        share = steal_share(speeds.get(job), self.runner.speed.get(job)) if job is not None else 0.0
        amount = int(unstarted * share)
        if job is None or amount < self.runner.sub_size(job):
            self.send(p.GiveBack(task.chunk if task else -1))
            return end
        if self.queue:
            waiting = self.queue[-1]
            if waiting.count <= amount:
                self.queue.pop()
                self.send(p.GiveBack(waiting.chunk, waiting.offset, waiting.count))
            else:
                waiting.count -= amount
                self.send(p.GiveBack(waiting.chunk, waiting.offset + waiting.count, amount))
        else:
            amount = min(amount, end - cursor)
            self.send(p.GiveBack(task.chunk, end - amount, amount))
            end -= amount
        self.gave_back += 1
        return end

    def _probe(self) -> Any:
        from mpi4py import MPI

        status = MPI.Status()
        return status if self.comm.Iprobe(source=self.parent, tag=MPI.ANY_TAG, status=status) else None

    def _receive(self) -> bool:
        status = self._probe()
        if status is None:
            return False
        message = self.comm.recv(source=self.parent, tag=status.Get_tag())
        if isinstance(message, p.Steal):
            self._give_back(0, 0, message.speeds)
        else:
            self._take(message)
        return True

    def _take(self, message: Any) -> None:
        if isinstance(message, p.Task):
            self.queue.append(message)
        elif isinstance(message, p.Stop):
            self.stop = message
            self.queue.clear()


def hello_for(rank: int, backend: BaseBackend) -> p.Hello:
    return p.Hello(
        rank,
        socket.gethostname(),
        backend.name,
        backend.describe(),
        backend.is_gpu,
        os.getpid(),
        devices.visible_setting(),
    )
