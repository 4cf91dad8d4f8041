"""Single-core throughput of `verify` (numba-cpu, 2^k sieve) against a plain C implementation.

For each start offset (2**40, 2**64) and sieve size, the script verifies the
same range [offset, offset + count) with hpcthreads' numba-cpu backend and
with ``benchmarks/verify_ref.c``, alternating the two and keeping the best of
``--repeat`` runs of each. Both run the same algorithm: the same 2^k sieve
(every value followed until the running maximum glide reaches the sieve's
largest skipped glide, then only survivors, a by a and residue by residue,
from 3^c a + d after k steps), survivors walked by rounds of one 3v+1 and all
its halvings (count of trailing zeros), in 64-bit words while the start and
the value fit, else in two words, two survivors at a time. The C side keeps
only the maximum glide; numba-cpu also keeps every glide record, the values
past the step bound and the 128-bit overflow checks. Both must agree on the
maximum glide and its n. It prints integers covered per second of each and
their ratio.

Run from the repository root::

    .venv/bin/python benchmarks/bench_verify.py [--count N] [--repeat R] [--bits 20,24]

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

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "verify_ref.c"
BINARY = HERE / "_build" / "verify_ref"
OFFSETS = (2**40, 2**64)
MASK64 = (1 << 64) - 1


def compile_reference() -> None:
    BINARY.parent.mkdir(exist_ok=True)
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        subprocess.run(
            ["gcc", "-O3", "-march=native", "-Wall", "-Wextra", "-o", str(BINARY), str(SOURCE)], check=True
        )


def run_c(start: int, count: int, bits: int) -> tuple[tuple[int, int], float]:
    args = [str(BINARY), str(start >> 64), str(start & MASK64), str(count), str(bits)]
    out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return (int(out["max_glide"][0]), out["max_glide"][1]), float(out["seconds"])


def run_numba(backend, start: int, count: int, bits: int) -> tuple[tuple[int, int], float]:
    t0 = time.perf_counter()
    raw = backend.verify_range(start, count, 100_000, bits)
    seconds = time.perf_counter() - t0
    if len(raw.too_long) or len(raw.overflows):
        sys.exit("unexpected unresolved or overflowing values")
    off, _, glide = (int(x) for x in raw.glide_records[-1])
    return (start + off, glide), seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1 << 25, help="integers per range (default 2^25)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each implementation; best is kept")
    parser.add_argument("--bits", default="20,24", help="sieve sizes, comma-separated (default 20,24)")
    args = parser.parse_args(argv)
    bits_list = [int(b) for b in args.bits.split(",")]

    os.environ["NUMBA_NUM_THREADS"] = "1"
    from hpcthreads.backends import make_backend

    compile_reference()
    backend = make_backend("numba-cpu")
    rows = []
    for bits in bits_list:
        backend.verify_range(2**40, 1000, 100_000, bits)  # compile, build or load the sieve
        for offset in OFFSETS:
            best_numba = best_c = float("inf")
            for _ in range(args.repeat):
                got, numba_s = run_numba(backend, offset, args.count, bits)
                want, c_s = run_c(offset, args.count, bits)
                if got != want:
                    sys.exit(f"MISMATCH at 2**{offset.bit_length() - 1}, 2^{bits}: numba={got} C={want}")
                best_numba, best_c = min(best_numba, numba_s), min(best_c, c_s)
            rate, c_rate = args.count / best_numba, args.count / best_c
            rows.append((f"2**{offset.bit_length() - 1}", bits, rate, c_rate, rate / c_rate))
    header = f"{'offset':>8} {'sieve':>6} {'numba int/s':>14} {'C int/s':>14} {'numba/C':>8}"
    print(header)
    print("-" * len(header))
    for label, bits, rate, c_rate, ratio in rows:
        print(f"{label:>8} {'2^' + str(bits):>6} {rate:>14,.0f} {c_rate:>14,.0f} {ratio:>8.3f}")
    print("maximum glide and its n agree")


if __name__ == "__main__":
    main()
