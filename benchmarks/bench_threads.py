"""Single-core throughput of the `thread` kernel, next to a memory-write baseline.

Each case computes `count` threads of `depth` steps with the numba-cpu backend
and prints path values written per second (values on paths, the padding
excluded) and bytes per second of both path arrays (padding included, as the
arrays hold it). The baseline, timed in the same run and interleaved with the
kernel, is a plain Numba loop that stores every word of two fresh arrays of
the same shape (np.empty, then one store per word): what producing the output
from scratch costs at the write bandwidth of the machine, page faults
included. `kernel/fill` is the kernel's rate over the baseline's. It can pass
1: the kernel stores only the nonzero words of arrays that np.zeros hands
over as untouched zero pages, so padding and the high words of values below
2^64 cost nothing. Each figure is the best of ``--repeat`` runs.

Run from the repository root::

    .venv/bin/python benchmarks/bench_threads.py [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

CASES = ((1, 100_000, 100), (2**40, 20_000, 500), (2**64, 20_000, 500))


def fill_kernel() -> Callable[[int, int], tuple]:
    """(count, width) -> two uint64 arrays of that shape, every word written: np.empty, then a Numba loop.

    NumPy allocates, as for the kernel: it asks for transparent huge pages,
    Numba's allocator does not (with Numba's arrays this fill ran 2.4x slower).
    """
    import numpy as np
    from numba import njit

    @njit
    def write(lo: np.ndarray, hi: np.ndarray) -> None:
        for i in range(lo.shape[0]):
            for j in range(lo.shape[1]):
                lo[i, j] = np.uint64(i + j)
                hi[i, j] = np.uint64(j)

    def fill(count: int, width: int) -> tuple:
        lo, hi = np.empty((count, width), np.uint64), np.empty((count, width), np.uint64)
        write(lo, hi)
        return lo, hi

    fill(2, 2)
    return fill


def best_times(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """The best time of each run, the runs interleaved so that noise hits them alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; best is kept")
    args = parser.parse_args(argv)
    os.environ["NUMBA_NUM_THREADS"] = "1"
    from hpcthreads.backends import make_backend

    backend = make_backend("numba-cpu")
    backend.thread_paths(1, 10, 10)
    fill = fill_kernel()
    print(f"{'start':>8} {'threads':>8} {'depth':>6} {'values/s':>14} {'GB/s':>6}", end="")
    print(f" {'fill GB/s':>9} {'kernel/fill':>11}")
    for start, count, depth in CASES:
        runs = {
            "kernel": lambda s=start, c=count, d=depth: backend.thread_paths(s, c, d),
            "fill": lambda c=count, d=depth: fill(c, d + 1),
        }
        best = best_times(runs, args.repeat)
        values = int(backend.thread_paths(start, count, depth).depth.sum()) + count
        label = f"2**{start.bit_length() - 1}" if start > 1 else "1"
        size = 16 * count * (depth + 1)
        gbps, fill_gbps = size / best["kernel"] / 1e9, size / best["fill"] / 1e9
        print(
            f"{label:>8} {count:>8,} {depth:>6} {values / best['kernel']:>14,.0f} {gbps:>6.2f}"
            f" {fill_gbps:>9.2f} {gbps / fill_gbps:>11.2f}"
        )


if __name__ == "__main__":
    main()
