"""Job summaries to and from their HDF5 form (attributes and small datasets)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcthreads.io.schema import decode_int, decode_table, encode_int, encode_table
from hpcthreads.io.validate import attr
from hpcthreads.workloads.collatz import CollatzSummary
from hpcthreads.workloads.thread import ThreadSummary
from hpcthreads.workloads.verify import VerifySummary


def write_summary(group: Any, summary: Any) -> None:
    """Write a finished job's summary into its group."""
    if isinstance(summary, CollatzSummary):
        _write_collatz(group, summary)
    elif isinstance(summary, VerifySummary):
        _write_verify(group, summary)
    elif isinstance(summary, ThreadSummary):
        for key in ("count", "reached_one", "total_depth", "max_depth_reached"):
            group.attrs[key] = encode_int(getattr(summary, key))
    else:
        raise TypeError(f"no HDF5 form for {type(summary).__name__}")


def _write_records(group: Any, name: str, pairs: list[tuple[int, int]]) -> None:
    records = group.require_group("records")
    data = encode_table(pairs, 2) if pairs else np.zeros((0, 2), np.int64)
    dset = records.create_dataset(name, data=data)
    dset.attrs["columns"] = "n, value"


def _put_max(group: Any, name: str, best: tuple[int, int] | None) -> None:
    if best is not None:
        group.attrs[f"{name}_n"] = encode_int(best[0])
        group.attrs[name] = encode_int(best[1])


def _write_collatz(group: Any, s: CollatzSummary) -> None:
    group.attrs["count"] = encode_int(s.count)
    group.attrs["sum_delay"] = encode_int(s.sum_delay)
    group.create_dataset("delay_histogram", data=s.histogram.astype(np.int64))
    for name, pairs in (("delay", s.delay_records), ("path", s.path_records), ("glide", s.glide_records)):
        _write_records(group, name, pairs)
    _put_max(group, "max_delay", s.max_delay)
    _put_max(group, "max_peak", s.max_peak)
    _put_max(group, "max_glide", s.max_glide)


def _write_verify(group: Any, s: VerifySummary) -> None:
    group.attrs["count"] = encode_int(s.count)
    group.attrs["covered"] = encode_int(s.covered)
    if s.walked is not None:
        group.attrs["walked"] = encode_int(s.walked)
    _write_records(group, "glide", s.glide_records)
    _put_max(group, "max_glide", s.max_glide)
    data = encode_table([(n,) for n in s.unresolved], 1)[:, 0] if s.unresolved else np.zeros(0, np.int64)
    group.create_dataset("unresolved", data=data)


def _int(group: Any, key: str) -> int:
    """An integer attribute of a job group (None when absent), through the typed accessor."""
    return attr(group, key, "int")


def _get_max(group: Any, name: str) -> list[int] | None:
    if name not in group.attrs:
        return None
    return [_int(group, f"{name}_n"), _int(group, name)]


def _pairs(data: Any) -> list[tuple[int, int]]:
    return [(n, v) for n, v in decode_table(data[()])]


def load_summary(group: Any) -> Any:
    """A finished job group's summary as the workload's dataclass, to merge with others."""
    kind = attr(group, "type", "text")
    if kind == "collatz":
        records = group["records"]
        return CollatzSummary(
            count=_int(group, "count"),
            sum_delay=_int(group, "sum_delay"),
            histogram=group["delay_histogram"][()].astype(np.int64),
            delay_records=_pairs(records["delay"]),
            path_records=_pairs(records["path"]),
            glide_records=_pairs(records["glide"]),
        )
    if kind == "verify":
        return VerifySummary(
            count=_int(group, "count"),
            glide_records=_pairs(group["records"]["glide"]),
            unresolved=[decode_int(v) for v in group["unresolved"][()]],
            walked=_int(group, "walked"),
        )
    keys = ("count", "reached_one", "total_depth", "max_depth_reached")
    return ThreadSummary(**{key: _int(group, key) for key in keys})


def read_summary(group: Any) -> dict[str, Any]:
    """A job group as plain Python values with exact integers (the `inspect --json` form)."""
    attrs = group.attrs
    kind = attr(group, "type", "text")
    out: dict[str, Any] = {"type": kind, "state": attr(group, "state", "text") or "unknown"}
    out["start"] = _int(group, "start")
    if kind == "thread":
        out["thread_count"] = _int(group, "size")
        out["max_depth"] = _int(group, "max_depth")
        for key in ("reached_one", "total_depth", "max_depth_reached"):
            if key in attrs:
                out[key] = _int(group, key)
        if "total_depth" in attrs:
            out["steps"] = out["total_depth"]  # the work: every step of every thread
        return out
    out["count"] = _int(group, "size")
    records = group.get("records")
    if kind == "collatz":
        if "sum_delay" in attrs:
            out["sum_delay"] = _int(group, "sum_delay")
            out["steps"] = out["sum_delay"]  # the work: every step of every trajectory to 1
        for name in ("max_delay", "max_peak", "max_glide"):
            out[name] = _get_max(group, name)
        for name in ("delay", "path", "glide"):
            out[f"{name}_records"] = decode_table(records[name][()]) if records else []
    else:
        out["max_steps"] = _int(group, "max_steps")
        # What the job assumed and how it was cut (absent in files from before they existed)
        for key in ("verified_below", "sieve_slice_bits", "sieve_join"):
            if key in attrs:
                out[key] = _int(group, key)
        out["covered"] = _int(group, "covered") if "covered" in attrs else 0
        # None in a file written before it was counted
        out["walked"] = _int(group, "walked")
        out["max_glide"] = _get_max(group, "max_glide")
        out["glide_records"] = decode_table(records["glide"][()]) if records and "glide" in records else []
        out["unresolved"] = [decode_int(v) for v in group["unresolved"][()]] if "unresolved" in group else []
    return out
