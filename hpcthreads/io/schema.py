"""The HDF5 layout of a results file, defined in this one place.

See docs/format.md for the user-facing description. Integers that may exceed
64 bits (start values, peaks, sums) are stored as int64 where every value of
the attribute or dataset fits, and as ASCII decimal strings otherwise, so no
value is ever rounded; `decode_int` reads both.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

FORMAT_NAME = "hpcthreads-results"
FORMAT_VERSION = 1
CONVENTIONS = (
    "standard map: n -> n/2 if n is even, 3n+1 if n is odd; "
    "delay = steps to reach 1 (delay(1)=0, delay(27)=111); "
    "peak = largest value of the trajectory, n included (peak(27)=9232); "
    "glide = steps until the value first drops below n (glide(27)=96, glide(1)=0); "
    "records are range-local: n whose value exceeds that of every smaller n of the range"
)
INT_ENCODING = "int64 where every value fits, else ASCII decimal strings"
INT64_MAX = 2**63 - 1

# Root attributes set at creation, and the run states the `state` attribute takes
STATE_RUNNING = "running"
STATE_COMPLETE = "complete"
STATE_FAILED = "failed"
STATE_INTERRUPTED = "interrupted"

# Objects of a job group written when the job completes (the rest exists from the start)
SUMMARY_OBJECTS = ("records", "delay_histogram", "unresolved", "peak_overflow", "overflow")

# /run/ranks: one row per rank; /run/chunks: one row per finished chunk
RANK_COLUMNS = {
    "host": "text",
    "device": "text",
    "backend": "text",
    # The rank's CUDA_VISIBLE_DEVICES once bound ("(unset)": every device visible)
    "cuda_visible_devices": "text",
    "items": "int64",
    "busy": "float64",
    "idle": "float64",
    "chunks": "int64",
    "stolen_from": "int64",
    "stolen_by": "int64",
    "gave_back": "int64",
    "cpu": "float64",
    "idle_cpu": "float64",
    "wall": "float64",
}
CHUNK_COLUMNS = {
    "job": "int32",
    "offset": "int64",
    "count": "int64",
    "rank": "int32",
    "started": "float64",
    "ended": "float64",
    "stolen": "bool",
}

# What readers expect of a file (hpcthreads/io/validate.py refuses anything else)
# The kind of every root and job attribute a reader uses: int, text, float or bool
ROOT_ATTRS = {
    "format": "text",
    "format_version": "int",
    "config": "text",
    "state": "text",
    "software": "text",
    "created": "text",
    "backend": "text",
    "host": "text",
    "simulated": "text",
    "integer_encoding": "text",
    "ranks": "int",
    "coordination_levels": "int",
    "sub_coordinators": "int",
    "wall_seconds": "float",
    "makespan_seconds": "float",
}
MAXIMA = ("max_delay", "max_peak", "max_glide")
JOB_ATTRS = {
    **dict.fromkeys(("type", "state", "priority", "parameters", "store", "error"), "text"),
    **dict.fromkeys(("gpu_preferred", "high_word"), "bool"),
    "wall_seconds": "float",
    **dict.fromkeys(MAXIMA + tuple(f"{name}_n" for name in MAXIMA), "int"),
    **dict.fromkeys(
        ("start", "size", "count", "thread_count", "max_depth", "max_steps", "sum_delay", "covered"), "int"
    ),
    **dict.fromkeys(("walked", "reached_one", "total_depth", "max_depth_reached"), "int"),
    **dict.fromkeys(("verified_below", "sieve_slice_bits", "sieve_join", "summary_digest"), "int"),
    "attrs_digest": "int",
}
# Summary attributes and objects a complete job of each type has
COMPLETE_ATTRS = {
    "collatz": ("count", "sum_delay"),
    "verify": ("count",),
    "thread": ("count", "reached_one", "total_depth", "max_depth_reached"),
}
COMPLETE_OBJECTS = {
    "collatz": ("delay_histogram", "records/delay", "records/path", "records/glide"),
    "verify": ("records/glide", "unresolved"),
    "thread": (),
}
# Per-item datasets: name -> (dtype, whether it has one column per step), those written together
PER_ITEM = {
    "collatz": {"delay": ("uint32", False), "glide": ("uint32", False), "peak": ("uint64", False)},
    "verify": {},
    "thread": {"paths": ("uint64", True), "depth": ("uint32", False), "final": ("uint64", False)},
}
HIGH_WORDS = {"collatz": ("peak",), "verify": (), "thread": ("paths", "final")}
# Tables of exact integers: name -> columns (0: one value per row)
TABLES = {"peak_overflow": 2, "overflow": 3, "unresolved": 0}
SUMMARY_TABLES = {"collatz": ("peak_overflow",), "verify": ("unresolved",), "thread": ("overflow",)}
RECORDS = {"collatz": ("delay", "path", "glide"), "verify": ("glide",), "thread": ()}
# Columns of /run/ranks that `report` reads
REPORTED_RANK_COLUMNS = ("rank", "device", "items", "busy", "idle", "stolen_from", "stolen_by")


def encode_int(value: int) -> int | str:
    return value if -INT64_MAX <= value <= INT64_MAX else str(value)


def decode_int(value: Any) -> int:
    if isinstance(value, bytes):
        value = value.decode("ascii")
    return int(value)


def encode_table(rows: list[tuple[int, ...]], width: int) -> np.ndarray:
    """Rows of exact integers as an int64 array, or decimal strings if any is too big."""
    if all(-INT64_MAX <= v <= INT64_MAX for row in rows for v in row):
        return np.array(rows, dtype=np.int64).reshape(len(rows), width)
    text = [[str(v).encode("ascii") for v in row] for row in rows]
    size = max(len(t) for row in text for t in row)
    return np.array(text, dtype=f"S{size}").reshape(len(rows), width)


def decode_table(data: np.ndarray) -> list[list[int]]:
    return [[decode_int(v) for v in row] for row in data]


def job_path(name: str) -> str:
    return f"/jobs/{name}"


def chunk_shape(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """HDF5 chunk shape of about 1 MiB along the first axis."""
    row = itemsize * int(np.prod(shape[1:], dtype=np.int64))
    rows = max(1, min(shape[0], (1 << 20) // max(row, 1)))
    return (rows, *shape[1:])


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def pair(value: tuple[int, int] | None) -> list[int] | None:
    return list(value) if value is not None else None
