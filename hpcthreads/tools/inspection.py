"""Human-readable summaries: of a results file (`inspect`) and of this machine (`info`)."""

from __future__ import annotations

import platform
from typing import Any


def _pair(value: list[int] | None) -> str:
    return "-" if value is None else f"{value[1]:,} at n = {value[0]:,}"


def _records(pairs: list[list[int]], limit: int = 8) -> str:
    shown = ", ".join(f"{n:,}" for n, _ in pairs[-limit:])
    more = f"{len(pairs) - limit} earlier, then " if len(pairs) > limit else ""
    return f"{len(pairs)} ({more}{shown})"


def format_job(name: str, job: dict[str, Any]) -> list[str]:
    kind = job["type"]
    lines = [f"job {name} [{kind}, {job['state']}]"]
    if kind == "thread":
        lines.append(
            f"  threads {job['thread_count']:,} from {job['start']:,}, max depth {job['max_depth']:,}"
        )
        if "reached_one" in job:
            lines.append(f"  reached 1: {job['reached_one']:,}; deepest: {job['max_depth_reached']:,} steps")
        return lines
    lines.append(f"  range [{job['start']:,}, {job['start'] + job['count']:,}): {job['count']:,} numbers")
    if kind == "collatz" and "sum_delay" in job:
        mean = job["sum_delay"] / job["count"]
        lines.append(f"  mean delay {mean:.3f}")
        lines.append(f"  max delay  {_pair(job['max_delay'])}")
        lines.append(f"  max peak   {_pair(job['max_peak'])}")
        lines.append(f"  max glide  {_pair(job['max_glide'])}")
        for kind_ in ("delay", "path", "glide"):
            lines.append(f"  {kind_} records: {_records(job[kind_ + '_records'])}")
    elif kind == "verify":
        lines.append(f"  covered {job['covered']:,}; max glide {_pair(job['max_glide'])}")
        if "verified_below" in job:
            bits = job.get("sieve_slice_bits")
            cut = f"by residue mod 2^{bits}" if bits else "in ranges"
            join = ", join rule on (glides of walked values only)" if job.get("sieve_join") else ""
            lines.append(f"  assumes every n below {job['verified_below']:,} verified; cut {cut}{join}")
        if job.get("walked") is not None and job["count"]:
            share = job["walked"] / job["count"]
            lines.append(f"  walked past the sieve {job['walked']:,} ({share:.4%} of the range)")
        lines.append(f"  glide records: {_records(job['glide_records'])}")
        unresolved = job["unresolved"]
        lines.append(f"  unresolved (over {job['max_steps']:,} steps): {len(unresolved)} {unresolved[:10]}")
    return lines


def format_summary(results: dict[str, Any]) -> str:
    run = results["run"]
    lines = [
        f"{results['file']}: {run.get('software', '?')}, state {run.get('state', '?')}, "
        f"{run.get('ranks', '?')} rank(s), backend {run.get('backend', '?')}, "
        f"{run.get('wall_seconds', 0):.2f} s"
    ]
    if "makespan_seconds" in run:
        levels = run.get("coordination_levels", 1)
        subs = f", {run.get('sub_coordinators', 0)} sub-coordinator(s)" if levels > 1 else ""
        lines.append(f"  makespan {run['makespan_seconds']:.3f} s, {levels} level(s) of coordination{subs}")
    if "simulated" in run:
        lines.append(f"  NO RESULTS: {run['simulated']}")
    for name, job in results["jobs"].items():
        lines.extend(format_job(name, job))
    return "\n".join(lines)


def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "installed")
    except Exception as exc:  # noqa: BLE001 - report any import failure
        return f"not available ({exc.__class__.__name__})"


def environment_report() -> str:
    """What this process can use: versions, MPI, parallel HDF5, backends."""
    from hpcthreads import __version__
    from hpcthreads.backends import available_backends

    lines = [f"hpcthreads {__version__}", f"python     {platform.python_version()} ({platform.machine()})"]
    lines.append(f"numpy      {_version('numpy')}")
    lines.append(f"numba      {_version('numba')}")
    try:
        import h5py

        mpi = "with MPI (parallel mpio driver)" if h5py.get_config().mpi else "without MPI (gather writer)"
        lines.append(f"h5py       {h5py.__version__}, HDF5 {h5py.version.hdf5_version}, {mpi}")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"h5py       not available ({exc})")
    lines.append(f"mpi        {_mpi_report()}")
    for name, state in available_backends().items():
        lines.append(f"backend    {name}: {state}")
    return "\n".join(lines)


def _mpi_report() -> str:
    try:
        import mpi4py
        from mpi4py import MPI

        library = MPI.Get_library_version().splitlines()[0].strip()
        return f"mpi4py {mpi4py.__version__}; {library}; {MPI.COMM_WORLD.Get_size()} rank(s)"
    except Exception as exc:  # noqa: BLE001
        return f"not available ({exc.__class__.__name__}: {exc})"


def warm_up_caches() -> str:
    """Compile the numba-cpu kernels into Numba's cache and build the default verify tables.

    What the first run on a machine (or in a fresh image) would otherwise do
    on every rank at start-up; returns a line saying how long it took and where.
    """
    import time

    from hpcthreads.backends import kernelcache, make_backend
    from hpcthreads.backends.tablecache import cache_dir
    from hpcthreads.config import DEFAULT_MAX_STEPS, DEFAULT_SIEVE_BITS, DEFAULT_SIEVE_EXTRA_BITS

    t0 = time.perf_counter()
    backend = make_backend("numba-cpu")
    backend.warm_up()
    backend.verify_range(2**60, 1, DEFAULT_MAX_STEPS, DEFAULT_SIEVE_BITS, DEFAULT_SIEVE_EXTRA_BITS)
    seconds = time.perf_counter() - t0
    return f"kernels compiled into {kernelcache.configure()}, tables in {cache_dir()} ({seconds:.1f} s)"


def warm_up_cupy(arches: list[str]) -> str:
    """Compile the cupy backend's kernels into CuPy's disk cache for these architectures, no GPU needed.

    Returns lines saying what was compiled, where the cache is and how long it took.
    """
    from hpcthreads.backends.cupycache import warm_up_arches

    lines = []
    for module in warm_up_arches(arches):
        done = f"compiled by NVRTC in {module.seconds:.1f} s" if module.compiled else "already cached"
        lines.append(f"cupy kernels for {module.arch}: {done}: {module.path}")
    lines.append(f"CuPy kernel cache: {module.path.parent} (CUPY_CACHE_DIR; devices of these architectures")
    lines.append("  find the kernels there and compile nothing)")
    return "\n".join(lines)
