"""Reading a results file back as plain Python values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpcthreads.errors import OutputError
from hpcthreads.io.paths import holder, kind_of, run_output
from hpcthreads.io.summaries import read_summary
from hpcthreads.io.validate import check_results, reading, root_attrs

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
    """Open a results file read-only, with a clear error if it is not one or cannot be trusted.

    Every reader of results files comes through here: `validate.check_results`
    refuses links, declared data the file does not store, and objects of the
    wrong type, shape or size before anything is read.
    """
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
        check_results(handle, path)
    except BaseException:
        handle.close()
        raise
    return handle


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


def read_results(path: Path) -> dict[str, Any]:
    """`{"run": {...}, "jobs": {NAME: {...}}}` with exact integers."""
    with open_results(path) as handle, reading(path):
        attrs = root_attrs(handle)
        run = {key: attrs[key] for key in RUN_ATTRS if key in attrs}
        jobs = {name: read_summary(group) for name, group in handle["jobs"].items()}
    results = {"file": str(path), "run": run, "jobs": jobs}
    # First chunk handed out to last result in: what scaling benchmarks compare with the ideal
    if "makespan_seconds" in run:
        results["makespan_seconds"] = run["makespan_seconds"]
    if "simulated" in run:
        results["simulated"] = run["simulated"]
    return results
