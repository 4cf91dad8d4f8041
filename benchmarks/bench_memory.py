"""Peak memory of a run against the size of its range (summary mode, one rank).

Run from the repository root::

    .venv/bin/python benchmarks/bench_memory.py [--counts 1e6,1e7,3e7] [--start 2**64]

Each count runs in a fresh process (`hpcthreads run collatz`) under
`/usr/bin/time`, which reports its peak resident set size. Memory per rank
must stay flat as the range grows: chunks are computed and merged one at a
time, and summaries (histogram, records) are bounded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path


def peak_rss(count: str, start: str, folder: Path) -> tuple[float, float]:
    out = folder / f"m{count}.h5"
    command = [
        "/usr/bin/time",
        "-f",
        "%M %e",
        sys.executable,
        "-m",
        "hpcthreads",
        "run",
        "collatz",
        "--start",
        start,
        "--count",
        count,
        "-o",
        str(out),
        "--force",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    kib, seconds = proc.stderr.strip().splitlines()[-1].split()
    return int(kib) / 1024, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", default="1e6,1e7,3e7")
    parser.add_argument("--start", default="2**64")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"collatz from {args.start}, summary mode, one rank")
        print(f"{'count':>10} {'peak RSS MiB':>14} {'seconds':>9}")
        for count in args.counts.split(","):
            mib, seconds = peak_rss(count, args.start, Path(folder))
            print(f"{count:>10} {mib:14.1f} {seconds:9.1f}")


if __name__ == "__main__":
    main()
