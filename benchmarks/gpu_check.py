"""GPU check: every GPU backend against numba-cpu, then throughput per backend.

For each GPU backend that starts here (numba-cuda, cupy), the script first
compares every raw result with numba-cpu on the same small ranges at offsets
1, 2**40 and 2**64 (collatz with and without per-number arrays, verify,
thread paths, the 2**128 boundary) and stops on any difference. It then times
collatz and verify on one large range per offset and prints numbers per
second and the ratio to one CPU core (numba-cpu, timed on a smaller range).
Where no GPU backend starts it says why and exits 0. Budget: under 5 minutes.

Run from the repository root::

    python benchmarks/gpu_check.py [--count N] [--check-count N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from gpucases import FIRST_OVER_128, compare_backends  # noqa: E402

from hpcthreads.backends import GPU_BACKENDS, make_backend  # noqa: E402
from hpcthreads.errors import BackendError  # noqa: E402

OFFSETS = {"1": 1, "2^40": 2**40, "2^64": 2**64}


def rate(call, count: int, repeat: int = 3) -> float:
    """Best numbers per second of `repeat` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return count / best


def check(gpu, cpu, count: int) -> None:
    for label, start in OFFSETS.items():
        t0 = time.perf_counter()
        compare_backends(gpu, cpu, start, count, depth=500)
        print(f"  correct at {label}: {count} numbers ({time.perf_counter() - t0:.1f} s)", flush=True)
    compare_backends(gpu, cpu, FIRST_OVER_128 - count // 2, count)
    print(f"  correct across 2^128 overflow: {count} numbers", flush=True)


def measure(backend, count: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for label, start in OFFSETS.items():
        out[label] = {
            "collatz": rate(lambda s=start: backend.collatz_range(s, count, False), count),
            "verify": rate(lambda s=start: backend.verify_range(s, count, 100_000), count),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1 << 26, help="numbers per timed GPU call")
    parser.add_argument("--cpu-count", type=int, default=1 << 20, help="numbers per timed CPU call")
    parser.add_argument("--check-count", type=int, default=1 << 16, help="numbers per correctness range")
    args = parser.parse_args()
    gpus = {}
    for name in GPU_BACKENDS:
        try:
            gpus[name] = make_backend(name, 0)
        except BackendError as exc:
            print(f"{name}: not available here ({exc})")
    if not gpus:
        print("no GPU backend can start on this machine: nothing to check (exit 0)")
        return 0
    cpu = make_backend("numba-cpu")
    cpu.warm_up()
    for gpu in gpus.values():
        print(f"{gpu.describe()}: checking against numba-cpu", flush=True)
        gpu.warm_up()
        check(gpu, cpu, args.check_count)
    cpu_rates = measure(cpu, args.cpu_count)
    print(f"\n{'backend':<12} {'offset':<6} {'collatz/s':>12} {'x core':>8} {'verify/s':>12} {'x core':>8}")
    for name, backend in [("numba-cpu", cpu), *gpus.items()]:
        rates = cpu_rates if backend is cpu else measure(backend, args.count)
        for label, r in rates.items():
            c, v = r["collatz"], r["verify"]
            cc, cv = cpu_rates[label]["collatz"], cpu_rates[label]["verify"]
            print(f"{name:<12} {label:<6} {c:12.3e} {c / cc:8.1f} {v:12.3e} {v / cv:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
