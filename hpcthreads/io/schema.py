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
