"""Exact record lists that merge in any order.

A candidate list holds (n, value) pairs. Normalising keeps, in order of n,
the pairs whose value exceeds every value before them. Normalising the union
of the chunk-local records of any set of chunks never drops a record of the
whole range, so chunks may be merged as they arrive, in any order, and the
result is the range's records exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Pair = tuple[int, int]


def normalise(candidates: Iterable[Pair]) -> list[Pair]:
    """Keep the strictly increasing running maxima, in order of n."""
    kept: list[Pair] = []
    for n, value in sorted(candidates):
        if not kept or value > kept[-1][1]:
            kept.append((n, value))
    return kept


def merge(a: list[Pair], b: list[Pair]) -> list[Pair]:
    return normalise([*a, *b])


def from_table(table: np.ndarray, start: int) -> list[Pair]:
    """Rows (offset, hi, lo) of a kernel's record table to exact (n, value) pairs."""
    return [(start + int(off), (int(hi) << 64) | int(lo)) for off, hi, lo in table]


def best(records: list[Pair]) -> Pair | None:
    """The maximum with its smallest n: the last record."""
    return records[-1] if records else None


def add_histograms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) < len(b):
        a, b = b, a
    out = a.copy()
    out[: len(b)] += b
    return out
