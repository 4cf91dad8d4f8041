"""Single-core throughput of `verify`: the residue-slice kernel against the previous defaults and C.

Kernels, side by side in one run (one core, best of ``--repeat``), at 2^40,
2^64 and 2^100, each at the sieve that a large job there gets by default:

- **slice**: the residue-slice kernel (backends/slicesieve.py) on a run of
  residues of the job's 2^K layout (K chosen from the job's size), every A of
  the job for each, the sieve taken 2^K + extra bits, the walk k2 = 11 steps per
  lookup;
- **range**: the previous defaults, a contiguous range of the same number of
  integers through the range kernel (2^28 table taken 14 bits further);
- **C**: ``benchmarks/slice_ref.c``, the slice algorithm written plainly in C
  (one value at a time, gcc -O3 -march=native), on the same residues.

Each is measured with the 3^2 sieve off and on ("3^2": on is what a job's
default verified_below gives far from 1, and what a job from 1 gives). The
slice kernel and C must agree on the values walked and the maximum glide.
The column /Barina is slice over D. Barina's CPU worker on this machine,
estimated from the range kernel measured here and the ratio of the range
kernel to Barina's worker measured side by side on this kind of machine
(1.32 at 2^40, 1.00 at 2^64); the published fastest CPU code (B. Knockel's)
measured 2.1e10 integers/s near 2^64 and 7.8e9 near 2^40 there.

``--job-seconds S`` also runs whole jobs, as a user would: ``hpcthreads run
verify`` on [9 x 2^61, 10 x 2^61) and [2^40, 2^41) with every default, one
process, stopped by SIGTERM after S seconds; the rate is the work its ledger
records as finished (as ``hpcthreads status --json`` counts it) over S.

Run from the repository root::

    .venv/bin/python benchmarks/bench_verify.py [--repeat 3] [--width 2**22] [--job-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The C reference of the range kernel (the previous defaults) and of the slice kernel
SOURCE = HERE / "verify_ref.c"
BINARY = HERE / "_build" / "verify_ref"
SLICE_SOURCE = HERE / "slice_ref.c"
SLICE_BINARY = HERE / "_build" / "slice_ref"
MASK64 = (1 << 64) - 1
# (label, job start, job count): the job whose default layout each row measures
JOBS = [("2^40", 2**40, 2**40), ("2^64", 9 * 2**61, 2**61), ("2^100", 2**100, 2**60)]
# The range kernel over Barina's worker, side by side on this kind of machine
RANGE_OVER_BARINA = {"2^40": 1.32, "2^64": 1.00, "2^100": 1.00}


def compile_reference(source: Path = SOURCE, binary: Path = BINARY) -> None:
    binary.parent.mkdir(exist_ok=True)
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(
            ["gcc", "-O3", "-march=native", "-Wall", "-Wextra", "-o", str(binary), str(source)], check=True
        )


def run_c(start: int, count: int, bits: int, extra: int, mod9: int) -> tuple[tuple[int, int], float]:
    """verify_ref.c (the range kernel in C) on [start, start + count): ((n, max glide), seconds)."""
    args = [str(BINARY), str(start >> 64), str(start & MASK64), str(count), str(bits), str(extra), str(mod9)]
    out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return (int(out["max_glide"][0]), out["max_glide"][1]), float(out["seconds"])


def run_numba(
    backend, start: int, count: int, bits: int, extra: int, mod9: int
) -> tuple[tuple[int, int], float]:
    """The range kernel on [start, start + count) (mod9: as in a job from 1): ((n, max glide), seconds)."""
    t0 = time.perf_counter()
    raw = backend.verify_range(start, count, 100_000, bits, extra, mod9)
    seconds = time.perf_counter() - t0
    if len(raw.too_long) or len(raw.overflows):
        sys.exit("unexpected unresolved or overflowing values")
    off, _, glide = (int(x) for x in raw.glide_records[-1])
    return (start + off, glide), seconds


def slice_case(start: int, count: int, width: int, mod9: bool):
    """(plan, bfirst, blast, values per residue) of a run of `width` residues of the job's layout."""
    from hpcthreads.backends.base import SlicePlan
    from hpcthreads.config import make_job
    from hpcthreads.workloads import make_workload

    job = make_job({"name": "v", "type": "verify", "parameters": {"start": start, "count": count}}, 0)
    plan = make_workload(job).slice_plan
    a0, _, a1, _ = plan.body
    # Whole residues from the middle of the residue space, each across a0 .. a1 - 1; floor 0: every
    # value's glide counts, so the maximum compares with C's
    bfirst = 3 << (plan.K - 2)
    body = (a0, 0, a1, 0)
    skip_from = 0 if mod9 else 1 << 200
    plan = SlicePlan(plan.K, body, plan.max_steps, 0, plan.extra, mod9, skip_from, 0, False)
    return plan, bfirst, bfirst + width - 1, a1 - a0


def run_slice(backend, plan, bfirst: int, blast: int, values: int) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    raw = backend.verify_slice(plan, bfirst, 0, blast, values)
    seconds = time.perf_counter() - t0
    return seconds, raw.walked, max(g for _, g in raw.candidates)


def run_slice_c(plan, bfirst: int, blast: int, values: int) -> tuple[float, int, int | None]:
    a0 = plan.body[0]
    args = [plan.K, bfirst, blast - bfirst + 1, a0, values, plan.extra, 11, int(plan.mod9)]
    command = [str(SLICE_BINARY), *map(str, args)]
    out = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    # A value that leaves 2^120 there is left out of its maximum: no maximum to compare then
    glide = int(out["max_glide"][1]) if not out["overflows"] else None
    return float(out["seconds"]), int(out["walked"]), glide


def run_range(backend, start: int, count: int, mod9: bool) -> tuple[float, int]:
    t0 = time.perf_counter()
    raw = backend.verify_range(start, count, 100_000, 28, 14, 1 if mod9 else 0)
    return time.perf_counter() - t0, raw.walked


def kernels(args: argparse.Namespace) -> None:
    from hpcthreads.backends import make_backend

    compile_reference(SLICE_SOURCE, SLICE_BINARY)
    backend = make_backend("numba-cpu")
    header = (
        f"{'at':>6} {'K+ex':>6} {'3^2':>4} {'slice int/s':>12} {'walked':>8}"
        f" {'range int/s':>12} {'walked':>8}"
        f" {'C int/s':>12} {'slice/range':>11} {'slice/C':>8} {'/Barina':>8}"
    )
    print(header)
    print("-" * len(header))
    for label, start, count in JOBS:
        for mod9 in (False, True):
            plan, bfirst, blast, values = slice_case(start, count, args.width, mod9)
            integers = (blast - bfirst + 1) * values
            range_count = min(integers, args.range_count)
            run_slice(backend, plan, bfirst, bfirst + 64, values)  # compile, build the tables
            run_range(backend, start, 1000, mod9)
            best = {"slice": float("inf"), "range": float("inf"), "C": float("inf")}
            for _ in range(args.repeat):
                s_sec, s_walked, s_glide = run_slice(backend, plan, bfirst, blast, values)
                c_sec, c_walked, c_glide = run_slice_c(plan, bfirst, blast, values)
                if s_walked != c_walked or c_glide not in (None, s_glide):
                    sys.exit(
                        f"MISMATCH at {label}: slice {s_walked} walked, glide {s_glide}; "
                        f"C {c_walked}, {c_glide}"
                    )
                r_sec, r_walked = run_range(backend, start, range_count, mod9)
                best["slice"] = min(best["slice"], s_sec)
                best["C"] = min(best["C"], c_sec)
                best["range"] = min(best["range"], r_sec)
            rate = integers / best["slice"]
            range_rate = range_count / best["range"]
            c_rate = integers / best["C"]
            barina = range_rate / RANGE_OVER_BARINA[label]
            print(
                f"{label:>6} {plan.K:>3}+{plan.extra:<2} {'yes' if mod9 else 'no':>4} {rate:>12.3e}"
                f" {s_walked / integers:>8.4%} {range_rate:>12.3e} {r_walked / range_count:>8.4%}"
                f" {c_rate:>12.3e} {rate / range_rate:>11.2f} {rate / c_rate:>8.2f} {rate / barina:>8.2f}"
            )
    print("slice and C agree on the values walked, and on the maximum glide where no value leaves 2^120")


def whole_jobs(seconds: float) -> None:
    """The jobs of the goals, whole process with every default, stopped after `seconds`."""
    exe = Path(sys.executable).with_name("hpcthreads")
    for label, start, count in [("[9 x 2^61, 10 x 2^61)", 9 * 2**61, 2**61), ("[2^40, 2^41)", 2**40, 2**40)]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "v.h5"
            cmd = [str(exe), "run", "verify", "--start", str(start), "--count", str(count), "-o", str(out)]
            env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
            proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
            time.sleep(seconds)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            status = subprocess.run([str(exe), "status", str(out), "--json"], capture_output=True, text=True)
            done = json.loads(status.stdout)["jobs"]["verify"]["done"]
            print(
                f"job {label}: {done:.4e} integers finished in {seconds:.0f} s: "
                f"{done / seconds:.3e} integers/s"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept (default 3)")
    parser.add_argument("--width", type=lambda t: int(eval(t)), default=2**21, help="residues per slice")
    parser.add_argument(
        "--range-count", type=lambda t: int(eval(t)), default=2**30, help="integers of a range kernel's run"
    )
    parser.add_argument("--job-seconds", type=float, default=0, help="also run the goal jobs this long")
    args = parser.parse_args(argv)
    os.environ["NUMBA_NUM_THREADS"] = "1"
    kernels(args)
    if args.job_seconds:
        whole_jobs(args.job_seconds)


if __name__ == "__main__":
    main()
