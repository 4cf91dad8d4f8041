"""The numba-cpu backend: one CPU core per rank, Numba-compiled kernels."""

from __future__ import annotations

import numpy as np

from hpcthreads.backends.base import BaseBackend, CollatzRaw, ThreadRaw, VerifyRaw, split_words

_EMPTY = np.zeros(0, np.uint64)
# Delay, peak and glide of every value below 2^20 (12 MiB per rank)
TABLE_BITS = 20
_TABLES: tuple | None = None


def _tables() -> tuple:
    """(tdelay, tpeak, tglide, hot, cold, pow3, tpeak_max), built once per process."""
    global _TABLES
    if _TABLES is None:
        from hpcthreads.backends import cpukernels, steptables

        tdelay, tpeak, tglide = steptables.build_tables(1 << TABLE_BITS)
        hot, cold, peak_from = steptables.build_block_table(cpukernels.BLOCK_BITS)
        if peak_from > (1 << (TABLE_BITS - cpukernels.BLOCK_BITS)):
            raise AssertionError("block peaks would not be exact above the table")
        pow3 = steptables.powers_of_three(40)
        _TABLES = (tdelay, tpeak, tglide, hot, cold, pow3, np.uint64(tpeak.max()))
    return _TABLES


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

    def verify_range(self, start: int, count: int, max_steps: int) -> VerifyRaw:
        shi, slo = split_words(start)
        return VerifyRaw(*self._sieve.verify_range(np.uint64(shi), np.uint64(slo), count, max_steps))

    def thread_paths(self, start: int, count: int, max_depth: int) -> ThreadRaw:
        shi, slo = split_words(start)
        paths_lo = np.zeros((count, max_depth + 1), np.uint64)
        paths_hi = np.zeros((count, max_depth + 1), np.uint64)
        depth = np.zeros(count, np.uint32)
        final_lo = np.zeros(count, np.uint64)
        final_hi = np.zeros(count, np.uint64)
        over = self._k.thread_paths(
            np.uint64(shi), np.uint64(slo), count, max_depth, paths_lo, paths_hi, depth, final_lo, final_hi
        )
        return ThreadRaw(paths_lo, paths_hi, depth, final_lo, final_hi, over)
