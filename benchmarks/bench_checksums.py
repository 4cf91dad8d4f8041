"""The cost of the data checksums on a per-number run, side by side with the computation they cover.

Run from the repository root, for example::

    .venv/bin/python benchmarks/bench_checksums.py --count 2e7

In one run: the numba-cpu kernel on one core over a chunk of collatz
numbers at 2^40 with per-number arrays (what a worker computes), the digest
of those arrays (what a worker adds per chunk), and their ratio; then a
whole run with `--store per-number` and `hpcthreads check` of its file, which
reads every chunk back.
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpcthreads.backends import make_backend  # noqa: E402
from hpcthreads.io.digest import data_digest  # noqa: E402

START = 2**40


def best(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        action()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunk", type=float, default=2**22, help="numbers per chunk")
    parser.add_argument("--count", type=float, default=2e7, help="numbers of the whole run")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    chunk = int(args.chunk)
    backend = make_backend("numba-cpu")
    raw = backend.collatz_range(START, chunk, True)
    arrays = {"delay": raw.delay, "glide": raw.glide, "peak": raw.peak_lo}
    dtypes = {"delay": "uint32", "glide": "uint32", "peak": "uint64"}
    compute = best(lambda: backend.collatz_range(START, chunk, True), args.repeat)
    digest = best(lambda: data_digest(arrays, dtypes), args.repeat)
    size = sum(a.nbytes for a in arrays.values())
    print(f"chunk of {chunk:,} numbers at 2^40, {size / 2**20:.1f} MiB of per-number data:")
    print(f"  kernel  {compute * 1e3:8.1f} ms   ({chunk / compute:,.0f} numbers/s)")
    print(f"  digest  {digest * 1e3:8.1f} ms   ({size / digest / 1e9:.2f} GB/s)")
    print(f"  digest/kernel {digest / compute:.3f}")
    folder = Path(tempfile.mkdtemp(prefix="bench-checksums-"))
    out = folder / "pn.h5"
    command = [sys.executable, "-m", "hpcthreads", "run", "collatz", "--start", str(START), "--count"]
    command += [str(int(args.count)), "--store", "per-number", "-o", str(out), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    run = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hpcthreads", "check", str(out)], capture_output=True, text=True
    )
    check = time.perf_counter() - t0
    print(f"run of {int(args.count):,} numbers (one rank, per-number, {out.stat().st_size / 2**30:.2f} GiB): "
          f"{run:.1f} s; hpcthreads check: {check:.1f} s, exit {proc.returncode}")  # fmt: skip
    out.unlink()


if __name__ == "__main__":
    main()
