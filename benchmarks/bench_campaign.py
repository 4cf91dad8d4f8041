"""The overhead of a campaign against one run of the same jobs: claims, parts, merge.

Run from the repository root, for example::

    .venv/bin/python benchmarks/bench_campaign.py --count 1.2e8 --units 8,32

In one run, alternating, best of `--repeat`: the job file run once
(`hpcthreads run`, one process, from the command line as a user runs it),
then the same job file as a campaign of U units (`campaign create`, one
`run --campaign` process that does every unit, `campaign merge`), each
timed end to end. It prints each step's seconds, the campaign's total over
the one run, and the cost per unit; then the claim protocol alone: claiming
and marking done every unit of a campaign of `--claims` units in one
process (listing, O_EXCL create, link), per unit. The merged file is
checked to hold the one run's results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def hpcthreads(*args: str) -> float:
    """Seconds of `python -m hpcthreads ARGS` (it must succeed)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hpcthreads", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"hpcthreads {' '.join(args)} failed:\n{proc.stderr}")
    return seconds


def one_run(folder: Path, jobs: Path) -> dict[str, float]:
    out = folder / "one.h5"
    out.unlink(missing_ok=True)
    return {"run": hpcthreads("run", str(jobs), "-o", str(out), "--quiet")}


def campaign(folder: Path, jobs: Path, units: int) -> dict[str, float]:
    import shutil

    root = folder / f"camp{units}"
    shutil.rmtree(root, ignore_errors=True)
    merged = folder / f"merged{units}.h5"
    merged.unlink(missing_ok=True)
    return {
        "create": hpcthreads("campaign", "create", str(root), str(jobs), "--units", str(units)),
        "run": hpcthreads("run", "--campaign", str(root), "--quiet"),
        "merge": hpcthreads("campaign", "merge", str(root), "-o", str(merged)),
    }


def claims(folder: Path, count: int) -> float:
    """Seconds per unit to claim and mark done every unit of a campaign, in one process."""
    from hpcthreads.campaign.lease import claim_next, identity, server_now
    from hpcthreads.campaign.store import create_campaign, publish
    from hpcthreads.config import make_jobs

    jobs = make_jobs(
        {"jobs": [{"name": "c", "type": "collatz", "parameters": {"count": count, "batch_size": 1}}]}
    )
    opened = create_campaign(folder / "claims", jobs, "", count)
    me = identity()
    t0 = time.perf_counter()
    while True:
        lease, _ = claim_next(opened, me, 300.0, server_now(opened.folder("holders")))
        if lease is None:
            break
        publish(opened.folder("done") / lease.unit.id, "{}")
    return (time.perf_counter() - t0) / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=float, default=1.2e8, help="start values of the collatz job")
    parser.add_argument("--units", default="8,32", help="campaign sizes to compare")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--claims", type=int, default=1000, help="units of the claim-only measurement")
    args = parser.parse_args()
    from h5compare import assert_same_results

    sizes = [int(u) for u in args.units.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        folder = Path(tmp)
        jobs = folder / "jobs.yaml"
        count = int(args.count)
        jobs.write_text(f"jobs:\n  - {{name: c, type: collatz, parameters: {{start: 1, count: {count}}}}}\n")
        hpcthreads("info", "--warm-up")  # compiled kernels and tables, as a second run finds them
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for label, measure in [("one run", lambda: one_run(folder, jobs))] + [
                (f"{u} units", lambda u=u: campaign(folder, jobs, u)) for u in sizes
            ]:
                times = measure()
                if label not in best or sum(times.values()) < sum(best[label].values()):
                    best[label] = times
        for units in sizes:
            assert_same_results(folder / "one.h5", folder / f"merged{units}.h5")
        base = best["one run"]["run"]
        print(f"collatz from 1, {count:,} start values, one process, best of {args.repeat}\n")
        heads = ("create s", "run s", "merge s", "total s", "/ one run", "s / unit")
        print(f"{'':<10} " + " ".join(f"{head:>9}" for head in heads))
        for label, times in best.items():
            total = sum(times.values())
            units = int(label.split()[0]) if label != "one run" else 0
            per_unit = f"{(total - base) / units:9.3f}" if units else f"{'-':>9}"
            print(
                f"{label:<10} {times.get('create', 0):9.2f} {times['run']:9.2f} {times.get('merge', 0):9.2f} "
                f"{total:9.2f} {total / base:9.3f} {per_unit}"
            )
        print("\nmerged files equal the one run's results")
        per_claim = claims(folder, args.claims)
        print(f"claim + mark done, {args.claims} units in one process: {per_claim * 1e3:.2f} ms per unit")


if __name__ == "__main__":
    main()
