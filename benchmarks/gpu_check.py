"""GPU check: every GPU backend against numba-cpu on every job type, then its rates next to one CPU core.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--deadline 540] [--backends cupy,numba-cuda]

One script for a GPU node, within a few minutes:

1. Start. Each GPU backend of --backends starts on device 0, compiles its
   kernels (warm_up) and loads the default verify sieve, each step timed.
   A backend that cannot start is reported with the reason; where none can,
   the script says why and exits 0.
2. Check. Every raw result of each GPU backend must equal numba-cpu's, on
   ranges of --check-count start values at 1, 2^40, 2^64, across 2^64 and
   across the first start value whose trajectory leaves 128 bits. Jobs:
   collatz (summary, then per-number arrays); verify with the default sieve
   (a job from the range's start; a range of a job from 1, where the 3^2
   sieve applies too; a 5-step bound that leaves values unresolved); 4,096
   thread paths (across a boundary, centred on it); and the residue-slice
   verify (verify_slice) on --check-count values of a slice of a large job
   from the range's start (2^40 values below 2^50, else 2^61; not at 1,
   where no job is cut by residue). Records, lists, arrays and `walked` are
   compared. The first difference stops the script: exit 1, naming the
   backend, the job and the range.
3. Measure, at 1, 2^40 and 2^64, for numba-cpu (one core, the same machine)
   and each GPU backend: verify integers/s with the default sieve (2^28
   table, 14 extra bits, 100,000 steps; alone and within a job from 1),
   collatz numbers/s, thread path values/s (depth --thread-depth). Each rate
   is the best of --repeat calls of a count sized for about --seconds per
   call. The table gives each rate over the core's and, for verify, over the
   published GPU verifiers: D. Barina (J. Supercomputing 2021), 2.2e11
   integers/s on an RTX 2080; Honda et al. (2017), 1.3e12 on a TITAN X
   (64-bit values).

Past --deadline seconds from the start, whatever remains is skipped and
listed. Every figure goes to --out as JSON (where no GPU backend starts, only
when --out is given). Exit status: 0 checked, or no GPU backend; 1 a
difference, or a GPU backend whose kernels failed; 3 the deadline cut the
checks short.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import numpy as np  # noqa: E402
from gpucases import FIRST_OVER_128, raw_difference  # noqa: E402

from hpcthreads.backends import GPU_BACKENDS, make_backend  # noqa: E402
from hpcthreads.config import (  # noqa: E402
    DEFAULT_MAX_STEPS,
    DEFAULT_SIEVE_BITS,
    DEFAULT_SIEVE_EXTRA_BITS,
    make_job,
)
from hpcthreads.errors import BackendError  # noqa: E402
from hpcthreads.workloads import make_workload  # noqa: E402

SIEVE = (DEFAULT_SIEVE_BITS, DEFAULT_SIEVE_EXTRA_BITS)
RATE_OFFSETS = {"1": 1, "2^40": 2**40, "2^64": 2**64}
# Measured in this order, so that a deadline drops the least telling last
RATE_JOBS = {
    "verify slice": "integers",
    "verify": "integers",
    "verify in a job from 1": "integers",
    "collatz": "numbers",
    "thread": "path values",
}
PUBLISHED = {
    "barina": {"rate": 2.2e11, "device": "RTX 2080", "source": "D. Barina, J. Supercomputing 2021"},
    "honda": {"rate": 1.3e12, "device": "TITAN X, 64-bit", "source": "Honda et al. 2017"},
}
THREADS_CHECKED = 4096
# The two path arrays of one timed thread call, at most (device and host memory)
THREAD_BYTES = 4 << 30
INCOMPLETE = 3
Call = Callable[[Any, int, int], Any]
# The large job whose layout the slice verify is checked and timed on: 2^40 values from a start below
# 2^50 (the issue's [2^40, 2^41)), else 2^61 (as [9 x 2^61, 10 x 2^61))
SLICE_JOB_COUNTS = ((2**50, 2**40), (2**128, 2**61))
# One timed slice call takes at most this many values (well inside either job's body)
SLICE_MAX_COUNT = 1 << 39


class SliceArrays(NamedTuple):
    """A SliceRaw as arrays in order of n, so that raw_difference compares it: candidates (hi, lo,
    glide), unresolved and overflowing values (hi, lo)."""

    candidates: np.ndarray
    too_long: np.ndarray
    overflows: np.ndarray
    walked: int


def words(values: list[int], extra: list[int] | None = None) -> np.ndarray:
    rows = [(n >> 64, n & (2**64 - 1), *([] if extra is None else [extra[i]])) for i, n in enumerate(values)]
    return np.array(sorted(rows), np.uint64).reshape(len(rows), 2 if extra is None else 3)


@functools.lru_cache(maxsize=8)
def slice_workload(start: int) -> Any:
    """The verify workload of the large job from `start` (SLICE_JOB_COUNTS), or None where it is not
    cut by residue."""
    count = next(c for below, c in SLICE_JOB_COUNTS if start < below)
    job = make_job({"name": "v", "type": "verify", "parameters": {"start": start, "count": count}}, 0)
    workload = make_workload(job)
    return workload if workload.slice_plan is not None else None


def slice_call(backend: Any, start: int, count: int) -> SliceArrays:
    """verify_slice on the first `count` values of the body of the large job from `start`."""
    workload = slice_workload(start)
    layout = workload.layout
    (kind, *piece), *rest = layout.pieces(layout.prefix, count)
    assert kind == "slice" and not rest
    raw = backend.verify_slice(workload.slice_plan, *piece)
    glides = [g for _, g in raw.candidates]
    candidates = words([n for n, _ in raw.candidates], glides)
    return SliceArrays(candidates, words(raw.too_long), words(raw.overflows), raw.walked)


def applies(job: str, start: int) -> bool:
    """Whether a job is checked and timed from `start`: the slice verify where a job is cut by residue."""
    return job != "verify slice" or slice_workload(start) is not None


def skip_from(start: int) -> int:
    """Where the 3^2 sieve starts in a verify job from `start` with the default parameters."""
    job = make_job({"name": "v", "type": "verify", "parameters": {"start": start, "count": 1}}, 0)
    return make_workload(job).skip_from


def job_calls(depth: int) -> dict[str, Call]:
    """Job -> call(backend, start, count), as the job's workload calls the backend by default."""
    from_one = skip_from(1)
    return {
        "collatz": lambda b, s, n: b.collatz_range(s, n, False),
        "collatz per-number": lambda b, s, n: b.collatz_range(s, n, True),
        "verify": lambda b, s, n: b.verify_range(s, n, DEFAULT_MAX_STEPS, *SIEVE, skip_from(s)),
        "verify in a job from 1": lambda b, s, n: b.verify_range(s, n, DEFAULT_MAX_STEPS, *SIEVE, from_one),
        "verify 5 steps": lambda b, s, n: b.verify_range(s, n, 5, *SIEVE, 0),
        "thread": lambda b, s, n: b.thread_paths(s, n, depth),
        "verify slice": slice_call,
    }


def check_ranges(count: int) -> dict[str, int]:
    half = count // 2
    return {
        "1": 1,
        "2^40": 2**40,
        "2^64": 2**64,
        "across 2^64": 2**64 - half,
        "across the first 128-bit overflow": FIRST_OVER_128 - half,
    }


def checked_range(job: str, label: str, start: int, count: int) -> tuple[int, int]:
    """(start, count) of one check: the range; for thread, 4,096 start values of it, from its start
    or, where the range crosses a boundary, centred on that."""
    if job != "thread":
        return start, count
    n = min(count, THREADS_CHECKED)
    return (start + (count - n) // 2 if label.startswith("across") else start), n


def past(deadline: float) -> bool:
    return time.monotonic() > deadline


def check(report: dict, gpus: dict, cpu: Any, calls: dict[str, Call], count: int, deadline: float) -> str:
    """Each GPU backend against numba-cpu: '' when identical, else the first difference."""
    reference: dict[tuple[str, str], Any] = {}
    for name, gpu in gpus.items():
        for label, start in check_ranges(count).items():
            for job, call in calls.items():
                if not applies(job, start):
                    continue
                first, n = checked_range(job, label, start, count)
                where = f"{name} {job} on [{first}, {first + n}) ({label})"
                if past(deadline):
                    report["skipped"].append(f"check: {where}")
                    continue
                t0 = time.perf_counter()
                if (label, job) not in reference:
                    reference[label, job] = call(cpu, first, n)
                try:
                    difference = raw_difference(call(gpu, first, n), reference[label, job])
                except Exception as exc:  # noqa: BLE001 - a failing GPU backend is a result of the check
                    difference = f"raised {type(exc).__name__}: {exc}"
                entry = {"backend": name, "job": job, "range": label, "start": first, "count": n}
                entry.update(ok=difference is None, seconds=time.perf_counter() - t0)
                report["checks"].append(entry)
                if difference is not None:
                    entry["difference"] = difference
                    return f"MISMATCH {where}: {difference}"
        done = sum(c["backend"] == name for c in report["checks"])
        print(f"{name}: {done} checks, every one identical to numba-cpu", flush=True)
    return ""


def work(job: str, raw: Any, count: int) -> int:
    """Units of one call's work: start values, or for thread the values on the paths."""
    return int(raw.depth.sum()) + count if job == "thread" else count


def timed(call: Callable[[int], Any], count: int) -> tuple[float, Any]:
    t0 = time.perf_counter()
    raw = call(count)
    return time.perf_counter() - t0, raw


def measure(call: Callable[[int], Any], job: str, args: argparse.Namespace, deadline: float) -> dict | None:
    """The best rate of --repeat calls of a count sized for about --seconds each; None past the deadline."""
    cap = args.max_count
    if job == "thread":
        cap = min(cap, THREAD_BYTES // (16 * (args.thread_depth + 1)))
    if job == "verify slice":
        cap = min(cap, SLICE_MAX_COUNT)
    count = min(args.probe_count, cap)
    while True:
        if past(deadline):
            return None
        seconds, raw = timed(call, count)
        if seconds >= args.seconds / 2 or count >= cap:
            break
        grow = min(64.0, args.seconds / max(seconds, 1e-6))
        count = min(cap, max(count + 1, int(count * grow)))
    best = seconds
    for _ in range(args.repeat - 1):
        if past(deadline):
            break
        again, raw = timed(call, count)
        best = min(best, again)
    found = {"count": count, "seconds": best, "rate": work(job, raw, count) / best, "unit": RATE_JOBS[job]}
    if job.startswith("verify"):
        found["walked_fraction"] = raw.walked / count
    return found


def add_ratios(found: dict, core: dict | None, job: str) -> None:
    """Over one CPU core's rate of the same job and offset, and for verify over the published GPU rates."""
    found["per_core"] = found["rate"] / core["rate"] if core else None
    if job.startswith("verify"):
        for key, paper in PUBLISHED.items():
            found[f"vs_{key}"] = found["rate"] / paper["rate"]


def measure_all(report: dict, backends: dict, calls: dict[str, Call], args: argparse.Namespace,
                deadline: float) -> None:  # fmt: skip
    rates = report["rates"]
    for job in RATE_JOBS:
        for label, start in RATE_OFFSETS.items():
            if not applies(job, start):
                continue
            for name, backend in backends.items():
                call = calls[job]
                found = measure(lambda n, c=call, b=backend, s=start: c(b, s, n), job, args, deadline)
                if found is None:
                    report["skipped"].append(f"rate: {name} {job} at {label}")
                    continue
                rates.setdefault(name, {}).setdefault(label, {})[job] = found
                add_ratios(found, rates.get("numba-cpu", {}).get(label, {}).get(job), job)
                print(f"  {name} {job} at {label}: {found['rate']:.3e} {found['unit']}/s", flush=True)


def table(report: dict) -> str:
    """One row per job, offset and backend: the backends of a job and offset side by side."""
    head = f"{'job':<22} {'offset':<6} {'backend':<11} {'rate/s':>10} {'unit':<11} {'x core':>8}"
    lines = [head + f" {'x 2.2e11':>8} {'x 1.3e12':>8} {'walked':>7}"]
    for job in RATE_JOBS:
        for label in RATE_OFFSETS:
            for name, offsets in report["rates"].items():
                r = offsets.get(label, {}).get(job)
                if r is None:
                    continue
                cells = [r["per_core"], r.get("vs_barina"), r.get("vs_honda")]
                ratios = " ".join(f"{c:8.3g}" if c is not None else f"{'-':>8}" for c in cells)
                walked = f"{r['walked_fraction']:7.2%}" if "walked_fraction" in r else f"{'-':>7}"
                lines.append(
                    f"{job:<22} {label:<6} {name:<11} {r['rate']:10.3e} {r['unit']:<11} {ratios} {walked}"
                )
    lines.append("x core: over numba-cpu on one core of this machine; x 2.2e11: over D. Barina's")
    lines.append("verifier on an RTX 2080; x 1.3e12: over Honda et al.'s on a TITAN X; walked: the share")
    lines.append("of the range followed past the sieve")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("hpcthreads", "numpy", "numba", "numba-cuda", "cupy-cuda12x", "cupy-cuda13x",
                    "nvidia-cuda-nvrtc-cu12", "nvidia-cuda-nvcc-cu12", "nvidia-nvjitlink-cu12"):  # fmt: skip
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def attempt(query: Callable[[], Any]) -> Any:
    try:
        return query()
    except Exception as exc:  # noqa: BLE001 - a detail for the record only
        return f"not known ({type(exc).__name__}: {exc})"


def device_details(name: str) -> dict:
    """Compute capability and driver version of device 0, as the backend's library reports them."""
    if name == "cupy":
        import cupy

        runtime = cupy.cuda.runtime
        return {
            "compute_capability": attempt(lambda: cupy.cuda.Device(0).compute_capability),
            "driver": attempt(runtime.driverGetVersion),
            "runtime": attempt(runtime.runtimeGetVersion),
        }
    if name == "numba-cuda":
        from numba import cuda

        capability = attempt(lambda: ".".join(map(str, cuda.get_current_device().compute_capability)))
        driver = attempt(lambda: cuda.cudadrv.driver.driver.get_version())
        return {"compute_capability": capability, "driver": driver}
    return {}


def prepare(name: str, backend: Any) -> dict:
    """Compile the backend's kernels and load the default sieve, as a job's first chunk would."""
    entry: dict[str, Any] = {"started": True, "device": backend.describe()}
    t0 = time.perf_counter()
    backend.warm_up()
    t1 = time.perf_counter()
    backend.verify_range(2**40, 1, DEFAULT_MAX_STEPS, *SIEVE, 0)
    entry.update(compile_seconds=t1 - t0, sieve_seconds=time.perf_counter() - t1, **device_details(name))
    print(f"{entry['device']}: kernels {t1 - t0:.1f} s, sieve {entry['sieve_seconds']:.1f} s", flush=True)
    return entry


def start_gpus(names: list[str], starters: dict[str, Callable[[], Any]], report: dict) -> dict:
    gpus = {}
    for name in names:
        try:
            backend = starters[name]()
        except BackendError as exc:
            report["backends"][name] = {"started": False, "reason": str(exc)}
            print(f"{name}: cannot start here ({exc})", flush=True)
            continue
        try:
            report["backends"][name] = prepare(name, backend)
            gpus[name] = backend
        except Exception as exc:  # noqa: BLE001 - kernels a driver refuses: a failure of the check
            reason = f"its kernels failed: {type(exc).__name__}: {exc}"
            report["backends"][name] = {"started": False, "reason": reason}
            report["failures"].append(f"{name}: {reason}")
            print(f"FAIL {name}: {reason}", flush=True)
    return gpus


def parse(argv: list[str] | None, names: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--backends", default=",".join(names), help=f"GPU backends to check, of {', '.join(names)}")
    add("--out", type=Path, help="JSON file of every figure (default gpu_check.json)")
    add("--deadline", type=float, default=540.0, help="seconds from the start; then the rest is skipped")
    add("--check-count", type=int, default=1 << 20, help="start values per checked range")
    add("--seconds", type=float, default=1.0, help="aim of each timed call, seconds")
    add("--repeat", type=int, default=3, help="timed calls per rate; the best is kept")
    add("--probe-count", type=int, default=1 << 12, help="the first count timed, before sizing")
    add("--max-count", type=int, default=1 << 44, help="the largest count of one timed call")
    add("--thread-depth", type=int, default=500, help="steps per thread, checked and timed")
    args = parser.parse_args(argv)
    args.backends = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = [n for n in args.backends if n not in names]
    if unknown or min(args.check_count, args.repeat, args.probe_count, args.max_count) < 1:
        parser.error(f"--backends of {', '.join(names)}; counts and --repeat at least 1")
    return args


def write(report: dict, path: Path, started: float) -> None:
    report["elapsed_seconds"] = time.monotonic() - started
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)
    print(f"figures written to {path}")


def new_report(args: argparse.Namespace) -> dict[str, Any]:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings.update(sieve_bits=SIEVE[0], sieve_extra_bits=SIEVE[1], max_steps=DEFAULT_MAX_STEPS)
    return {
        "host": platform.node(), "cpu": cpu_name(), "versions": versions(), "published": PUBLISHED,
        "settings": settings, "backends": {}, "checks": [], "rates": {}, "skipped": [], "failures": [],
    }  # fmt: skip


def main(argv: list[str] | None = None, starters: dict[str, Callable[[], Any]] | None = None) -> int:
    """Check, then measure; `starters` (name -> backend factory) stand in for the GPU backends in tests."""
    started = time.monotonic()
    starters = starters or {name: (lambda n=name: make_backend(n, 0)) for name in GPU_BACKENDS}
    args = parse(argv, list(starters))
    deadline, out = started + args.deadline, args.out or Path("gpu_check.json")
    report = new_report(args)
    gpus = start_gpus(args.backends, starters, report)
    if not gpus:
        report["verdict"] = "failed" if report["failures"] else "no GPU backend"
        print("no GPU backend can start on this machine: nothing to check")
        if args.out or report["failures"]:
            write(report, out, started)
        return 1 if report["failures"] else 0
    cpu = make_backend("numba-cpu")
    report["backends"]["numba-cpu"] = prepare("numba-cpu", cpu)
    calls = job_calls(args.thread_depth)
    mismatch = check(report, gpus, cpu, calls, args.check_count, deadline)
    if mismatch:
        report["verdict"] = "mismatch"
        report["failures"].append(mismatch)
        print(mismatch, file=sys.stderr)
        write(report, out, started)
        return 1
    checks_skipped = bool(report["skipped"])
    measure_all(report, {"numba-cpu": cpu, **gpus}, calls, args, deadline)
    print(table(report))
    if report["skipped"]:
        shown = "; ".join(report["skipped"][:4]) + ("; ..." if len(report["skipped"]) > 4 else "")
        print(f"deadline of {args.deadline:g} s reached: skipped {len(report['skipped'])}: {shown}")
    status = 1 if report["failures"] else INCOMPLETE if checks_skipped else 0
    report["verdict"] = {0: "ok", 1: "failed", INCOMPLETE: "checks incomplete"}[status]
    write(report, out, started)
    return status


if __name__ == "__main__":
    sys.exit(main())
