"""Reading a results file back as plain Python values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpcthreads.errors import OutputError
from hpcthreads.io import schema
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
    if not path.exists():
        raise OutputError(f"{str(path)!r} does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise OutputError(f"{str(path)!r} is not a readable HDF5 file ({exc})") from None
    if handle.attrs.get("format") != schema.FORMAT_NAME:
        handle.close()
        raise OutputError(f"{str(path)!r} is not an hpcthreads results file")
    return handle


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
