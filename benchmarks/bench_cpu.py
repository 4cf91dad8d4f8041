"""Single-core throughput of the numba-cpu range analysis against a plain C reference.

For each start offset (1, 2**40, 2**64) the script analyses the same range
[offset, offset + count) with hpcthreads' numba-cpu backend (one Numba thread)
and with ``benchmarks/collatz_ref.c`` (single-threaded, a table of delays and
peaks below 2**20), alternating the two, and keeps the best of ``--repeat``
runs of each. Both must agree on the sum of delays and on the maximum delay,
peak and glide (each with its smallest n) and on the number of start values
that leave 128 bits; any difference aborts the script. It prints numbers per
second of each and their ratio.

Only the computation is timed: the Numba call itself (after a warm-up call
that compiles or loads the cache) and the C program's main loop as it reports
it, which excludes its start-up and table construction.

Run from the repository root::

    .venv/bin/python benchmarks/bench_cpu.py [--count N] [--repeat R]

The C program is built with ``gcc -O3 -march=native`` into ``benchmarks/_build/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "collatz_ref.c"
BUILD = HERE / "_build"
BINARY = BUILD / "collatz_ref"

OFFSETS = (1, 2**40, 2**64)
DEFAULT_COUNTS = {1: 2_000_000}
DEFAULT_COUNT = 1_000_000
MASK64 = (1 << 64) - 1


class Summary(NamedTuple):
    """The statistics both implementations must agree on."""

    sum_delay: int
    max_delay: tuple[int, int]  # (n, delay)
    max_peak: tuple[int, int]  # (n, peak)
    max_glide: tuple[int, int]  # (n, glide)
    overflow: int


def compile_reference() -> Path:
    """Build the C reference (again whenever its source is newer than the binary)."""
    BUILD.mkdir(exist_ok=True)
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        cmd = ["gcc", "-O3", "-march=native", "-Wall", "-Wextra", "-o", str(BINARY), str(SOURCE)]
        subprocess.run(cmd, check=True)
    return BINARY


def run_c(start: int, count: int) -> tuple[Summary, float]:
    """Analyse [start, start + count) with the C program: its summary and loop seconds."""
    args = [str(BINARY), str(start >> 64), str(start & MASK64), str(count)]
    out: dict[str, Any] = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    summary = Summary(
        sum_delay=out["sum_delay"],
        max_delay=(int(out["max_delay"][0]), out["max_delay"][1]),
        max_peak=(int(out["max_peak"][0]), int(out["max_peak"][1])),
        max_glide=(int(out["max_glide"][0]), out["max_glide"][1]),
        overflow=out["overflow"],
    )
    return summary, float(out["seconds"])


def last_record(start: int, table: Any) -> tuple[int, int]:
    """(n, value) of the last (largest) row (offset, hi, lo) of a record table."""
    offset, hi, lo = (int(x) for x in table[-1])
    return start + offset, (hi << 64) | lo


def run_numba(backend: Any, start: int, count: int) -> tuple[Summary, float]:
    """Analyse [start, start + count) with the Numba backend: its summary and seconds."""
    t0 = time.perf_counter()
    raw = backend.collatz_range(start, count, False)
    seconds = time.perf_counter() - t0
    summary = Summary(
        sum_delay=int(raw.sum_delay),
        max_delay=last_record(start, raw.delay_records),
        max_peak=last_record(start, raw.path_records),
        max_glide=last_record(start, raw.glide_records),
        overflow=len(raw.overflows),
    )
    return summary, seconds


def compare(offset: int, numba: Summary, c: Summary) -> None:
    """Abort with both summaries if the two implementations disagree."""
    if numba != c:
        fields = zip(Summary._fields, numba, c)
        diffs = [f"  {field}: numba={a!r} C={b!r}" for field, a, b in fields if a != b]
        sys.exit(f"MISMATCH at offset {offset}:\n" + "\n".join(diffs))


def offset_label(offset: int) -> str:
    if offset > 1 and offset & (offset - 1) == 0:
        return f"2**{offset.bit_length() - 1}"
    return str(offset)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=None, help="numbers per range (default: 2e6 at offset 1, else 1e6)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each implementation; best is kept")
    args = parser.parse_args(argv)
    if args.repeat < 1 or (args.count is not None and args.count < 1):
        parser.error("--count and --repeat must be positive")

    os.environ["NUMBA_NUM_THREADS"] = "1"
    from hpcthreads.backends import make_backend  # imports numba: after NUMBA_NUM_THREADS is set

    compile_reference()
    backend = make_backend("numba-cpu")
    backend.collatz_range(1, 1000, False)  # compile or load the cache

    rows = []
    for offset in OFFSETS:
        count = args.count if args.count is not None else DEFAULT_COUNTS.get(offset, DEFAULT_COUNT)
        best_numba = best_c = float("inf")
        for _ in range(args.repeat):
            numba_summary, numba_s = run_numba(backend, offset, count)
            c_summary, c_s = run_c(offset, count)
            compare(offset, numba_summary, c_summary)
            best_numba = min(best_numba, numba_s)
            best_c = min(best_c, c_s)
        rows.append((offset_label(offset), count, count / best_numba, count / best_c, best_c / best_numba))

    header = f"{'offset':>8} {'count':>10} {'numba n/s':>14} {'C n/s':>14} {'numba/C':>8}"
    print(header)
    print("-" * len(header))
    for label, count, numba_rate, c_rate, ratio in rows:
        print(f"{label:>8} {count:>10,} {numba_rate:>14,.0f} {c_rate:>14,.0f} {ratio:>8.3f}")
    print("all results agree (sum_delay, max delay/peak/glide, overflow count)")


if __name__ == "__main__":
    main()
