"""The verify sieve's tables and how a range is cut for it, shared by every backend.

The tables (steptables.build_sieve and its extension) are built once per
machine and cached (tablecache); each process loads them once, and a GPU
backend copies them to its device once. A range is cut where the sieve a
value gets changes (sieve_pieces), so that what is walked, and the `walked`
count, depend only on the range and the sieve settings, never on where a
chunk starts or on the backend.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hpcthreads.backends.base import VerifyRaw
from hpcthreads.backends.tablecache import load_or_build

_EMPTY = np.zeros(0, np.uint64)
_SIEVES: dict[int, tuple] = {}
# Table bits -> the residues of that sieve table mod 9 (for the 3^2 sieve)
_RES9: dict[int, np.ndarray] = {}
_EXTENSIONS: dict[tuple[int, int], tuple] = {}
# The sieve's first step 3^c a + d fits in 128 bits below 2^76 (sieve.SIEVE_LIMIT_HI): a piece ends there
SIEVE_LIMIT = 1 << 76


class Sieve(NamedTuple):
    """One call's sieve: the table (residues, packed c and d), its extension, its bounds."""

    res: np.ndarray
    packed: np.ndarray
    bits: int
    kill: np.ndarray
    ce: np.ndarray
    de: np.ndarray
    extra: int
    glide_max: int
    exact_from: np.uint64


def sieve_table(bits: int) -> tuple:
    """(residues, packed, bits, glide_max, exact_from) of the 2^bits sieve; none for bits 0."""
    if bits not in _SIEVES:
        from hpcthreads.backends import steptables

        def build() -> dict[str, np.ndarray]:
            res, packed, glide_max, exact_from = steptables.build_sieve(bits)
            return {"res": res, "packed": packed, "info": np.array([glide_max, exact_from], np.uint64)}

        s = load_or_build(f"sieve-{bits}", build) if bits else {}
        if bits:
            info = s["info"]
            _SIEVES[bits] = (s["res"], s["packed"], bits, int(info[0]), np.uint64(info[1]))
        else:
            _SIEVES[bits] = (_EMPTY, _EMPTY, 1, 0, np.uint64(0))
    return _SIEVES[bits]


def sieve_with_extension(bits: int, extra: int) -> Sieve:
    """The table, its extension by `extra` bits, glide_max and exact_from of both.

    The extension (built in memory, milliseconds) applies where both its
    conditions and the table's hold: n >= 2^(bits + extra), and a running
    maximum glide of at least the larger glide_max.
    """
    res, packed, bits, glide_max, exact_from = sieve_table(bits)
    if not res.shape[0]:
        extra = 0
    key = (bits, extra)
    if key not in _EXTENSIONS:
        from hpcthreads.backends import steptables

        present = np.zeros(bits + 1, np.bool_)
        present[np.unique(packed >> np.uint64(56)).astype(np.int64)] = True
        kill, ce, de, ext_glide_max = steptables.build_sieve_extension(bits, extra, present)
        if extra:
            glide_max = max(glide_max, int(ext_glide_max))
            exact_from = max(exact_from, np.uint64(1 << (bits + extra)))
        _EXTENSIONS[key] = (kill, ce, de, extra, glide_max, exact_from)
    return Sieve(res, packed, bits, *_EXTENSIONS[key])


def residues_mod9(bits: int) -> np.ndarray:
    """b mod 9 for every residue b of the 2^bits sieve table (for the 3^2 sieve)."""
    if bits not in _RES9:
        _RES9[bits] = (sieve_table(bits)[0] % np.uint64(9)).astype(np.uint8)
    return _RES9[bits]


def extra_at(start: int, bits: int, extra: int) -> int:
    """The extension's bits that apply from `start` on: it needs n >= 2^(bits + extra)."""
    return max(0, min(extra, start.bit_length() - 1 - bits))


def skip_block(skip_from: int, bits: int) -> int:
    """The first a of the 3^2 sieve: it works on whole blocks, from the first a with 2^bits a >= skip_from."""
    return min(-(-skip_from // (1 << bits)), (1 << 128) - 1) if skip_from else (1 << 128) - 1


def sieve_pieces(start: int, count: int, bits: int, extra: int) -> list[tuple[int, int]]:
    """[first, end) pieces of a range, cut where the sieve it gets changes.

    A call of the kernel uses one extension depth, that of its first value,
    and the sieve only where its last value is below 2^76; cut at 2^(bits+1)
    ... 2^(bits+extra) and 2^76, every value gets the sieve that applies to
    it, so what is walked does not depend on where a chunk starts.
    """
    if not bits:
        return [(start, start + count)]
    cuts = [1 << j for j in range(bits + 1, bits + extra + 1)] + [SIEVE_LIMIT]
    edges = [start, *(c for c in cuts if start < c < start + count), start + count]
    return list(zip(edges[:-1], edges[1:]))


def join_pieces(pieces: list[tuple[int, VerifyRaw]]) -> VerifyRaw:
    """One range's raw result from its pieces' (offset, raw): offsets moved, records of the whole."""
    if len(pieces) == 1 and pieces[0][0] == 0:
        return pieces[0][1]
    records, too_long, overflows = [], [], []
    best = -1
    for offset, raw in pieces:
        for row in raw.glide_records:
            if int(row[2]) > best:
                best = int(row[2])
                records.append((int(row[0]) + offset, int(row[1]), best))
        too_long.append(raw.too_long.astype(np.uint64) + np.uint64(offset))
        overflows.append(raw.overflows.astype(np.uint64) + np.uint64(offset))
    table = np.array(records, np.uint64).reshape(-1, 3)
    walked = sum(raw.walked for _, raw in pieces)
    return VerifyRaw(table, np.concatenate(too_long), np.concatenate(overflows), walked)
