"""The numba-cpu backend: one CPU core per rank, Numba-compiled kernels."""

from __future__ import annotations

import numpy as np

from hpcthreads.backends.base import (
    DEFAULT_SIEVE_BITS,
    DEFAULT_SIEVE_EXTRA_BITS,
    BaseBackend,
    CollatzRaw,
    SlicePlan,
    SliceRaw,
    ThreadRaw,
    VerifyRaw,
    split_words,
)
from hpcthreads.backends.sieveplan import (
    extra_at,
    join_pieces,
    residues_mod9,
    sieve_pieces,
    sieve_with_extension,
    skip_block,
)
from hpcthreads.backends.tablecache import load_or_build

# The sieve's tables, under the name the tests use
_sieve_with_extension = sieve_with_extension

_EMPTY = np.zeros(0, np.uint64)
# Delay, peak and glide of every value below 2^20 (12 MiB per rank)
TABLE_BITS = 20
_TABLES: tuple | None = None


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
        pieces = []
        for first, end in sieve_pieces(start, count, sieve_bits, sieve_extra_bits):
            raw = self._verify_piece(first, end - first, max_steps, sieve_bits, sieve_extra_bits, skip_from)
            pieces.append((first - start, raw))
        return join_pieces(pieces)

    def _verify_piece(
        self, start: int, count: int, max_steps: int, sieve_bits: int, sieve_extra_bits: int, skip_from: int
    ) -> VerifyRaw:
        shi, slo = split_words(start)
        cold, pow3 = self._tables[4:6]
        # The extension applies from 2^(bits + extra): below, fewer extra bits that apply at once
        sieve_extra_bits = extra_at(start, sieve_bits, sieve_extra_bits)
        skip_hi, skip_lo = split_words(skip_block(skip_from, sieve_bits))
        out = self._sieve.verify_range(
            np.uint64(shi),
            np.uint64(slo),
            count,
            max_steps,
            cold,
            pow3,
            *sieve_with_extension(sieve_bits, sieve_extra_bits),
            residues_mod9(sieve_bits),
            np.uint64(skip_hi),
            np.uint64(skip_lo),
        )
        return VerifyRaw(*out[:3], int(out[3]))

    def verify_slice(self, plan: SlicePlan, bfirst: int, ifirst: int, blast: int, iend: int) -> SliceRaw:
        return slice_kernel(plan, bfirst, ifirst, blast, iend)

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


def slice_kernel(plan: SlicePlan, bfirst: int, ifirst: int, blast: int, iend: int) -> SliceRaw:
    """The numba-cpu slice sieve (backends.slicesieve) on one run of residues."""
    from hpcthreads.backends import slicesieve
    from hpcthreads.backends.slicetables import per_value_extension, slice_tables

    t = slice_tables(plan.K)
    killx, _ = per_value_extension(plan.K, plan.extra)
    a0, b0, a1, b1 = plan.body
    from_hi, from_lo = split_words(min(plan.skip_from, (1 << 128) - 1))
    below_hi, below_lo = split_words(plan.skip_below)
    cand, long_, over, walked = slicesieve.verify_slice(
        plan.K, np.uint64(bfirst), ifirst, np.uint64(blast), iend, np.uint64(a0), np.uint64(a1),
        np.uint64(b0), np.uint64(b1), plan.max_steps, plan.floor,
        t.res, t.packed, t.k1, t.kill1, t.ce1, t.de1, t.e1, t.kill2, t.ce2, t.de2, t.e2, t.p3hi, t.p3lo,
        t.walk, t.k2, killx, plan.extra, np.uint64(from_hi), np.uint64(from_lo),
        np.uint64(below_hi), np.uint64(below_lo), plan.mod9, plan.join,
    )  # fmt: skip

    def value(row: np.ndarray) -> int:
        return (int(row[0]) << 64) | int(row[1])

    candidates = [(value(r), int(r[2])) for r in cand]
    return SliceRaw(candidates, [value(r) for r in long_], [value(r) for r in over], int(walked))
