"""What every job type provides: computing a chunk, merging, summarising."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from hpcthreads.backends.base import BaseBackend
from hpcthreads.config import Job

# The first start value whose trajectory exceeds 2**64 (a published path record).
# Below it every value fits one 64-bit word, so per-number data needs no high word.
FIRST_PEAK_OVER_2_64 = 12327829503


def needs_high_word(job: Job) -> bool:
    """True when some value of the job may not fit in 64 bits."""
    return job.start + job.size - 1 >= FIRST_PEAK_OVER_2_64


@dataclass
class ChunkOutput:
    """One chunk's results: a partial summary and its per-item arrays.

    `arrays` maps dataset names to arrays whose first axis is the chunk's
    items, written at `offset` of the job's datasets; `extra` holds rows of
    small side tables (overflow values) that the writer appends.
    """

    offset: int
    count: int
    summary: Any
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    # Checksum of the arrays as stored (io/digest.py), taken where they were computed
    digest: int | None = None


class BaseWorkload:
    """A job type: `compute` one chunk on a backend, `merge` partial summaries."""

    type = "base"

    def __init__(self, job: Job) -> None:
        self.job = job
        self.wide = needs_high_word(job)

    def empty(self) -> Any:
        raise NotImplementedError

    def summary_from_plain(self, plain: dict[str, Any]) -> Any:
        return from_plain(type(self.empty()), plain)

    def compute(self, backend: BaseBackend, offset: int, count: int) -> ChunkOutput:
        raise NotImplementedError

    def prepare(self, backend: BaseBackend) -> None:
        """Build or load what this job's chunks need on `backend` (tables), before the first chunk."""

    def merge(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def finish(self, summary: Any) -> Any:
        """The job's final summary from the merge of all its chunks (by default, that merge)."""
        return summary

    def datasets(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-item datasets this job writes: name -> (shape, dtype)."""
        return {}

    def cost_per_item(self) -> float:
        """Relative cost of one item, for chunk sizing (1 = one collatz number)."""
        return 1.0


# Summary fields added after files and ledgers were first written: absent there, None when read
ADDED_FIELDS = ("walked",)

# Summary fields that are sets of start values, merged by union, that may grow to millions (verify's
# unresolved values with a small step bound): kept apart from the running merge and committed as
# what is new, so that neither costs time in proportion to all the values so far
UNION_FIELDS = ("unresolved",)


def split_union(summary: Any) -> tuple[Any, dict[str, list[int]]]:
    """SUMMARY with its union fields emptied, and those fields' values (none when it has none)."""
    values = {name: list(getattr(summary, name)) for name in UNION_FIELDS if hasattr(summary, name)}
    if not values:
        return summary, {}
    return replace(summary, **{name: [] for name in values}), values


def to_plain(summary: Any) -> dict[str, Any]:
    """A summary dataclass as JSON-ready values with exact integers."""
    plain = {}
    for item in fields(summary):
        value = getattr(summary, item.name)
        if value is None:
            continue  # not known (a file from before the field existed): absent, as it was there
        if isinstance(value, np.ndarray):
            value = value.tolist()  # Python ints, exact
        elif isinstance(value, list):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        plain[item.name] = value
    return plain


def from_plain(kind: type, plain: dict[str, Any]) -> Any:
    """The inverse of `to_plain` for the summary dataclass `kind`."""
    values = {}
    for item in fields(kind):
        value = plain.get(item.name) if item.name in ADDED_FIELDS else plain[item.name]
        if item.name == "histogram":
            value = np.array(value, dtype=np.int64)
        elif item.name.endswith("_records"):
            value = [tuple(pair) for pair in value]
        values[item.name] = value
    return kind(**values)
