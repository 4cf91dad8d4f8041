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

    @property
    def skip_from(self) -> int:
        """Where the 3^2 sieve may start (0: never): n >= (3S + 1)/2 has its predecessor p >= S.

        n = 3m + 2 = T(p) with p = (2n - 1)/3, and n = 9m + 4 = T^3(p) with
        p = (8n - 5)/9 >= (2n - 1)/3: both p lie in the range from here on.
        """
        if not self.job.params["sieve_mod9"]:
            return 0
        return (3 * self.job.start + 2) // 2

    def prepare(self, backend: BaseBackend) -> None:
        # One value at the start: loads or builds the sieve's tables for this range
        backend.verify_range(self.job.start, 1, self.max_steps, *self.sieve, self.skip_from)

    def compute(self, backend: BaseBackend, offset: int, count: int) -> ChunkOutput:
        first = self.job.start + offset
        raw = backend.verify_range(first, count, self.max_steps, *self.sieve, self.skip_from)
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
        self._follow_skipped(summary)
        return ChunkOutput(offset, count, summary)

    def _follow_skipped(self, summary: VerifySummary) -> None:
        """Check the values the 3^2 sieve may have skipped on the word of an unresolved predecessor.

        A skipped n is settled by p only when p is resolved. For every
        unresolved p of this chunk, its successors n in the skipped classes
        are followed here (and theirs, when unresolved too). An n whose own
        chunk followed it anyway appears twice at most, and merging keeps
        one: unresolved values are a set, and records are normalised.
        """
        skip_from = self.skip_from
        unresolved = set(summary.unresolved)
        if skip_from:
            end = self.job.start + self.job.size
            pending = list(unresolved)
            while pending:
                for n in successors_skipped(pending.pop()):
                    if n < skip_from or n >= end or n in unresolved:
                        continue
                    glide = exact.glide_of(n, self.max_steps)
                    if glide < 0:
                        unresolved.add(n)
                        pending.append(n)
                    else:
                        summary.glide_records = records.merge(summary.glide_records, [(n, glide)])
        summary.unresolved = sorted(unresolved)

    def merge(self, a: VerifySummary, b: VerifySummary) -> VerifySummary:
        return VerifySummary(
            count=a.count + b.count,
            glide_records=records.merge(a.glide_records, b.glide_records),
            unresolved=sorted(set(a.unresolved) | set(b.unresolved)),
        )


def successors_skipped(p: int) -> list[int]:
    """The values of the 3^2 sieve's classes that p reaches before it can drop: T(p) = 3m + 2 for odd
    p, and T^3(p) = 9m + 4 for p = 8j + 3 (p, 3p + 1 over 2 = 12j + 5, 18j + 8, 9j + 4)."""
    out = []
    if p & 1:
        out.append((3 * p + 1) // 2)
    if p & 7 == 3:
        out.append((9 * p + 5) // 8)
    return out
