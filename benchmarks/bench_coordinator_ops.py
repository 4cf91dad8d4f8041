"""Per-operation costs of the coordinator at N workers, side by side with an earlier version.

Run from the repository root, for example::

    .venv/bin/python benchmarks/bench_coordinator_ops.py --workers 10,1000,4096,100000

The earlier version (`--baseline`, by default 3355c75, the last commit before
the coordinator was rewritten for scale) is taken from git history into a
temporary folder and measured by this same script in a child process, so both
run on this machine in one go. For each N, with N fake workers (sends are
no-ops, nothing is written):

- handle one result: a worker's chunk result in, the next chunk out;
- steal_for: choosing a victim for an idle worker, with no worker holding
  work (none) and with every worker holding two chunks (victim);
- idle pass: what the coordinator does every 50 ms for workers below their
  window once nothing is left to hand out (the baseline's `_top_up_idle`; now
  the bounded steal retries of `duties`);
- heartbeat check: the check every 50 ms of every worker's last message.

Times are medians, in microseconds; `-` where the baseline would take too
long (an idle pass is O(N^2) there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The baseline's idle pass costs about N^2 / 2e6 s: skip it beyond this N
BASELINE_PASS_LIMIT = 4096


class FakeComm:
    def __init__(self, size: int) -> None:
        self.size = size

    def Get_size(self) -> int:  # noqa: N802 - mpi4py's name
        return self.size

    def send(self, *args: Any, **kwargs: Any) -> None:
        pass


class NullTransport:
    def send(self, message: Any, dest: int) -> None:
        pass

    def receive(self, source: Any = None, tag: Any = None) -> tuple[Any, int]:
        return None, -1


class NullWriter:
    writes_on_workers = True

    def write_chunk(self, job: int, out: Any) -> None:
        pass


def timed(action: Any, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        action()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def build(n: int) -> tuple[Any, Any]:
    """A coordinator of `n` workers over a job that does not run out, every worker with two chunks."""
    from hpcthreads.config import make_job
    from hpcthreads.workloads import make_workload

    params = {"start": 1, "count": 10**15, "batch_size": 1000}
    workloads = [make_workload(make_job({"name": "j", "type": "collatz", "parameters": params}, 0))]
    try:
        from hpcthreads.runtime.coordinator import Coordinator

        coordinator = Coordinator(
            NullTransport(), workloads, NullWriter(), None, children=list(range(1, n + 1))
        )
        coordinator.workers_known()
        top_up = coordinator.top_up
    except ImportError:  # the baseline
        from hpcthreads.coordinator import Coordinator

        coordinator = Coordinator(FakeComm(n + 1), workloads, NullWriter(), None)
        top_up = coordinator._top_up
    for worker in coordinator.workers.values():
        worker.speed[0] = 1e7
        top_up(worker)
    return coordinator, workloads[0]


def measure(n: int, repeat: int) -> dict[str, float | None]:
    from hpcthreads.workloads.base import ChunkOutput

    new = _is_new()
    coordinator, workload = build(n)
    scheduler = coordinator.scheduler
    handle = coordinator.handle if new else coordinator._handle
    protocol = __import__(
        "hpcthreads.runtime.protocol" if new else "hpcthreads.protocol", fromlist=["Result"]
    )
    workers = list(coordinator.workers.values())
    turn = iter(range(10**9))

    def one_result() -> None:
        worker = workers[next(turn) % n]
        chunk = next(iter(worker.in_flight.values()))
        summary = workload.empty()
        summary.count = chunk.count
        output = ChunkOutput(chunk.offset, chunk.count, summary)
        seconds = chunk.count / 1e7  # the workers' given speed: chunk sizes stay the same
        result = protocol.Result(
            chunk.id, chunk.job, chunk.offset, chunk.count, seconds, 0.0, seconds, output
        )
        handle(result, worker.rank)

    out: dict[str, float | None] = {"result": timed(one_result, repeat)}
    # An idle thief, every other worker with two chunks
    thief = workers[0]
    for chunk_id in list(thief.in_flight):
        scheduler.finished(thief, chunk_id, thief.in_flight[chunk_id].count, 0.1)

    def steal() -> None:
        victim = scheduler.steal_for(thief, 0.0) if new else scheduler.steal_for(thief)
        if victim is not None:
            if new:
                scheduler.refused(victim)
                victim.refused = False
                scheduler.victims.update(victim)
            else:
                scheduler.refused(victim)

    out["steal_victim"] = timed(steal, repeat)
    now = time.monotonic()
    out["heartbeats"] = timed(
        lambda: coordinator.check_heartbeats(now) if new else coordinator._check_heartbeats(now), 20
    )
    # Nothing left to hand out, every worker idle and below its window: the tail of a job
    for worker in workers:
        for chunk_id in list(worker.in_flight):
            scheduler.finished(worker, chunk_id, worker.in_flight[chunk_id].count, 0.1)
    for job in scheduler.jobs:
        job.cursor = job.size
    out["steal_none"] = timed(lambda: scheduler.steal_for(workers[0]), repeat)
    if new:
        for worker in workers:
            coordinator.top_up(worker)
        coordinator.next_duty = 0.0
        out["idle_pass"] = timed(
            lambda: (coordinator.__setattr__("next_duty", 0.0), coordinator.duties(now)), 20
        )
    elif n <= BASELINE_PASS_LIMIT:
        out["idle_pass"] = timed(coordinator._top_up_idle, 1 if n > 1000 else 5)
    else:
        out["idle_pass"] = None
    return out


def _is_new() -> bool:
    try:
        import hpcthreads.runtime.dispatch  # noqa: F401
    except ImportError:
        return False
    return True


def baseline(revision: str, sizes: str, repeat: int) -> dict[str, dict]:
    folder = Path(tempfile.mkdtemp(prefix="bench-ops-"))
    archive = subprocess.run(
        ["git", "archive", revision, "hpcthreads"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    env = {**os.environ, "PYTHONPATH": str(folder)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "--workers", sizes, "--repeat", str(repeat)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="10,1000,4096,100000")
    parser.add_argument("--baseline", default="3355c75", help="git revision to compare with")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(v) for v in args.workers.split(",")]
    if args.child:
        print(json.dumps({str(n): measure(n, args.repeat) for n in sizes}))
        return
    sys.path.insert(0, str(ROOT))
    ours = {str(n): measure(n, args.repeat) for n in sizes}
    theirs = baseline(args.baseline, args.workers, args.repeat)

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    print(f"microseconds per operation, {args.baseline} -> now")
    keys = ("result", "steal_none", "steal_victim", "idle_pass", "heartbeats")
    print(f"{'N':>7} " + " ".join(f"{key:>24}" for key in keys))
    for n in sizes:
        row = [f"{cell(theirs[str(n)][k])} -> {cell(ours[str(n)][k])}" for k in keys]
        print(f"{n:>7} " + " ".join(f"{text:>24}" for text in row))


if __name__ == "__main__":
    main()
