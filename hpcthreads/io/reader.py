"""Reading a results file back as plain Python values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpcthreads.errors import OutputError
from hpcthreads.io import schema
from hpcthreads.io.paths import holder, kind_of, run_output
from hpcthreads.io.summaries import read_summary

RUN_ATTRS = (
    "software",
    "created",
    "state",
    "backend",
    "ranks",
    "host",
    "wall_seconds",
    "makespan_seconds",
    "coordination_levels",
    "sub_coordinators",
    "simulated",
)


def open_results(path: Path) -> Any:
    """Open a results file read-only, with a clear error if it is not one."""
    import h5py

    path = Path(path)
    kind = kind_of(path)
    if kind is None:
        raise OutputError(f"{str(path)!r} does not exist")
    if kind != "file":
        raise OutputError(f"{str(path)!r} is a {kind}, not a results file")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        writing = holder(run_output(path))
        if writing:
            raise OutputError(
                f"{str(path)!r} is being written by a run ({writing}); "
                f"its progress: hpcthreads status {run_output(path)}"
            ) from None
        raise OutputError(f"{str(path)!r} is not a readable HDF5 file ({_first_line(exc)})") from None
    try:
        _check_layout(handle, path)
    except BaseException:
        handle.close()
        raise
    return handle


def _check_layout(handle: Any, path: Path) -> None:
    if handle.attrs.get("format") != schema.FORMAT_NAME:
        raise OutputError(f"{str(path)!r} is not an hpcthreads results file")
    version = handle.attrs.get("format_version")
    if version is None or int(version) > schema.FORMAT_VERSION:
        raise OutputError(
            f"{str(path)!r} has format_version {version}; this hpcthreads reads up to "
            f"{schema.FORMAT_VERSION}: update hpcthreads to read it"
        )
    if "jobs" not in handle or "config" not in handle.attrs:
        raise OutputError(
            f"{str(path)!r} has no /jobs or no job configuration: it is not a complete results file"
        )


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


def read_results(path: Path) -> dict[str, Any]:
    """`{"run": {...}, "jobs": {NAME: {...}}}` with exact integers."""
    with open_results(path) as handle:
        run = {key: _plain(handle.attrs[key]) for key in RUN_ATTRS if key in handle.attrs}
        jobs = {name: read_summary(group) for name, group in handle["jobs"].items()}
    results = {"file": str(path), "run": run, "jobs": jobs}
    # First chunk handed out to last result in: what scaling benchmarks compare with the ideal
    if "makespan_seconds" in run:
        results["makespan_seconds"] = run["makespan_seconds"]
    if "simulated" in run:
        results["simulated"] = run["simulated"]
    return results


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
