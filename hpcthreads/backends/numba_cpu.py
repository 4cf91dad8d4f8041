"""The numba-cpu backend: one CPU core per rank, Numba-compiled kernels."""

from __future__ import annotations

import numpy as np

from hpcthreads.backends.base import (
    DEFAULT_SIEVE_BITS,
    DEFAULT_SIEVE_EXTRA_BITS,
    BaseBackend,
    CollatzRaw,
    ThreadRaw,
    VerifyRaw,
    split_words,
)
from hpcthreads.backends.tablecache import load_or_build

_EMPTY = np.zeros(0, np.uint64)
# Delay, peak and glide of every value below 2^20 (12 MiB per rank)
TABLE_BITS = 20
_TABLES: tuple | None = None
_SIEVES: dict[int, tuple] = {}
# Table bits -> the residues of that sieve table mod 9 (for the 3^2 sieve)
_RES9: dict[int, np.ndarray] = {}
_EXTENSIONS: dict[tuple[int, int], tuple] = {}


def _build_tables() -> dict[str, np.ndarray]:
    from hpcthreads.backends import cpukernels, steptables

    tdelay, tpeak, tglide = steptables.build_tables(1 << TABLE_BITS)
    hot, cold, peak_from = steptables.build_block_table(cpukernels.BLOCK_BITS)
    if peak_from > (1 << (TABLE_BITS - cpukernels.BLOCK_BITS)):
        raise AssertionError("block peaks would not be exact above the table")
    return {"tdelay": tdelay, "tpeak": tpeak, "tglide": tglide, "hot": hot, "cold": cold}


def _tables() -> tuple:
    """(tdelay, tpeak, tglide, hot, cold, pow3, tpeak_max), loaded once per process."""
    global _TABLES
    if _TABLES is None:
        from hpcthreads.backends import cpukernels, steptables

        name = f"steps-t{TABLE_BITS}-b{cpukernels.BLOCK_BITS}"
        t = load_or_build(name, _build_tables)
        pow3 = steptables.powers_of_three(40)
        tpeak_max = np.uint64(t["tpeak"].max())
        _TABLES = (t["tdelay"], t["tpeak"], t["tglide"], t["hot"], t["cold"], pow3, tpeak_max)
    return _TABLES


def _sieve(bits: int) -> tuple:
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


def _sieve_with_extension(bits: int, extra: int) -> tuple:
    """The kernel's sieve arguments: the table, its extension by `extra` bits, glide_max, exact_from.

    The extension (built in memory, milliseconds) applies where both its
    conditions and the table's hold: n >= 2^(bits + extra), and a running
    maximum glide of at least the larger glide_max.
    """
    res, packed, bits, glide_max, exact_from = _sieve(bits)
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
    return (res, packed, bits, *_EXTENSIONS[key])


def _residues_mod9(bits: int) -> np.ndarray:
    """b mod 9 for every residue b of the 2^bits sieve table (for the 3^2 sieve)."""
    if bits not in _RES9:
        _RES9[bits] = (_sieve(bits)[0] % np.uint64(9)).astype(np.uint8)
    return _RES9[bits]


class NumbaCPUBackend(BaseBackend):
    name = "numba-cpu"

    def __init__(self) -> None:
        from hpcthreads.backends import cpukernels, sieve

        self._k = cpukernels
        self._sieve = sieve
        self._tables = _tables()

    def collatz_range(self, start: int, count: int, store: bool) -> CollatzRaw:
        shi, slo = split_words(start)
        if store:
            delay = np.zeros(count, np.uint32)
            glide = np.zeros(count, np.uint32)
            peak_lo = np.zeros(count, np.uint64)
            peak_hi = np.zeros(count, np.uint64)
        else:
            delay = glide = np.zeros(0, np.uint32)
            peak_lo = peak_hi = _EMPTY
        out = self._k.collatz_range(
            np.uint64(shi), np.uint64(slo), count, store, delay, glide, peak_lo, peak_hi, *self._tables
        )
        arrays = (delay, glide, peak_lo, peak_hi) if store else (None,) * 4
        return CollatzRaw(int(out[0]), *out[1:], *arrays)

    def verify_range(
        self,
        start: int,
        count: int,
        max_steps: int,
        sieve_bits: int = DEFAULT_SIEVE_BITS,
        sieve_extra_bits: int = DEFAULT_SIEVE_EXTRA_BITS,
        skip_from: int = 0,
    ) -> VerifyRaw:
        shi, slo = split_words(start)
        cold, pow3 = self._tables[4:6]
        # The extension applies from 2^(bits + extra): below, fewer extra bits that apply at once
        sieve_extra_bits = max(0, min(sieve_extra_bits, start.bit_length() - 1 - sieve_bits))
        # The 3^2 sieve works on whole blocks of 2^bits values: from the first a with 2^bits a >= skip_from
        skip_a = -(-skip_from // (1 << sieve_bits)) if skip_from else (1 << 128) - 1
        skip_hi, skip_lo = split_words(min(skip_a, (1 << 128) - 1))
        out = self._sieve.verify_range(
            np.uint64(shi),
            np.uint64(slo),
            count,
            max_steps,
            cold,
            pow3,
            *_sieve_with_extension(sieve_bits, sieve_extra_bits),
            _residues_mod9(sieve_bits),
            np.uint64(skip_hi),
            np.uint64(skip_lo),
        )
        return VerifyRaw(*out)

    def thread_paths(self, start: int, count: int, max_depth: int) -> ThreadRaw:
        shi, slo = split_words(start)
        # The kernel stores only nonzero words; large zeroed arrays come as untouched zero pages
        paths_lo = np.zeros((count, max_depth + 1), np.uint64)
        paths_hi = np.zeros((count, max_depth + 1), np.uint64)
        depth = np.zeros(count, np.uint32)
        final_lo = np.zeros(count, np.uint64)
        final_hi = np.zeros(count, np.uint64)
        over = self._k.thread_paths(
            np.uint64(shi), np.uint64(slo), count, max_depth, paths_lo, paths_hi, depth, final_lo, final_hi
        )
        return ThreadRaw(paths_lo, paths_hi, depth, final_lo, final_hi, over)
