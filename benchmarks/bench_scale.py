"""Coordination at scale: a discrete-event simulation that drives hpcthreads' own coordinators.

Run from the repository root, for example::

    .venv/bin/python benchmarks/bench_scale.py --workers 1024,16384,65536

Nothing of the coordinators' logic is modelled: rank 0 is the real
`Coordinator` (with its real `LedgerWriter`) and every sub-coordinator the
real `SubCoordinator`; the simulation only delivers their messages and
advances a clock. Each coordinator is one server: a message waits until the
previous one is handled, and handling it costs the wall time its real code
took here, plus the cost of receiving and sending the messages involved
(pickling and MPI, measured on this machine at start-up through
`MPI.COMM_SELF`), plus 2 ms per ledger fsync when `--fsync` says so. Their
periodic duties (steal retries, heartbeat checks, the ledger's group commit)
run every RETRY_SECONDS of simulated time, at the same cost model.

Workers are modelled: they compute a chunk in count / speed seconds, answer
a steal at their next sub-batch boundary (20 ms of work) with their waiting
chunk or the unstarted half of the running one, and send heartbeats while a
chunk runs longer than their heartbeat interval. The set of workers is the
one of the scaling goal: 25% GPUs at 30 times a 3e9 items/s CPU core, and 20%
of all workers slowed to a quarter of their speed; the job is sized so that
the ideal makespan (total work / total speed) is 10 s.

For each number of workers N and each grouping it prints the makespan over
the ideal, the busy fraction of rank 0 and its longest queue of waiting
messages. Groupings: `none` (rank 0 feeds every worker) and `node` (one
sub-coordinator per node of `--node-ranks` ranks, what `--groups auto` gives a
run of 256 ranks or more over several nodes).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpcthreads.config import make_job  # noqa: E402
from hpcthreads.runtime import protocol as p  # noqa: E402
from hpcthreads.runtime import topology  # noqa: E402
from hpcthreads.runtime.coordinator import Coordinator  # noqa: E402
from hpcthreads.runtime.dispatch import RETRY_SECONDS  # noqa: E402
from hpcthreads.runtime.ledger import LedgerState, LedgerWriter  # noqa: E402
from hpcthreads.runtime.pacing import (  # noqa: E402
    batch_seconds,
    heartbeat_seconds,
    steal_share,
    target_seconds,
)
from hpcthreads.runtime.subcoordinator import SubCoordinator  # noqa: E402
from hpcthreads.runtime.worker import SUB_BATCH_SECONDS  # noqa: E402
from hpcthreads.workloads import make_workload  # noqa: E402
from hpcthreads.workloads.base import ChunkOutput  # noqa: E402
from hpcthreads.workloads.collatz import CollatzSummary  # noqa: E402

CPU_RATE = 3e9
GPU_FACTOR = 30.0
GPU_SHARE = 0.25
SLOW_SHARE = 0.2
SLOW_FACTOR = 0.25
IDEAL_SECONDS = 10.0
LATENCY = 10e-6
FSYNC_SECONDS = 0.002
HEARTBEAT_TIMEOUT = 120.0
BATCH_SIZE = 1 << 24


class Sim:
    """Events in time order."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int, Any, tuple]] = []
        self.seq = 0
        self.now = 0.0

    def at(self, when: float, action: Any, *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, action, args))

    def step(self) -> bool:
        if not self.events:
            return False
        self.now, _, action, args = heapq.heappop(self.events)
        action(*args)
        return True


class MessageCosts:
    """Seconds to send and to receive each kind of message, measured through MPI.COMM_SELF."""

    def __init__(self, samples: list[Any], repeat: int = 300) -> None:
        from mpi4py import MPI

        comm = MPI.COMM_SELF
        self.send: dict[type, float] = {}
        self.receive: dict[type, float] = {}
        for message in samples:
            sends, receives = [], []
            for _ in range(repeat):
                t0 = time.perf_counter()
                request = comm.isend(message, dest=0, tag=7)
                t1 = time.perf_counter()
                comm.Iprobe(source=0, tag=7)
                comm.recv(source=0, tag=7)
                t2 = time.perf_counter()
                request.wait()
                sends.append(t1 - t0)
                receives.append(t2 - t1)
            self.send[type(message)] = statistics.median(sends)
            self.receive[type(message)] = statistics.median(receives)

    def of_send(self, message: Any) -> float:
        return self.send.get(type(message), 5e-6)

    def of_receive(self, message: Any) -> float:
        return self.receive.get(type(message), 5e-6)


class SimTransport:
    """What a coordinator sends goes to its node's outbox; nothing is ever received by polling."""

    def __init__(self, node: CoordinatorNode) -> None:
        self.node = node

    def send(self, message: Any, dest: int) -> None:
        self.node.outbox.append((dest, message))

    def receive(self, source: int | None = None, tag: int | None = None) -> tuple[Any, int]:
        return None, -1


class CoordinatorNode:
    """A real coordinator as a single server of simulated time."""

    def __init__(self, sim: Sim, net: Network, rank: int, costs: MessageCosts) -> None:
        self.sim, self.net, self.rank, self.costs = sim, net, rank, costs
        self.obj: Any = None
        self.inbox: deque[tuple[Any, int]] = deque()
        self.outbox: list[tuple[int, Any]] = []
        self.running = False
        self.free_at = 0.0
        self.busy = 0.0
        self.max_queue = 0
        self.clock_value = 0.0
        self.charged = 0.0

    def clock(self) -> float:
        return self.clock_value

    def deliver(self, message: Any, source: int) -> None:
        self.inbox.append((message, source))
        self.max_queue = max(self.max_queue, len(self.inbox))
        if not self.running:
            self.running = True
            self.sim.at(max(self.sim.now, self.free_at), self.process)

    def process(self) -> None:
        message, source = self.inbox.popleft()
        self.clock_value = self.sim.now
        self.charged = 0.0
        t0 = time.perf_counter()
        if message == "tick":
            self.obj_tick()
        else:
            self.obj_handle(message, source)
        cost = time.perf_counter() - t0 + self.charged
        if message != "tick":
            cost += self.costs.of_receive(message)
        for _, sent in self.outbox:
            cost += self.costs.of_send(sent)
        done = self.sim.now + cost
        for dest, sent in self.outbox:
            self.net.send(dest, sent, self.rank, done + LATENCY)
        self.outbox.clear()
        self.busy += cost
        self.free_at = done
        if self.inbox:
            self.sim.at(done, self.process)
        else:
            self.running = False
        self.after(done)

    def obj_handle(self, message: Any, source: int) -> None:
        raise NotImplementedError

    def obj_tick(self) -> None:
        raise NotImplementedError

    def after(self, done: float) -> None:
        pass

    def start_ticks(self) -> None:
        self.sim.at(self.sim.now + RETRY_SECONDS, self.tick)

    def tick(self) -> None:
        if self.net.finished:
            return
        self.deliver("tick", self.rank)
        self.sim.at(self.sim.now + RETRY_SECONDS, self.tick)


class RootNode(CoordinatorNode):
    """Rank 0: as Coordinator.run's loop, each message is followed by the ledger's and the periodic duties."""

    def obj_handle(self, message: Any, source: int) -> None:
        self.obj.handle(message, source)
        self.obj_tick()

    def obj_tick(self) -> None:
        self.obj.ledger.tick(self.clock_value)
        self.obj.duties(self.clock_value)

    def after(self, done: float) -> None:
        if not self.net.finished and self.obj._done():
            self.net.finished = True
            self.net.makespan = done


class SubNode(CoordinatorNode):
    """A sub-coordinator: as SubCoordinator.serve's loop, each message is followed by its duties."""

    def obj_handle(self, message: Any, source: int) -> None:
        self.obj.route(message, source)
        self.obj_tick()

    def obj_tick(self) -> None:
        self.obj.sub_duties(self.clock_value)


class WorkerNode:
    """A modelled worker: computes at `speed`, answers steals at sub-batch boundaries, sends heartbeats."""

    def __init__(
        self, sim: Sim, net: Network, rank: int, parent: int, speed: float, heartbeat: float
    ) -> None:
        self.sim, self.net, self.rank, self.parent = sim, net, rank, parent
        self.speed, self.heartbeat = speed, heartbeat
        self.queue: deque[p.Task] = deque()
        self.task: p.Task | None = None
        self.count = 0
        self.started = 0.0
        self.version = 0

    def send(self, message: Any) -> None:
        self.net.send(self.parent, message, self.rank, self.sim.now + LATENCY)

    def deliver(self, message: Any, source: int) -> None:
        if isinstance(message, p.Task):
            self.queue.append(message)
            if self.task is None:
                self.start()
        elif isinstance(message, p.Steal):
            self.sim.at(self.boundary(), self.answer_steal, message.speeds)

    def start(self) -> None:
        self.task = self.queue.popleft()
        self.count = self.task.count
        self.started = self.sim.now
        self.version += 1
        self.sim.at(self.started + self.count / self.speed, self.complete, self.version)
        if self.count / self.speed > self.heartbeat:
            self.sim.at(self.started + self.heartbeat, self.beat, self.version)

    def beat(self, version: int) -> None:
        if version == self.version and self.task is not None:
            self.send(p.Heartbeat(self.rank))
            self.sim.at(self.sim.now + self.heartbeat, self.beat, version)

    def complete(self, version: int) -> None:
        if version != self.version or self.task is None:
            return
        task, seconds = self.task, self.count / self.speed
        output = ChunkOutput(task.offset, self.count, chunk_summary(task.offset, self.count))
        self.send(
            p.Result(
                task.chunk, task.job, task.offset, self.count, seconds, self.started, self.sim.now, output
            )
        )
        self.task = None
        if self.queue:
            self.start()

    def boundary(self) -> float:
        if self.task is None:
            return self.sim.now
        step = SUB_BATCH_SECONDS
        elapsed = self.sim.now - self.started
        return min(
            self.started + math.ceil(elapsed / step + 1e-9) * step, self.started + self.count / self.speed
        )

    def answer_steal(self, speeds: dict[int, float]) -> None:
        """As Worker._give_back: the thief's share of the unstarted work, if a sub-batch or more."""
        task = self.task
        cursor = task.offset + int((self.sim.now - self.started) * self.speed) if task else 0
        end = task.offset + self.count if task else 0
        unstarted = sum(t.count for t in self.queue) + end - cursor
        job = self.queue[-1].job if self.queue else task.job if task else None
        amount = int(unstarted * steal_share(speeds.get(job), self.speed)) if job is not None else 0
        if job is None or amount < self.speed * SUB_BATCH_SECONDS:
            self.send(p.GiveBack(task.chunk if task else -1))
            return
        if self.queue:
            waiting = self.queue[-1]
            if waiting.count <= amount:
                self.queue.pop()
                self.send(p.GiveBack(waiting.chunk, waiting.offset, waiting.count))
            else:
                waiting.count -= amount
                self.send(p.GiveBack(waiting.chunk, waiting.offset + waiting.count, amount))
            return
        amount = min(amount, end - cursor)
        self.send(p.GiveBack(task.chunk, end - amount, amount))
        self.count -= amount
        self.version += 1
        self.sim.at(self.started + self.count / self.speed, self.complete, self.version)


class Network:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.nodes: dict[int, Any] = {}
        self.finished = False
        self.makespan = math.nan

    def send(self, dest: int, message: Any, source: int, when: float) -> None:
        self.sim.at(when, self.nodes[dest].deliver, message, source)


_HISTOGRAM = np.ones(500, np.int64)


def chunk_summary(offset: int, count: int) -> CollatzSummary:
    """A chunk summary of a realistic size: a 500-bin histogram and 20 candidates per record list."""
    step = max(1, count // 20)
    pairs = [(offset + 1 + k * step, 100 + k + offset % 97) for k in range(20)]
    return CollatzSummary(count, 130 * count, _HISTOGRAM, pairs, pairs, pairs)


def worker_speeds(n: int, seed: int) -> list[tuple[float, bool]]:
    rng = random.Random(seed)
    gpus = set(rng.sample(range(n), round(GPU_SHARE * n)))
    slow = set(rng.sample(range(n), round(SLOW_SHARE * n)))
    out = []
    for i in range(n):
        speed = CPU_RATE * (GPU_FACTOR if i in gpus else 1.0) * (SLOW_FACTOR if i in slow else 1.0)
        out.append((speed, i in gpus))
    return out


def simulate(n: int, grouping: str, node_ranks: int, fsync: bool, costs: MessageCosts, seed: int) -> dict:
    size = n + 1
    nodes = [rank // node_ranks for rank in range(size)]
    levels = topology.resolve(topology.parse_groups(grouping), size, nodes)
    tree = topology.build(size, levels, nodes)
    workers = [r for r in range(1, size) if tree.role(r) == "worker"]
    speeds = dict(zip(workers, worker_speeds(len(workers), seed)))
    total_speed = sum(s for s, _ in speeds.values())
    items = int(IDEAL_SECONDS * total_speed)
    job = make_job(
        {
            "name": "scale",
            "type": "collatz",
            "parameters": {"start": 1, "count": items, "batch_size": BATCH_SIZE},
        },
        0,
    )
    workloads = [make_workload(job)]
    sim = Sim()
    net = Network(sim)
    folder = tempfile.mkdtemp(prefix="bench-scale-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)

    def target_of(rank: int) -> float:
        children = tree.children.get(rank, [])
        return target_seconds(len(children), any(tree.role(c) == "sub-coordinator" for c in children))

    root = RootNode(sim, net, 0, costs)

    def sync(_fd: int) -> None:
        if fsync:
            root.charged += FSYNC_SECONDS

    journal = LedgerWriter(Path(folder) / "scale.h5", LedgerState("{}"), clock=root.clock, sync=sync)
    root.obj = Coordinator(
        SimTransport(root), workloads, NullWriter(), None, HEARTBEAT_TIMEOUT, [1 << 62], journal, None,
        children=tree.children.get(0, []), target=target_of(0), clock=root.clock, wallclock=root.clock,
    )  # fmt: skip
    net.nodes[0] = root
    subs: list[SubNode] = []
    for rank in range(1, size):
        parent = tree.parent[rank]
        siblings = len(tree.children[parent])
        if tree.role(rank) == "worker":
            speed, _ = speeds[rank]
            net.nodes[rank] = WorkerNode(
                sim, net, rank, parent, speed, heartbeat_seconds(siblings, HEARTBEAT_TIMEOUT)
            )
            continue
        node = SubNode(sim, net, rank, costs)
        node.obj = SubCoordinator(
            SimTransport(node), workloads, rank, parent, tree.children[rank], target_of(rank),
            heartbeat_seconds(siblings, HEARTBEAT_TIMEOUT), batch_seconds(siblings), [1 << 62],
            HEARTBEAT_TIMEOUT, clock=node.clock,
        )  # fmt: skip
        net.nodes[rank] = node
        subs.append(node)
    # Hellos, bottom up, as the real start-up sends them; then every coordinator fills its children
    for node in sorted(subs, key=lambda s: -depth_of(tree, s.rank)):
        greet(node.obj, tree, speeds)
        for worker in node.obj.workers.values():
            node.obj.top_up(worker)
        node.outbox.clear()
    greet(root.obj, tree, speeds, [s.obj for s in subs])
    root.clock_value = 0.0
    for worker in root.obj.workers.values():
        root.obj.top_up(worker)
    for dest, message in root.outbox:
        net.send(dest, message, 0, LATENCY)
    root.outbox.clear()
    root.start_ticks()
    for node in subs:
        node.start_ticks()
    gc.disable()
    wall = time.perf_counter()
    while not net.finished and sim.step():
        pass
    wall = time.perf_counter() - wall
    gc.enable()
    return {
        "workers": len(workers),
        "subs": len(subs),
        "ratio": net.makespan / IDEAL_SECONDS,
        "busy": root.busy / net.makespan,
        "queue": root.max_queue,
        "sub_busy": max((s.busy / net.makespan for s in subs), default=0.0),
        "commits": journal.commits,
        "wall": wall,
    }


def depth_of(tree: topology.Topology, rank: int) -> int:
    depth = 0
    while rank > 0:
        rank = tree.parent[rank]
        depth += 1
    return depth


def greet(obj: Any, tree: topology.Topology, speeds: dict, subs: list | None = None) -> None:
    by_rank = {s.rank: s for s in subs or []}
    for child in list(obj.workers):
        if child in speeds:
            hello = p.Hello(child, "sim", "simulated", "worker", speeds[child][1])
        else:
            sub = by_rank.get(child)
            hello = (
                sub._hello()
                if sub is not None
                else p.Hello(child, "sim", "", "sub", False, capacity=tree.capacity(child))
            )
        obj.on_hello(hello, child)
    obj.workers_known()


class NullWriter:
    writes_on_workers = True

    def write_chunk(self, job: int, out: ChunkOutput) -> None:
        pass


def sample_messages() -> list[Any]:
    summary = chunk_summary(10**12, 10**9)
    output = ChunkOutput(10**12, 10**9, summary)
    part = p.Part(0, [(10**12 + 10**9 * k, 10**9) for k in range(8)], summary, {}, [], 1.0, 2.0)
    return [
        p.Task(1, 0, 10**12, 10**9),
        p.Result(1, 0, 10**12, 10**9, 0.5, 1.0, 1.5, output),
        p.Batch(1, [(k, 10**9) for k in range(4)], [part], [1, 2], {0: 1e11}, 10.0, 0),
        p.GiveBack(1, 10**12, 10**9),
        p.Steal(),
        p.Heartbeat(1),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="64,256,1024,4096,16384,65536", help="numbers of workers")
    parser.add_argument("--groupings", default="none,node", help="--groups settings to compare")
    parser.add_argument("--node-ranks", type=int, default=64, help="ranks per node")
    parser.add_argument("--fsync", default="on,off", help="ledger fsync of 2 ms: on, off or both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flat-limit", type=int, default=16384, help="largest N simulated without grouping")
    args = parser.parse_args()
    costs = MessageCosts(sample_messages())
    print("message costs here (us), send / receive:")
    for kind in costs.send:
        print(f"  {kind.__name__:<10} {1e6 * costs.send[kind]:6.1f} / {1e6 * costs.receive[kind]:6.1f}")
    print(f"ideal makespan {IDEAL_SECONDS:g} s; 25% GPUs at 30x a 3e9/s core, 20% slowed 4x")
    print(f"{args.node_ranks} ranks per node; fsync: 2 ms per ledger commit at rank 0")
    columns = (
        "N",
        "groups",
        "fsync",
        "subs",
        "makespan/ideal",
        "rank-0 busy",
        "max queue",
        "sub busy",
        "sim s",
    )
    widths = (7, 6, 5, 5, 14, 11, 9, 8, 6)
    print(" ".join(f"{name:>{width}}" for name, width in zip(columns, widths)))
    for n in (int(v) for v in args.workers.split(",")):
        for grouping in args.groupings.split(","):
            if grouping == "none" and n > args.flat_limit:
                continue
            for fsync in args.fsync.split(","):
                r = simulate(n, grouping, args.node_ranks, fsync == "on", costs, args.seed)
                cells = (
                    r["workers"],
                    grouping,
                    fsync,
                    r["subs"],
                    f"{r['ratio']:.3f}",
                    f"{100 * r['busy']:.1f}%",
                )
                cells += (r["queue"], f"{100 * r['sub_busy']:.1f}%", f"{r['wall']:.0f}")
                print(" ".join(f"{cell:>{width}}" for cell, width in zip(cells, widths)), flush=True)


if __name__ == "__main__":
    main()
