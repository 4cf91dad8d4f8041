"""A real run of many oversubscribed ranks with the simulated backend: makespan against the ideal.

Run from the repository root, for example::

    .venv/bin/python benchmarks/bench_simulated.py --ranks 128 --groups none --groups 16

Each setting is one real `mpiexec -n RANKS hpcthreads run` (real messages,
coordinators, ledger and writer) whose workers sleep for the time their
chunks would take at `--rate` items per second, a fraction of them slowed
(`--slow`, as `--simulated-slow`). The job is sized so that the ideal makespan,
total work over the sum of the workers' rates, is `--ideal` seconds. The
makespan is the one the results file records (first chunk handed out to
last result in), so the start-up of the ranks is not in it.

Two ideals are printed: the nominal one, and the one from the speeds the
workers really had (items over busy seconds, from the file's rank table). On
two cores a hundred sleeping ranks wake late from every sleep, which slows
the workers themselves (by several percent); the second ratio is the
coordination's own loss, as `bench_balance.py` measures it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpcthreads.backends.simulated import is_slowed, parse_slow  # noqa: E402
from hpcthreads.runtime import topology  # noqa: E402

BIN = Path(sys.executable).parent


def ideal_count(ranks: int, groups: str, rate: float, slow: str, seconds: float) -> tuple[int, int]:
    """(items for an ideal makespan of `seconds`, workers) on one node."""
    levels = topology.resolve(topology.parse_groups(groups), ranks, [0] * ranks)
    tree = topology.build(ranks, levels, [0] * ranks)
    fraction, factor = parse_slow(slow)
    workers = [r for r in range(1, ranks) if tree.role(r) == "worker"]
    total = sum(rate / factor if is_slowed(r, fraction) else rate for r in workers)
    return int(total * seconds), len(workers)


def run(ranks: int, groups: str, rate: float, slow: str, seconds: float, folder: Path) -> dict:
    count, workers = ideal_count(ranks, groups, rate, slow, seconds)
    out = folder / f"sim-{ranks}-{groups.replace(',', '_')}.h5"
    mpiexec = BIN / "mpiexec" if (BIN / "mpiexec").exists() else "mpiexec"
    command = [str(mpiexec), "-n", str(ranks), sys.executable, "-m", "hpcthreads", "run", "collatz"]
    command += ["--count", str(count), "--batch-size", str(int(rate * 0.05)), "-o", str(out), "--force"]
    command += ["--backend", "simulated", "--simulated-rate", str(rate), "--simulated-slow", slow]
    command += ["--groups", groups, "--quiet", "--log-level", "WARNING", "--startup-timeout", "1200"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(
        subprocess.run(
            [sys.executable, "-m", "hpcthreads", "inspect", str(out), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    import h5py

    with h5py.File(out) as f:
        items, busy = f["run/ranks/items"][()], f["run/ranks/busy"][()]
    speed = sum(i / b for i, b in zip(items.tolist(), busy.tolist()) if i and b)
    out.unlink()
    run = doc["run"]
    return {
        "workers": workers,
        "subs": run.get("sub_coordinators", 0),
        "makespan": doc["makespan_seconds"],
        "ratio": doc["makespan_seconds"] / seconds,
        "measured": doc["makespan_seconds"] / (count / speed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ranks", default="128", help="rank counts, comma-separated")
    parser.add_argument("--groups", action="append", help="a --groups setting (repeatable; none and 16)")
    parser.add_argument("--rate", type=float, default=1e7, help="items per second of one worker")
    parser.add_argument("--slow", default="0.2:4", help="FRACTION:FACTOR of slowed workers")
    parser.add_argument("--ideal", type=float, default=20.0, help="ideal makespan, seconds")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-simulated-"))
    print(
        f"simulated workers at {args.rate:.3g} items/s, {args.slow} slowed; ideal makespan {args.ideal:g} s"
    )
    head = f"{'ranks':>6} {'groups':>7} {'workers':>8} {'subs':>5} {'makespan s':>11} {'/ideal':>8}"
    print(head + f" {'/ideal at the speeds measured':>30}")
    for ranks in (int(v) for v in args.ranks.split(",")):
        for groups in args.groups or ["none", "16"]:
            r = run(ranks, groups, args.rate, args.slow, args.ideal, folder)
            line = f"{ranks:>6} {groups:>7} {r['workers']:>8} {r['subs']:>5} "
            print(line + f"{r['makespan']:>11.3f} {r['ratio']:>8.3f} {r['measured']:>30.3f}", flush=True)


if __name__ == "__main__":
    main()
