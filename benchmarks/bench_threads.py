"""Single-core throughput of the `thread` kernel: path values written per second.

Each case computes `count` threads of `depth` steps with the numba-cpu backend
(best of ``--repeat``) and prints path values written per second (values on
paths, the padding excluded) and the bytes per second of both path arrays
(padding included, since the kernel's caller zero-fills them).

Run from the repository root::

    .venv/bin/python benchmarks/bench_threads.py [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import time

CASES = ((1, 100_000, 100), (2**40, 20_000, 500), (2**64, 20_000, 500))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; best is kept")
    args = parser.parse_args(argv)
    os.environ["NUMBA_NUM_THREADS"] = "1"
    from hpcthreads.backends import make_backend

    backend = make_backend("numba-cpu")
    backend.thread_paths(1, 10, 10)
    print(f"{'start':>8} {'threads':>8} {'depth':>6} {'values/s':>14} {'GB/s':>6}")
    for start, count, depth in CASES:
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            raw = backend.thread_paths(start, count, depth)
            best = min(best, time.perf_counter() - t0)
        values = int(raw.depth.sum()) + count
        label = f"2**{start.bit_length() - 1}" if start > 1 else "1"
        gbps = 16 * count * (depth + 1) / best / 1e9
        print(f"{label:>8} {count:>8,} {depth:>6} {values / best:>14,.0f} {gbps:>6.2f}")


if __name__ == "__main__":
    main()
