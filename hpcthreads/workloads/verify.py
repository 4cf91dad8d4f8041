"""`verify`: every start value of a range drops below itself (finite glide)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hpcthreads import exact
from hpcthreads.backends.base import BaseBackend
from hpcthreads.workloads import records
from hpcthreads.workloads.base import BaseWorkload, ChunkOutput


@dataclass
class VerifySummary:
    count: int = 0
    glide_records: list[records.Pair] = field(default_factory=list)
    unresolved: list[int] = field(default_factory=list)

    @property
    def covered(self) -> int:
        """Start values proven to drop below themselves."""
        return self.count - len(self.unresolved)

    @property
    def max_glide(self) -> records.Pair | None:
        return records.best(self.glide_records)


class VerifyWorkload(BaseWorkload):
    type = "verify"

    @property
    def max_steps(self) -> int:
        return self.job.params["max_steps"]

    def empty(self) -> VerifySummary:
        return VerifySummary()

    @property
    def sieve(self) -> tuple[int, int]:
        """(sieve_bits, sieve_extra_bits): speed settings, never a change of results."""
        return self.job.params["sieve_bits"], self.job.params["sieve_extra_bits"]

    def prepare(self, backend: BaseBackend) -> None:
        # One value at the start: loads or builds the sieve's tables for this range
        backend.verify_range(self.job.start, 1, self.max_steps, *self.sieve)

    def compute(self, backend: BaseBackend, offset: int, count: int) -> ChunkOutput:
        first = self.job.start + offset
        raw = backend.verify_range(first, count, self.max_steps, *self.sieve)
        summary = VerifySummary(
            count=count,
            glide_records=records.from_table(raw.glide_records, first),
            unresolved=[first + int(o) for o in raw.too_long],
        )
        for off in raw.overflows:
            n = first + int(off)
            glide = exact.glide_of(n, self.max_steps)
            if glide < 0:
                summary.unresolved.append(n)
            else:
                summary.glide_records = records.merge(summary.glide_records, [(n, glide)])
        summary.unresolved.sort()
        return ChunkOutput(offset, count, summary)

    def merge(self, a: VerifySummary, b: VerifySummary) -> VerifySummary:
        return VerifySummary(
            count=a.count + b.count,
            glide_records=records.merge(a.glide_records, b.glide_records),
            unresolved=sorted(a.unresolved + b.unresolved),
        )
