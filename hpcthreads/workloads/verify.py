"""`verify`: every start value of a range drops below itself (finite glide)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from hpcthreads import exact
from hpcthreads.backends.base import BaseBackend, SlicePlan
from hpcthreads.workloads import records
from hpcthreads.workloads.base import BaseWorkload, ChunkOutput
from hpcthreads.workloads.slices import SliceLayout, make_layout


@dataclass
class VerifySummary:
    count: int = 0
    glide_records: list[records.Pair] = field(default_factory=list)
    unresolved: list[int] = field(default_factory=list)
    # Start values the kernels followed past the sieve (None: not known, as in files from before it was)
    walked: int | None = 0

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
    def predecessors_from(self) -> int:
        """From here on n = 3m + 2 and n = 9m + 4 have their predecessor p in the range: n >= (3S + 1)/2.

        n = 3m + 2 = T(p) with p = (2n - 1)/3, and n = 9m + 4 = T^3(p) with
        p = (8n - 5)/9 >= (2n - 1)/3.
        """
        return (3 * self.job.start + 2) // 2

    @property
    def skip_from(self) -> int:
        """Where the 3^2 sieve starts (0: never)."""
        return self.predecessors_from if self.job.params["sieve_mod9"] else 0

    @property
    def skip_window(self) -> tuple[int, int]:
        """(below, from): where the job is cut by residue, the 3^2 sieve skips n < below and n >= from.

        n = 3m + 2 has its predecessor (2n - 1)/3 below `verified_below` (VB)
        for n < (3 VB + 1)/2 and in the range for n >= (3S + 1)/2; n = 9m + 4
        has (8n - 5)/9 below VB for n < (9 VB + 5)/8 and in the range for
        n >= (9S + 5)/8. Between, each class has a gap; one window spans both
        (no gap at all with VB = S, the default: every value of the two
        classes is skipped).
        """
        below, start = self.job.params["verified_below"], self.job.start
        gaps = [((3 * below + 2) // 2, (3 * start + 2) // 2), ((9 * below + 12) // 8, (9 * start + 12) // 8)]
        gaps = [(lo, hi) for lo, hi in gaps if lo < hi]
        if not gaps:
            return 0, 0
        return min(lo for lo, _ in gaps), max(hi for _, hi in gaps)

    @cached_property
    def layout(self) -> SliceLayout | None:
        """How the job is cut: by residue (workloads.slices) for large jobs, else None (ranges)."""
        return make_layout(self.job.start, self.job.size, self.job.params["sieve_slice_bits"], self.max_steps)

    @cached_property
    def slice_plan(self) -> SlicePlan | None:
        """What every residue slice of the job shares, for the backends."""
        from hpcthreads.config import MAX_SIEVE_EXTRA_BITS

        layout = self.layout
        if layout is None:
            return None
        first = layout.start + layout.prefix
        # The per-value extension holds for n >= 2^(K + extra), and its tables' words for K + extra <= 63
        room = min(63, first.bit_length() - 1) - layout.K
        extra = max(0, min(self.sieve[1], MAX_SIEVE_EXTRA_BITS, room))
        mod9 = bool(self.job.params["sieve_mod9"])
        below, since = self.skip_window
        return SlicePlan(
            layout.K, layout.body, self.max_steps, layout.floor, extra, mod9,
            since, below, bool(self.job.params["sieve_join"]),
        )  # fmt: skip

    def prepare(self, backend: BaseBackend) -> None:
        # One value at the start: loads or builds the sieve's tables for this range
        backend.verify_range(self.job.start, 1, self.max_steps, *self.sieve, self.skip_from)
        plan = self.slice_plan
        if plan is not None:
            # A few residues: compiles the slice kernel, builds its tables
            backend.verify_slice(plan, 1 << (plan.K - 1), 0, (1 << (plan.K - 1)) + 64, 0)

    def compute(self, backend: BaseBackend, offset: int, count: int) -> ChunkOutput:
        summary = self.empty()
        if self.layout is None:
            pieces = [("range", self.job.start + offset, count)]
        else:
            pieces = self.layout.pieces(offset, count)
        for kind, *args in pieces:
            if kind == "range":
                part = self._range(backend, *args)
            else:
                part = self._slice(backend, *args)
            summary = self.merge(summary, part)
        return ChunkOutput(offset, count, summary)

    def _range(self, backend: BaseBackend, first: int, count: int) -> VerifySummary:
        raw = backend.verify_range(first, count, self.max_steps, *self.sieve, self.skip_from)
        summary = VerifySummary(
            count=count,
            glide_records=records.from_table(raw.glide_records, first),
            unresolved=[first + int(o) for o in raw.too_long],
            walked=int(raw.walked),
        )
        return self._settle_overflows(summary, [first + int(off) for off in raw.overflows])

    def _slice(self, backend: BaseBackend, bfirst: int, ifirst: int, blast: int, iend: int) -> VerifySummary:
        raw = backend.verify_slice(self.slice_plan, bfirst, ifirst, blast, iend)
        layout = self.layout
        count = layout.before(blast) + iend - layout.before(bfirst) - ifirst
        summary = VerifySummary(
            count=count,
            glide_records=records.normalise(raw.candidates),
            unresolved=sorted(raw.too_long),
            walked=raw.walked,
        )
        return self._settle_overflows(summary, raw.overflows)

    def _settle_overflows(self, summary: VerifySummary, overflows: list[int]) -> VerifySummary:
        """The values a kernel handed over as leaving 128 bits, on the exact path."""
        for n in overflows:
            glide = exact.glide_of(n, self.max_steps)
            if glide < 0:
                summary.unresolved.append(n)
            else:
                summary.glide_records = records.merge(summary.glide_records, [(n, glide)])
        summary.unresolved.sort()
        return summary

    def finish(self, summary: VerifySummary) -> VerifySummary:
        """Follow the values the 3^2 sieve may have skipped on the word of an unresolved predecessor.

        A skipped n is settled by its predecessor p only when p is resolved.
        Once every chunk is in, the successors n of every unresolved p in
        the skipped classes are followed here (and theirs, when unresolved
        too), whatever sieve each chunk ran with (a resumed run may have
        changed it). An n that its own chunk followed appears twice at most:
        unresolved values are a set, and records are normalised.
        """
        # Skipped values lie anywhere from the start where the job is cut by residue
        first = self.job.start if self.layout else self.predecessors_from
        end = self.job.start + self.job.size
        unresolved = set(summary.unresolved)
        found: list[records.Pair] = []
        pending = list(unresolved)
        while pending:
            p = pending.pop()
            for n in successors_skipped(p) + successors_joined(p):
                if n < first or n >= end or n in unresolved:
                    continue
                glide = exact.glide_of(n, self.max_steps)
                if glide < 0:
                    unresolved.add(n)
                    pending.append(n)
                else:
                    found.append((n, glide))
        return VerifySummary(
            count=summary.count,
            glide_records=records.merge(summary.glide_records, found),
            unresolved=sorted(unresolved),
            walked=summary.walked,
        )

    def merge(self, a: VerifySummary, b: VerifySummary) -> VerifySummary:
        return VerifySummary(
            count=a.count + b.count,
            glide_records=records.merge(a.glide_records, b.glide_records),
            unresolved=sorted(set(a.unresolved) | set(b.unresolved)),
            walked=None if a.walked is None or b.walked is None else a.walked + b.walked,
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


def successors_joined(p: int) -> list[int]:
    """The value the join rule (sieve_join) may skip on p's word: 2p + 1, whose path joins that of
    2p (and so p's) after K steps."""
    return [2 * p + 1]
