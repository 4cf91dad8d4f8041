"""What the GPU backends share: the launch plan of each job type, on the host.

Both GPU backends (numba-cuda and cupy) have the same five kernels with the
same arguments (collatz_kernels.cu describes them); a subclass only says how
to allocate, copy and launch. Only small arrays come back per chunk: the
histogram, per-segment maxima, the lists of overflowing offsets and the
per-number results of the few segments that may hold records. Rare cases
(more overflows than the lists hold, a delay past the histogram) fall back
to per-number results of the whole chunk, which are exact too.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import numpy as np

from hpcthreads.backends import gpuscan
from hpcthreads.backends.base import BaseBackend, CollatzRaw, ThreadRaw, VerifyRaw, split_words
from hpcthreads.config import JOB_TYPES

ST_OVERFLOW = 1
ST_TOO_LONG = 2


@functools.lru_cache(maxsize=2)
def host_tables(bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delay, peak and glide of every start value below 2^bits (the numba-cpu tables)."""
    from hpcthreads.backends.steptables import build_tables

    return build_tables(1 << bits)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class BaseGPUBackend(BaseBackend):
    """Kernels on a device; subclasses implement `_zeros`, `_put`, `_get` and `_launch`."""

    is_gpu = True
    # Sub-batches of at least this many items: a launch must fill the device
    min_batch = 1 << 24
    # Threads per range launch; each walks count/threads consecutive start values
    segment_threads = 1 << 17
    hist_len = 4096
    list_capacity = 1 << 16
    table_bits = 20

    def __init__(self) -> None:
        tables = host_tables(self.table_bits)
        self._tables = tuple(self._put(t) for t in tables)
        self._tsize = len(tables[0])

    def warm_up(self, types: Iterable[str] = JOB_TYPES) -> None:
        """Compile the kernels of these job types now, the range kernels on both of their paths."""
        types = set(types)
        if "collatz" in types:
            for store in (False, True):
                self.collatz_range(1, 2, store)
        if "verify" in types:
            self.verify_range(1, 2, 10)
        if "thread" in types:
            self.thread_paths(1, 2, 2)

    # Device primitives

    def _zeros(self, shape: int | tuple[int, ...], dtype: Any) -> Any:
        raise NotImplementedError

    def _put(self, array: np.ndarray) -> Any:
        raise NotImplementedError

    def _get(self, array: Any) -> np.ndarray:
        raise NotImplementedError

    def _launch(self, kernel: str, nthreads: int, *args: Any) -> None:
        """Run `kernel` on `nthreads` threads; scalar arguments are passed as uint64."""
        raise NotImplementedError

    # Job types

    def collatz_range(self, start: int, count: int, store: bool) -> CollatzRaw:
        if store or count == 0:
            return self._collatz_whole(start, count, store)
        shi, slo = split_words(start)
        seg_len = cdiv(count, self.segment_threads)
        nseg = cdiv(count, seg_len)
        hist, sums = self._zeros(self.hist_len, np.uint64), self._zeros(4, np.uint64)
        seg = [self._zeros(nseg, t) for t in (np.uint32, np.uint32, np.uint64, np.uint64)]
        over = self._zeros(self.list_capacity, np.uint64)
        tables = (*self._tables, self._tsize)
        self._launch(
            "collatz_segments", nseg, shi, slo, count, seg_len, *tables, hist, self.hist_len, sums, *seg,
            over, self.list_capacity,
        )  # fmt: skip
        total = self._get(sums)
        if total[1] > self.list_capacity or total[2] > 0:
            return self._collatz_whole(start, count, False)
        seg_delay, seg_glide, seg_phi, seg_plo = (self._get(a) for a in seg)
        segs, *floors = gpuscan.collatz_floors(seg_delay, seg_glide, seg_phi, seg_plo)
        numbers = self._collatz_numbers(shi, slo, count, segs, seg_len)
        tables_ = gpuscan.collatz_records(segs, seg_len, *floors, *numbers)
        top = int(seg_delay.max())
        histogram = self._get(hist)[:top].astype(np.int64)
        overflows = np.sort(self._get(over)[: int(total[1])])
        return CollatzRaw(int(total[0]), histogram, *tables_, overflows)

    def _collatz_numbers(self, shi: int, slo: int, count: int, segs: np.ndarray, seg_len: int) -> tuple:
        """(delay, glide, peak_hi, peak_lo, status) of the listed segments, back to back."""
        n = len(segs) * seg_len
        out = [self._zeros(n, t) for t in (np.uint32, np.uint32, np.uint64, np.uint64, np.uint8)]
        if n:
            tables = (*self._tables, self._tsize)
            self._launch("collatz_numbers", n, shi, slo, count, self._put(segs), seg_len, *tables, *out)
        return tuple(self._get(a) for a in out)

    def _collatz_whole(self, start: int, count: int, store: bool) -> CollatzRaw:
        """Every per-number result of the chunk, summarised here."""
        shi, slo = split_words(start)
        segs = np.zeros(1, np.uint64)
        delay, glide, peak_hi, peak_lo, status = self._collatz_numbers(shi, slo, count, segs, max(count, 1))
        delay, glide, peak_hi, peak_lo, status = (a[:count] for a in (delay, glide, peak_hi, peak_lo, status))
        ok = status == 0
        floors = (np.full(1, -1, np.int64), np.full(1, -1, np.int64), *np.zeros((2, 1), np.uint64))
        tables_ = gpuscan.collatz_records(segs, count, *floors, delay, glide, peak_hi, peak_lo, status)
        histogram = np.bincount(delay[ok]).astype(np.int64) if ok.any() else np.zeros(0, np.int64)
        overflows = np.flatnonzero(status == ST_OVERFLOW).astype(np.uint64)
        sum_delay = int(delay[ok].sum(dtype=np.uint64))
        arrays = (delay, glide, peak_lo, peak_hi) if store else (None,) * 4
        return CollatzRaw(sum_delay, histogram, *tables_, overflows, *arrays)

    def verify_range(
        self,
        start: int,
        count: int,
        max_steps: int,
        sieve_bits: int = 0,
        sieve_extra_bits: int = 0,
        skip_from: int = 0,
    ) -> VerifyRaw:
        # The device checks every number: no sieve, the same glide records
        del sieve_bits, sieve_extra_bits, skip_from
        if count == 0:
            return self._verify_whole(start, count, max_steps)
        shi, slo = split_words(start)
        seg_len = cdiv(count, self.segment_threads)
        nseg = cdiv(count, seg_len)
        sums, seg_glide = self._zeros(4, np.uint64), self._zeros(nseg, np.uint32)
        over, too_long = (
            self._zeros(self.list_capacity, np.uint64),
            self._zeros(self.list_capacity, np.uint64),
        )
        self._launch(
            "verify_segments", nseg, shi, slo, count, seg_len, max_steps, sums, seg_glide, over, too_long,
            self.list_capacity,
        )  # fmt: skip
        total = self._get(sums)
        if max(total[1], total[3]) > self.list_capacity:
            return self._verify_whole(start, count, max_steps)
        segs, floors = gpuscan.glide_floors(self._get(seg_glide))
        glide, status = self._verify_numbers(shi, slo, count, max_steps, segs, seg_len)
        records = gpuscan.glide_records(segs, seg_len, floors, glide, status)
        lists = (np.sort(self._get(a)[: int(total[i])]) for a, i in ((too_long, 3), (over, 1)))
        return VerifyRaw(records, *lists)

    def _verify_numbers(
        self, shi: int, slo: int, count: int, max_steps: int, segs: np.ndarray, seg_len: int
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(segs) * seg_len
        glide, status = self._zeros(n, np.uint32), self._zeros(n, np.uint8)
        if n:
            self._launch(
                "verify_numbers", n, shi, slo, count, self._put(segs), seg_len, max_steps, glide, status
            )
        return self._get(glide), self._get(status)

    def _verify_whole(self, start: int, count: int, max_steps: int) -> VerifyRaw:
        shi, slo = split_words(start)
        segs = np.zeros(1, np.uint64)
        glide, status = self._verify_numbers(shi, slo, count, max_steps, segs, max(count, 1))
        glide, status = glide[:count], status[:count]
        records = gpuscan.glide_records(segs, count, np.full(1, -1, np.int64), glide, status)
        lists = (np.flatnonzero(status == s).astype(np.uint64) for s in (ST_TOO_LONG, ST_OVERFLOW))
        return VerifyRaw(records, *lists)

    def thread_paths(self, start: int, count: int, max_depth: int) -> ThreadRaw:
        shi, slo = split_words(start)
        paths = [self._zeros((count, max_depth + 1), np.uint64) for _ in range(2)]
        depth, status = self._zeros(count, np.uint32), self._zeros(count, np.uint8)
        final = [self._zeros(count, np.uint64) for _ in range(2)]
        if count:
            self._launch("thread_paths", count, shi, slo, max_depth, *paths, depth, *final, status)
        paths_lo, paths_hi, depth, final_lo, final_hi = (self._get(a) for a in (*paths, depth, *final))
        overflows = np.flatnonzero(self._get(status) == ST_OVERFLOW).astype(np.uint64)
        return ThreadRaw(paths_lo, paths_hi, depth, final_lo, final_hi, overflows)
