"""`hpcthreads check`: a results file's checksums against its contents.

Every chunk's per-item data is read back and its digest compared with the one
recorded when it was computed (/run/digests), every complete job's summary
and overflow tables with `summary_digest`; and a complete job's recorded
chunks must cover it. A flipped byte anywhere in them is named: the job, and
the range of start values (or threads) it is in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcthreads.io import schema
from hpcthreads.io.digest import MEANING_ATTRS, attrs_digest, summary_digest, verify_rows
from hpcthreads.io.results import Results
from hpcthreads.io.summaries import load_summary
from hpcthreads.io.validate import attr, reading
from hpcthreads.workloads.base import to_plain


@dataclass
class CheckReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chunks: int = 0
    bytes: int = 0
    summaries: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        head = f"{self.path}: " + ("OK" if self.ok else f"DAMAGED ({len(self.problems)} problem(s))")
        mib = self.bytes / 2**20
        head += f"; {self.chunks:,} chunk(s), {mib:,.1f} MiB of data, {self.summaries} summary(ies) checked"
        return "\n".join([head, *(f"  {line}" for line in self.problems + self.notes)])


def _maxima_differ(summary: object, shown: dict) -> bool:
    """Whether the maxima stored as attributes differ from those of the (verified) records."""
    for key in ("max_delay", "max_peak", "max_glide"):
        if key in shown:
            best = getattr(summary, key)
            if (list(best) if best is not None else None) != shown[key]:
                return True
    return False


def _check_attrs(report: CheckReport, results: Results, name: str, group: Any, complete: bool) -> None:
    """A complete job's attributes that locate or interpret its data, against their digest."""
    attrs = group.attrs
    if not complete:
        return
    if "attrs_digest" not in attrs:
        report.notes.append(f"job {name!r}: no checksum of its attributes (written by an earlier version)")
    elif attrs_digest(attrs, results.attrs.get("integer_encoding", "")) != attr(group, "attrs_digest", "int"):
        changed = ", ".join(n for n in MEANING_ATTRS if n in attrs)
        report.problems.append(
            f"job {name!r}: the attributes that say where its data lies and how to read it were changed "
            f"(one of {changed})"
        )


def check_file(path: Path) -> CheckReport:
    """Verify every checksum of the results file `path`."""
    report = CheckReport(Path(path))
    with Results(path) as results, reading(path):
        digests = (
            results.file["run"]["digests"]
            if "run" in results.file and "digests" in results.file["run"]
            else None
        )
        for job in results:
            group, start = job.group, job.start
            complete = job.summary["state"] == schema.STATE_COMPLETE
            if complete and "summary_digest" in group.attrs:
                report.summaries += 1
                extra = {
                    name: schema.decode_table(group[name][()])
                    for name in ("peak_overflow", "overflow")
                    if name in group
                }
                summary = load_summary(group)
                if summary_digest(to_plain(summary), extra) != attr(group, "summary_digest", "int"):
                    report.problems.append(
                        f"job {job.name!r}: its summary (records, histogram, counts) was changed"
                    )
                elif _maxima_differ(summary, job.summary):
                    report.problems.append(f"job {job.name!r}: its maxima disagree with its records")
            elif complete:
                report.notes.append(f"job {job.name!r}: no summary checksum (written by an earlier version)")
            _check_attrs(report, results, job.name, group, complete)
            if not job.datasets():
                continue
            if digests is None or job.name not in digests:
                report.notes.append(f"job {job.name!r}: no data checksums (written by an earlier version)")
                continue
            rows = schema.decode_table(digests[job.name][()])
            bad, read = verify_rows(group, rows)
            report.chunks += len(rows)
            report.bytes += read
            for offset, count in bad:
                items = f"{start + offset:,}..{start + offset + count - 1:,}"
                report.problems.append(f"job {job.name!r}: data of items {items} was changed")
            if complete:
                covered = sum(count for _, count, _ in rows)
                size = attr(group, "size", "int")
                if covered != size:
                    report.problems.append(
                        f"job {job.name!r}: checksums cover {covered:,} of its {size:,} items"
                    )
    return report
