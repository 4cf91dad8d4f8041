"""`thread`: the first `max_depth` steps of each of `thread_count` trajectories."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcthreads import exact
from hpcthreads.backends.base import BaseBackend
from hpcthreads.workloads.base import BaseWorkload, ChunkOutput

# Path words of a value >= 2**128; such values are listed exactly in `overflow`
WORD_SENTINEL = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class ThreadSummary:
    count: int = 0
    reached_one: int = 0
    total_depth: int = 0
    max_depth_reached: int = 0


class ThreadWorkload(BaseWorkload):
    type = "thread"

    @property
    def max_depth(self) -> int:
        return self.job.params["max_depth"]

    def empty(self) -> ThreadSummary:
        return ThreadSummary()

    def cost_per_item(self) -> float:
        return max(1.0, self.max_depth / 50)

    def datasets(self) -> dict[str, tuple[tuple[int, ...], str]]:
        t, width = self.job.size, self.max_depth + 1
        sets = {"paths": ((t, width), "uint64"), "depth": ((t,), "uint32"), "final": ((t,), "uint64")}
        if self.wide:
            sets.update({"paths_hi": ((t, width), "uint64"), "final_hi": ((t,), "uint64")})
        return sets

    def compute(self, backend: BaseBackend, offset: int, count: int) -> ChunkOutput:
        first = self.job.start + offset
        raw = backend.thread_paths(first, count, self.max_depth)
        arrays = {"paths": raw.paths_lo, "depth": raw.depth, "final": raw.final_lo}
        if self.wide:
            arrays.update({"paths_hi": raw.paths_hi, "final_hi": raw.final_hi})
        elif np.any(raw.paths_hi) or len(raw.overflows):
            raise AssertionError("a path left 64 bits below the published first such start value")
        rows = [row for off in raw.overflows for row in self._exact_thread(arrays, first, int(off))]
        final_is_one = (raw.final_lo == 1) & (raw.final_hi == 0)
        summary = ThreadSummary(
            count=count,
            reached_one=int(np.count_nonzero(final_is_one)),
            total_depth=int(raw.depth.sum()),
            max_depth_reached=int(raw.depth.max(initial=0)),
        )
        out = ChunkOutput(offset, count, summary, arrays)
        if rows:
            out.extra["overflow"] = rows
        return out

    def _exact_thread(self, arrays: dict[str, np.ndarray], first: int, off: int) -> list[tuple[int, ...]]:
        """Rewrite one thread that left 128 bits from its exact path."""
        values = exact.path(first + off, self.max_depth)
        rows = []
        for step, value in enumerate(values):
            hi, lo = value >> 64, value & 0xFFFFFFFFFFFFFFFF
            if hi >> 64:
                hi = lo = int(WORD_SENTINEL)
                rows.append((first + off - self.job.start, step, value))
            arrays["paths"][off, step], arrays["paths_hi"][off, step] = lo, hi
        last = len(values) - 1
        arrays["depth"][off] = last
        arrays["final"][off] = arrays["paths"][off, last]
        arrays["final_hi"][off] = arrays["paths_hi"][off, last]
        return rows

    def merge(self, a: ThreadSummary, b: ThreadSummary) -> ThreadSummary:
        return ThreadSummary(
            count=a.count + b.count,
            reached_one=a.reached_one + b.reached_one,
            total_depth=a.total_depth + b.total_depth,
            max_depth_reached=max(a.max_depth_reached, b.max_depth_reached),
        )
