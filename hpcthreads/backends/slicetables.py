"""The tables of the residue-slice sieve (slicesieve), shared by every backend.

A 2^K sieve is never stored: the stored 2^k1 sieve (sieveplan.sieve_table,
cached per machine) and two extension tables of e1 and e2 bits
(steptables.build_sieve_extension, built in memory in milliseconds) give
each residue's K steps, and a table of 2^k2 entries takes the walk k2 steps
per lookup (slicesieve.walk_table).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hpcthreads.backends.sieveplan import sieve_table

# Steps of T per lookup of the survivors' walk: 2^11 entries of two words (32 KiB, one L1 cache)
DEFAULT_WALK_BITS = 11
# The stored sieve under large K; the extensions take up to 2 x 12 bits more
STORED_BITS = 28
MAX_EXTENSION_BITS = 12
MIN_SLICE_BITS = 8
MAX_SLICE_BITS = STORED_BITS + 2 * MAX_EXTENSION_BITS - 1  # 51

_TABLES: dict[tuple[int, int], SliceTables] = {}


class SliceTables(NamedTuple):
    """Everything the slice kernel needs for one K (and k2)."""

    K: int
    k1: int
    res: np.ndarray
    packed: np.ndarray
    kill1: np.ndarray
    ce1: np.ndarray
    de1: np.ndarray
    e1: int
    kill2: np.ndarray
    ce2: np.ndarray
    de2: np.ndarray
    e2: int
    p3hi: np.ndarray
    p3lo: np.ndarray
    walk: np.ndarray
    k2: int
    # Every value the sieve drops (n >= exact_from) has a glide of at most glide_max
    glide_max: int
    exact_from: int


def levels(K: int) -> tuple[int, int, int]:
    """(k1, e1, e2): the stored sieve's bits and the two extensions' for a 2^K slice sieve."""
    if not MIN_SLICE_BITS <= K <= MAX_SLICE_BITS:
        raise ValueError(f"slice sieve bits must be {MIN_SLICE_BITS}..{MAX_SLICE_BITS}, got {K}")
    k1 = STORED_BITS if K >= 40 else (K + 1) // 2
    ext = K - k1
    e1 = min(MAX_EXTENSION_BITS, (ext + 1) // 2)
    return k1, e1, ext - e1


def slice_tables(K: int, k2: int = DEFAULT_WALK_BITS) -> SliceTables:
    """The tables of the 2^K slice sieve, built once per process (the stored sieve once per machine)."""
    key = (K, k2)
    if key not in _TABLES:
        from hpcthreads.backends import slicesieve, steptables

        k1, e1, e2 = levels(K)
        res, packed, _, glide_max, exact_from = sieve_table(k1)
        if int(exact_from) > 1 << K:
            # workloads.slices relies on every dropped value of the body (n >= 2^K) dropping
            raise AssertionError(f"the stored 2^{k1} sieve holds only from {int(exact_from)}, above 2^{K}")
        cs1 = np.zeros(k1 + 1, np.bool_)
        cs1[np.unique(packed >> np.uint64(56)).astype(np.int64)] = True
        kill1, ce1, de1, gm1 = steptables.build_sieve_extension(k1, e1, cs1)
        cs2 = np.ones(k1 + e1 + 1, np.bool_)
        kill2, ce2, de2, gm2 = steptables.build_sieve_extension(k1 + e1, e2, cs2)
        powers = [3**c for c in range(K + 1)]
        p3hi = np.array([p >> 64 for p in powers], np.uint64)
        p3lo = np.array([p & (2**64 - 1) for p in powers], np.uint64)
        _TABLES[key] = SliceTables(
            K, k1, res, packed, kill1, ce1, de1, e1, kill2, ce2, de2, e2, p3hi, p3lo,
            slicesieve.walk_table(k2), k2,
            max(glide_max, int(gm1), int(gm2)), max(int(exact_from), 1 << K),
        )  # fmt: skip
    return _TABLES[key]


def survivors_reference(K: int, join: bool) -> list[int]:
    """The residues B < 2^K that the slice sieve keeps, by brute force (small K only; for tests)."""
    kept = []
    for b in range(1 << K):
        t, c, alive = b, 0, True
        for j in range(1, K + 1):
            if t & 1:
                t, c = (3 * t + 1) >> 1, c + 1
            else:
                t >>= 1
            if 3**c < 2**j:
                alive = False
                break
        if alive and join and b >= 1:
            u, cu = b - 1, 0
            for _ in range(K):
                if u & 1:
                    u, cu = (3 * u + 1) >> 1, cu + 1
                else:
                    u >>= 1
            alive = not (u == t and cu == c)
        if alive:
            kept.append(b)
    return kept


_PER_VALUE: dict[tuple[int, int], tuple[np.ndarray, int]] = {}


def per_value_extension(K: int, ex: int) -> tuple[np.ndarray, int]:
    """(kill, glide_max): the 2^K sieve taken `ex` bits further per value, for every c (n >= 2^(K+ex))."""
    key = (K, ex)
    if key not in _PER_VALUE:
        from hpcthreads.backends import steptables

        kill, _, _, glide_max = steptables.build_sieve_extension(K, ex, np.ones(K + 1, np.bool_))
        _PER_VALUE[key] = (kill, int(glide_max) if ex else 0)
    return _PER_VALUE[key]
