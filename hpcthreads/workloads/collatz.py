"""`collatz`: delay, peak and glide of every start value of a range."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hpcthreads import exact
from hpcthreads.backends.base import BaseBackend
from hpcthreads.workloads import records
from hpcthreads.workloads.base import BaseWorkload, ChunkOutput

# Per-number peak words of a value >= 2**128 (never a real peak: see docs/format.md)
PEAK_SENTINEL = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class CollatzSummary:
    count: int = 0
    sum_delay: int = 0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    delay_records: list[records.Pair] = field(default_factory=list)
    path_records: list[records.Pair] = field(default_factory=list)
    glide_records: list[records.Pair] = field(default_factory=list)

    @property
    def max_delay(self) -> records.Pair | None:
        return records.best(self.delay_records)

    @property
    def max_peak(self) -> records.Pair | None:
        return records.best(self.path_records)

    @property
    def max_glide(self) -> records.Pair | None:
        return records.best(self.glide_records)


class CollatzWorkload(BaseWorkload):
    type = "collatz"

    @property
    def store(self) -> bool:
        return self.job.params["store"] == "per-number"

    def empty(self) -> CollatzSummary:
        return CollatzSummary()

    def datasets(self) -> dict[str, tuple[tuple[int, ...], str]]:
        if not self.store:
            return {}
        shape = (self.job.size,)
        sets = {"delay": (shape, "uint32"), "glide": (shape, "uint32"), "peak": (shape, "uint64")}
        if self.wide:
            sets["peak_hi"] = (shape, "uint64")
        return sets

    def compute(self, backend: BaseBackend, offset: int, count: int) -> ChunkOutput:
        first = self.job.start + offset
        raw = backend.collatz_range(first, count, self.store)
        summary = CollatzSummary(
            count=count,
            sum_delay=raw.sum_delay,
            histogram=np.asarray(raw.histogram, np.int64),
            delay_records=records.from_table(raw.delay_records, first),
            path_records=records.from_table(raw.path_records, first),
            glide_records=records.from_table(raw.glide_records, first),
        )
        out = ChunkOutput(offset, count, summary)
        if self.store:
            out.arrays = {"delay": raw.delay, "glide": raw.glide, "peak": raw.peak_lo}
            if self.wide:
                out.arrays["peak_hi"] = raw.peak_hi
            elif np.any(raw.peak_hi):
                raise AssertionError("a peak left 64 bits below the published first such start value")
        self._finish_overflows(out, first, raw.overflows)
        return out

    def _finish_overflows(self, out: ChunkOutput, first: int, offsets: np.ndarray) -> None:
        """Values whose trajectory leaves 128 bits: computed again, exactly."""
        s = out.summary
        rows = []
        for off in (int(o) for o in offsets):
            n = first + off
            delay, peak, glide = exact.trajectory_stats(n)
            s.sum_delay += delay
            hist = np.zeros(delay + 1, np.int64)
            hist[delay] = 1
            s.histogram = records.add_histograms(s.histogram, hist)
            s.delay_records = records.merge(s.delay_records, [(n, delay)])
            s.path_records = records.merge(s.path_records, [(n, peak)])
            s.glide_records = records.merge(s.glide_records, [(n, glide)])
            rows.append((n, peak))
            if self.store:
                out.arrays["delay"][off] = delay
                out.arrays["glide"][off] = glide
                for name in ("peak", "peak_hi"):
                    out.arrays[name][off] = PEAK_SENTINEL
        if rows:
            out.extra["peak_overflow"] = rows

    def merge(self, a: CollatzSummary, b: CollatzSummary) -> CollatzSummary:
        return CollatzSummary(
            count=a.count + b.count,
            sum_delay=a.sum_delay + b.sum_delay,
            histogram=records.add_histograms(a.histogram, b.histogram),
            delay_records=records.merge(a.delay_records, b.delay_records),
            path_records=records.merge(a.path_records, b.path_records),
            glide_records=records.merge(a.glide_records, b.glide_records),
        )
