"""Single-core throughput of `verify` (numba-cpu, 2^k sieve) against a plain C implementation.

For each start offset (2**40, 2**64) and sieve (table bits k, extra bits e),
the script verifies the
same range [offset, offset + count) with hpcthreads' numba-cpu backend and
with ``benchmarks/verify_ref.c``, alternating the two and keeping the best of
``--repeat`` runs of each. Both run the same algorithm: the same 2^k sieve
(every value followed until the running maximum glide reaches the sieve's
largest skipped glide, then only survivors, a by a and residue by residue,
from 3^c a + d after k steps), the same extension of the sieve by e bits per
start value (a table indexed by c and v mod 2^e, applied to a batch of table
entries without a branch per entry), survivors walked by rounds of one 3v+1 and all
its halvings (count of trailing zeros), in 64-bit words while the start and
the value fit, else in two words, two survivors at a time. The C side keeps
only the maximum glide; numba-cpu also keeps every glide record, the values
past the step bound and the 128-bit overflow checks. Both must agree on the
maximum glide and its n. It prints integers covered per second of each,
their ratio, and the ratio of numba-cpu to the published verifier's rate
measured on this kind of machine (D. Barina's, about 2.2e9 integers/s per core
with its 2^24 + 3^2 sieve and 2.8e9 with 2^28 + 3^2).

Each sieve runs without and with the 3^2 sieve (column 3^2): n = 3m + 2 and
n = 9m + 4 skipped because a smaller p reaches them before it drops. In a
job, that holds from n >= (3S + 1)/2 in a range from S; "yes" measures the
range as part of a job from 1, which is also what the published verifier
assumes of the values below its range.

Run from the repository root::

    .venv/bin/python benchmarks/bench_verify.py [--count N] [--repeat R] [--sieves 24+0,28+14] [--mod9 0,1]

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
# D. Barina's verifier, one core of this kind of machine, integers/s: by table bits of its sieve
BARINA = {24: 2.2e9, 28: 2.8e9}


def compile_reference() -> None:
    BINARY.parent.mkdir(exist_ok=True)
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        subprocess.run(
            ["gcc", "-O3", "-march=native", "-Wall", "-Wextra", "-o", str(BINARY), str(SOURCE)], check=True
        )


def run_c(start: int, count: int, bits: int, extra: int, mod9: int) -> tuple[tuple[int, int], float]:
    args = [str(BINARY), str(start >> 64), str(start & MASK64), str(count), str(bits), str(extra), str(mod9)]
    out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return (int(out["max_glide"][0]), out["max_glide"][1]), float(out["seconds"])


def run_numba(
    backend, start: int, count: int, bits: int, extra: int, mod9: int
) -> tuple[tuple[int, int], float]:
    t0 = time.perf_counter()
    # mod9: the 3^2 sieve as in a job from 1, where every predecessor lies in the range
    raw = backend.verify_range(start, count, 100_000, bits, extra, mod9)
    seconds = time.perf_counter() - t0
    if len(raw.too_long) or len(raw.overflows):
        sys.exit("unexpected unresolved or overflowing values")
    off, _, glide = (int(x) for x in raw.glide_records[-1])
    return (start + off, glide), seconds


def parse_sieves(text: str) -> list[tuple[int, int]]:
    """'24+12,28' -> [(24, 12), (28, 0)]: table bits, extra bits."""
    sieves = []
    for item in text.split(","):
        bits, _, extra = item.partition("+")
        sieves.append((int(bits), int(extra or 0)))
    return sieves


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1 << 27, help="integers per range (default 2^27)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each implementation; best is kept")
    parser.add_argument(
        "--sieves",
        default="24+0,24+14,28+0,28+14",
        help="sieves as TABLE_BITS+EXTRA_BITS, comma-separated (default 24+0,24+14,28+0,28+14)",
    )
    parser.add_argument("--mod9", default="0,1", help="3^2 sieve off (0), on (1) or both (default 0,1)")
    args = parser.parse_args(argv)

    os.environ["NUMBA_NUM_THREADS"] = "1"
    from hpcthreads.backends import make_backend

    compile_reference()
    backend = make_backend("numba-cpu")
    rows = []
    modes = [int(m) for m in args.mod9.split(",")]
    for bits, extra in parse_sieves(args.sieves):
        backend.verify_range(2**40, 1000, 100_000, bits, extra)  # compile, build or load the sieve
        for mod9 in modes:
            for offset in OFFSETS:
                best_numba = best_c = float("inf")
                for _ in range(args.repeat):
                    got, numba_s = run_numba(backend, offset, args.count, bits, extra, mod9)
                    want, c_s = run_c(offset, args.count, bits, extra, mod9)
                    if got != want:
                        where = f"2**{offset.bit_length() - 1}, sieve {bits}+{extra}, 3^2 {mod9}"
                        sys.exit(f"MISMATCH at {where}: numba={got} C={want}")
                    best_numba, best_c = min(best_numba, numba_s), min(best_c, c_s)
                rate, c_rate = args.count / best_numba, args.count / best_c
                label = f"2**{offset.bit_length() - 1}"
                rows.append((label, f"{bits}+{extra}", "yes" if mod9 else "no", rate, c_rate))
    header = (
        f"{'offset':>8} {'sieve':>6} {'3^2':>4} {'numba int/s':>14} {'C int/s':>14} {'numba/C':>8}"
        f" {'/2.2e9':>7} {'/2.8e9':>7}"
    )
    print(header)
    print("-" * len(header))
    for label, sieve, mod9, rate, c_rate in rows:
        print(
            f"{label:>8} {sieve:>6} {mod9:>4} {rate:>14,.0f} {c_rate:>14,.0f} {rate / c_rate:>8.3f}"
            f" {rate / BARINA[24]:>7.2f} {rate / BARINA[28]:>7.2f}"
        )
    print("maximum glide and its n agree; /2.2e9 and /2.8e9: numba-cpu over D. Barina's verifier")
    print("with its 2^24 + 3^2 and 2^28 + 3^2 sieves on this kind of machine")


if __name__ == "__main__":
    main()
