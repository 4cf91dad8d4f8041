"""Coordinators driven without MPI: a transport that records what they send."""

from __future__ import annotations

from hpcthreads.config import make_job
from hpcthreads.runtime import protocol as p
from hpcthreads.runtime.coordinator import Coordinator
from hpcthreads.runtime.ledger import LedgerState, LedgerWriter
from hpcthreads.runtime.subcoordinator import SubCoordinator
from hpcthreads.workloads import make_workload
from hpcthreads.workloads.base import ChunkOutput


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[int, object]] = []

    def send(self, message: object, dest: int) -> None:
        self.sent.append((dest, message))

    def receive(self, source=None, tag=None):
        return None, -1

    def tasks(self, dest: int | None = None) -> list[p.Task]:
        return [m for d, m in self.sent if isinstance(m, p.Task) and dest in (None, d)]


def workloads(count=10_000, batch=100):
    job = make_job(
        {"name": "j", "type": "collatz", "parameters": {"start": 1, "count": count, "batch_size": batch}}, 0
    )
    return [make_workload(job)]


def result(task: p.Task, work) -> p.Result:
    summary = work.empty()
    summary.count = task.count
    return p.Result(
        task.chunk,
        task.job,
        task.offset,
        task.count,
        0.01,
        0.0,
        1.0,
        ChunkOutput(task.offset, task.count, summary),
    )


def test_the_timeline_keeps_a_bounded_number_of_chunks_and_counts_the_rest(tmp_path):
    wl, transport = workloads(), Recorder()
    ledger = LedgerWriter(tmp_path / "out.h5", LedgerState("{}"))
    root = Coordinator(transport, wl, None, None, ledger=ledger, children=[1, 2])
    for rank in (1, 2):
        root.on_hello(p.Hello(rank, "h", "numba-cpu", "cpu", False), rank)
    root.workers_known()
    root.timeline_limit = 3
    for worker in root.workers.values():
        root.top_up(worker)
    for _ in range(3):
        for dest, task in list(transport.sent):
            if isinstance(task, p.Task):
                transport.sent.remove((dest, task))
                root.handle(result(task, wl[0]), dest)
    assert len(root.chunks) == 3 and root.unrecorded >= 3
    before = root.unrecorded
    root.handle(p.Final(1, {}, {}, ["a", "b"], 5), 1)
    assert len(root.chunks) == 3 and root.unrecorded == before + 7


def test_a_sub_coordinator_reports_a_share_taken_once_its_speed_is_known_and_credits_it_in_a_batch():
    wl, transport = workloads(count=10**6, batch=1000), Recorder()
    sub = SubCoordinator(transport, wl, 5, 0, [6, 7], 0.5, 1.0, 0.25)
    for rank in (6, 7):
        sub.on_hello(p.Hello(rank, "h", "numba-cpu", "cpu", False), rank)
    sub.workers_known()
    for worker in sub.workers.values():
        sub.top_up(worker)
    sub.route(p.Task(41, 0, 0, 3000), 0)
    sub.sub_duties(0.0)
    assert not [m for d, m in transport.sent if d == 0], "taken is said once the group's speed is known"
    # The workers finish whatever they are given until the share is done
    done, seen = [], 0
    while len(done) < len(transport.tasks()):
        for dest, task in [(d, m) for d, m in transport.sent if isinstance(m, p.Task)][seen:]:
            seen += 1
            done.append(task)
            sub.handle(result(task, wl[0]), dest)
    assert sorted((t.offset, t.count) for t in done)[0][0] == 0 and sum(t.count for t in done) == 3000
    sub.sub_duties(10.0)
    up = [m for d, m in transport.sent if d == 0]
    taken = [b for b in up if isinstance(b, p.Batch) and b.taken]
    assert taken and taken[0].taken == [41] and taken[0].speeds[0] > 0
    credits = sum(n for b in up if isinstance(b, p.Batch) for _, n in b.credits)
    assert credits == 3000
    parts = [part for b in up if isinstance(b, p.Batch) for part in b.parts]
    assert [span for part in parts for span in part.spans] == [(0, 3000)]
    assert sum(part.summary.count for part in parts) == 3000
