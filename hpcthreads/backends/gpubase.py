"""What the GPU backends share: the launch plan of each job type, on the host.

Both GPU backends (numba-cuda and cupy) have the same nine kernels with the
same arguments (collatz_kernels.cu describes them); a subclass only says how
to allocate, copy and launch. Only small arrays come back per chunk: the
histogram, per-segment maxima, the lists of overflowing offsets and the
per-number results of the few segments that may hold records. Rare cases
(more overflows than the lists hold, a delay past the histogram) fall back
to per-number results of the whole chunk, which are exact too.

`verify` runs numba-cpu's sieve (sieve.py): the same tables, copied to the
device once per backend, the same cuts of a range (sieveplan), the same
values walked before the sieve may skip any; after them the device walks
only the table's entries that the extension and the 3^2 sieve leave, one
run of entries per thread. Records, lists and `walked` equal numba-cpu's.
Jobs cut by residue run the slice kernels (gpuslice.py).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from hpcthreads.backends import gpuscan, sieveplan
from hpcthreads.backends.base import (
    BaseBackend,
    CollatzRaw,
    SlicePlan,
    SliceRaw,
    ThreadRaw,
    VerifyRaw,
    split_words,
)
from hpcthreads.config import DEFAULT_SIEVE_BITS, DEFAULT_SIEVE_EXTRA_BITS, JOB_TYPES

ST_OVERFLOW = 1
ST_TOO_LONG = 2


@functools.lru_cache(maxsize=2)
def host_tables(bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delay, peak and glide of every start value below 2^bits (the numba-cpu tables)."""
    from hpcthreads.backends.steptables import build_tables

    return build_tables(1 << bits)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class Prefix(NamedTuple):
    """The first `count` values of a sieved piece, every one walked; `best` their largest glide."""

    count: int
    raw: VerifyRaw
    best: int


def cut(raw: VerifyRaw, end: int) -> tuple[VerifyRaw, int]:
    """A plain result of every value, cut to offsets below `end`, and its largest glide (-1: none)."""
    records = raw.glide_records[raw.glide_records[:, 0] < np.uint64(end)]
    lists = (a[a < np.uint64(end)] for a in (raw.too_long, raw.overflows))
    best = int(records[-1, 2]) if len(records) else -1
    return VerifyRaw(records, *lists, end), best


class SieveItems:
    """The sieve's table entries of [start, start+count) as a run of items, in increasing order of n.

    Item L is entry (idx0 + L) mod nsurv of block a = a0 + (idx0 + L) // nsurv,
    n = 2^bits a + res[entry], as sieve.scan_survivors takes them; a kernel
    thread takes a segment of items and walks those the extension and the
    3^2 sieve leave.
    """

    def __init__(self, start: int, count: int, sieve: sieveplan.Sieve, skip_from: int) -> None:
        self.start, self.sieve = start, sieve
        mask = (1 << sieve.bits) - 1
        self.nsurv = len(sieve.res)
        self.a0, end_a = start >> sieve.bits, (start + count) >> sieve.bits
        self.idx0 = int(np.searchsorted(sieve.res, np.uint64(start & mask)))
        stop = int(np.searchsorted(sieve.res, np.uint64((start + count) & mask)))
        self.n = (end_a - self.a0) * self.nsurv + stop - self.idx0
        self.skip_a = sieveplan.skip_block(skip_from, sieve.bits)

    def args(self) -> tuple[int, ...]:
        """shi, slo, a0hi, a0lo, idx0, nitems."""
        return (*split_words(self.start), *split_words(self.a0), self.idx0, self.n)

    def sieve_args(self) -> tuple[int, ...]:
        """extra, skip_ahi, skip_alo, nsurv (after the segments, sbits and the tables)."""
        return (self.sieve.extra, *split_words(self.skip_a), self.nsurv)

    def offsets(self, items: np.ndarray) -> np.ndarray:
        """Offsets from the start of the listed items."""
        q = items.astype(np.int64) + self.idx0
        blocks, entries = np.divmod(q, self.nsurv)
        base = self.start & ((1 << self.sieve.bits) - 1)
        return (blocks * (1 << self.sieve.bits) + self.sieve.res[entries].astype(np.int64) - base).astype(
            np.uint64
        )


# A job cut by residue (2^16 residues, A in [4, 6]) with every rule on, for warm_up
WARM_PLAN = SlicePlan(16, (4, 3, 6, 3), 1000, 0, 2, True, 5 << 16, 9 << 15, True)


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
    # The slice verify: tasks (a group of residues, A) of a walk launch, at least; threads that take
    # them (a grid-stride loop); rows its report holds at first: at least this many, one per 2^shift
    # (residue, A) pairs up to 32 per task (tasks of one residue report 8-12% of their pairs on the
    # layouts of large jobs at 2^40 and 2^64, tasks of many far fewer); a fuller one is walked again
    slice_tasks = 1 << 18
    slice_threads = 1 << 20
    slice_report_capacity = 1 << 16
    slice_report_shift = 2

    def __init__(self) -> None:
        from hpcthreads.backends.steptables import powers_of_three

        tables = host_tables(self.table_bits)
        self._tables = tuple(self._put(t) for t in tables)
        self._tsize = len(tables[0])
        # The verify sieve's tables, resident once copied: bits -> (res, packed), (bits, extra) -> all
        self._sieves: dict[Any, tuple] = {}
        self._pow3 = self._put(powers_of_three(40))

    def warm_up(self, types: Iterable[str] = JOB_TYPES) -> None:
        """Compile the kernels of these job types now, the range kernels on both of their paths."""
        types = set(types)
        if "collatz" in types:
            for store in (False, True):
                self.collatz_range(1, 2, store)
        if "verify" in types:
            self.verify_range(1, 2, 10)
            self.verify_range(2**20, 64, 1000, 4, 2)  # the sieve's kernels
            self.verify_slice(WARM_PLAN, 1 << 15, 0, (1 << 15) + 64, 1)  # the slice's kernels
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
        sieve_bits: int = DEFAULT_SIEVE_BITS,
        sieve_extra_bits: int = DEFAULT_SIEVE_EXTRA_BITS,
        skip_from: int = 0,
    ) -> VerifyRaw:
        """The sieve of numba-cpu (sieve.py), the same pieces: the same results and the same `walked`."""
        pieces = []
        for first, end in sieveplan.sieve_pieces(start, count, sieve_bits, sieve_extra_bits):
            extra = sieveplan.extra_at(first, sieve_bits, sieve_extra_bits)
            sieve = sieveplan.sieve_with_extension(sieve_bits, extra)
            # Below 2^76, and with a step bound past every glide it skips (sieve.scan_verify's sieve_ok)
            if sieve.res.shape[0] and max_steps >= sieve.glide_max and end <= sieveplan.SIEVE_LIMIT:
                raw = self._verify_sieved(first, end - first, max_steps, sieve, skip_from)
            else:
                raw = self._verify_plain(first, end - first, max_steps)
            pieces.append((first - start, raw))
        return sieveplan.join_pieces(pieces)

    def _verify_sieved(
        self, start: int, count: int, max_steps: int, sieve: sieveplan.Sieve, skip_from: int
    ) -> VerifyRaw:
        """[start, start+count) as sieve.scan_verify takes it: every value first, then survivors only.

        Values the sieve settles (n >= exact_from) have glides of at most
        glide_max: once the running maximum glide has reached it none of them
        can be a record. Every value is walked up to that point (the prefix,
        the very values numba-cpu walks, so the lists agree too), the records
        after it are the survivors' that beat it, and unresolved or
        overflowing values past it are survivors. `walked` counts the values
        below exact_from and the survivors, not the prefix (sieve.counts_as_walked).
        """
        below = min(max(int(sieve.exact_from) - start, 0), count)
        prefix = self._verify_prefix(start, count, max_steps, sieve.glide_max, below)
        items = SieveItems(start + below, count - below, sieve, skip_from)
        tables = self._sieve_tables(sieve)
        sums = self._zeros(4, np.uint64)
        seg_len = cdiv(max(items.n, 1), self.segment_threads)
        nseg = cdiv(items.n, seg_len)
        seg_glide = self._zeros(max(nseg, 1), np.uint32)
        cap = self.list_capacity
        over, too_long = self._zeros(cap, np.uint64), self._zeros(cap, np.uint64)
        args = (*items.args(), seg_len, sieve.bits, *tables, *items.sieve_args(), max_steps)
        self._launch("verify_sieve_segments", nseg, *args, sums, seg_glide, over, too_long, cap)
        total = self._get(sums)
        full = max(total[1], total[3]) > cap
        if full:
            segs, floors, seg_len = np.zeros(1, np.uint64), np.full(1, -1, np.int64), max(items.n, 1)
        else:
            segs, floors = gpuscan.glide_floors(self._get(seg_glide)[:nseg])
        glide, status = self._verify_sieve_numbers(items, tables, max_steps, segs, seg_len)
        found = gpuscan.glide_records(segs, seg_len, floors, glide, status)
        found[:, 0] = items.offsets(found[:, 0]) + np.uint64(below)
        later = found[(found[:, 0] >= np.uint64(prefix.count)) & (found[:, 2].astype(np.int64) > prefix.best)]
        records = np.concatenate([prefix.raw.glide_records, later]).astype(np.uint64)
        if full:
            lists = [items.offsets(np.flatnonzero(status == s)) for s in (ST_TOO_LONG, ST_OVERFLOW)]
        else:
            lists = [self._get(a)[: int(total[i])] for a, i in ((too_long, 3), (over, 1))]
        lists = [a.astype(np.uint64) + np.uint64(below) for a in lists]  # offsets from `start`
        too_long_, over_ = (np.union1d(a, b).astype(np.uint64) for a, b in zip(lists, prefix.raw[1:3]))
        return VerifyRaw(records, too_long_, over_, below + int(total[0]))

    def _verify_prefix(self, start: int, count: int, max_steps: int, glide_max: int, below: int) -> Prefix:
        """Every value up to where the sieve takes over: past `below`, once the running maximum glide
        has reached glide_max (a few hundred values, found by growing windows)."""
        size = min(count, max(below, 256))
        while True:
            raw = self._verify_plain(start, size, max_steps)
            records = raw.glide_records
            hit = np.flatnonzero(records[:, 2] >= np.uint64(glide_max))
            if len(hit) or size == count:
                end = max(below, int(records[hit[0], 0]) + 1) if len(hit) else count
                return Prefix(end, *cut(raw, end))
            size = min(count, size * 4)

    def _sieve_tables(self, sieve: sieveplan.Sieve) -> tuple:
        """(sres, spacked, pow3, kill) on the device, copied once per table and extension."""
        key = (sieve.bits, sieve.extra)
        if key not in self._sieves:
            if sieve.bits not in self._sieves:
                self._sieves[sieve.bits] = (self._put(sieve.res), self._put(sieve.packed))
            self._sieves[key] = (*self._sieves[sieve.bits], self._pow3, self._put(sieve.kill))
        return self._sieves[key]

    def _verify_sieve_numbers(
        self, items: SieveItems, tables: tuple, max_steps: int, segs: np.ndarray, seg_len: int
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(segs) * seg_len
        glide, status = self._zeros(max(n, 1), np.uint32), self._zeros(max(n, 1), np.uint8)
        args = (*items.args(), self._put(segs), seg_len, items.sieve.bits, *tables, *items.sieve_args())
        args = (*args, max_steps)
        self._launch("verify_sieve_numbers", n, *args, glide, status)
        return self._get(glide)[:n], self._get(status)[:n]

    def _verify_plain(self, start: int, count: int, max_steps: int) -> VerifyRaw:
        """Every value walked, no sieve."""
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
        return VerifyRaw(records, *lists, count)

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
        return VerifyRaw(records, *lists, count)

    def verify_slice(self, plan: SlicePlan, bfirst: int, ifirst: int, blast: int, iend: int) -> SliceRaw:
        """The slice built and walked on the device (slice_build, slice_walk); the few values whose
        bound may make them candidates are settled here exactly (gpuslice)."""
        from hpcthreads.backends import gpuslice

        t, dev = self._slice_tables(plan.K, plan.extra)
        items = gpuslice.residue_items(t, bfirst, blast)
        count, kept = self._zeros(1, np.uint64), self._zeros(4 * max(items.count, 1), np.uint64)
        self._launch("slice_build", items.count, *gpuslice.build_args(plan, t, items, dev, count, kept))
        nkept = int(self._get(count)[0]) if items.count else 0
        # In order of B, as numba-cpu takes the residues; the walk's tasks take groups of them in turn
        kept_rows = self._get(kept)[: 4 * nkept].reshape(-1, 4)
        kept_rows = kept_rows[np.argsort(kept_rows[:, 0], kind="stable")]
        a0, _, a1, _ = plan.body
        span = a1 - a0 + 1
        ngroups = max(1, min(nkept, self.slice_tasks // span))
        gsize = cdiv(max(nkept, 1), ngroups)
        ntasks = ngroups * span if nkept else 0
        cap = max(self.slice_report_capacity, min(nkept * span >> self.slice_report_shift, 32 * ntasks))
        kept = self._put(kept_rows.reshape(-1) if nkept else np.zeros(4, np.uint64))
        walk = gpuslice.walk_args(plan, t, (bfirst, ifirst, blast, iend), dev, kept)
        while True:
            sums, report = self._zeros(2, np.uint64), self._zeros(3 * cap, np.uint64)
            tasks = (ntasks, span, gsize, nkept)
            self._launch("slice_walk", min(ntasks, self.slice_threads), *tasks, *walk, sums, report, cap)
            total = self._get(sums) if ntasks else np.zeros(2, np.uint64)
            if total[1] <= cap:
                break
            cap = int(total[1])  # rarely: walk again with room for every row
        rows = self._get(report)[: 3 * int(total[1])].reshape(-1, 3)
        return gpuslice.settle_reports(plan, t, kept_rows, rows, int(total[0]))

    def _slice_tables(self, K: int, extra: int) -> tuple:
        """The slice sieve's tables (slicetables) and their device copies, once per K and extra bits."""
        from hpcthreads.backends import gpuslice
        from hpcthreads.backends.slicetables import per_value_extension, slice_tables

        key = ("slice", K, extra)
        if key not in self._sieves:
            t = slice_tables(K)
            if t.k2 != gpuslice.WALK_BITS or not t.e1:
                raise ValueError(f"the GPU slice kernels take k2 = {gpuslice.WALK_BITS} and e1 > 0")
            killx, _ = per_value_extension(K, extra)
            host = (t.res, t.packed, t.kill1, t.ce1, t.de1, t.kill2, t.ce2, t.de2, t.p3lo)
            host = (*host, gpuslice.walk_entries(t.k2), killx, t.p3hi)
            self._sieves[key] = (t, tuple(self._put(a) for a in host))
        return self._sieves[key]

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
