"""The checkpoint ledger: which chunks are done, with their results merged so far, durably.

HDF5 files cannot be appended to safely while a process may be killed at any
moment, so the ledger lives beside the results file, written by rank 0 only:

- `OUT.ledger`: JSON lines, committed in groups: one write and one fsync for
  every GROUP_SECONDS or GROUP_ENTRIES finished chunks (or sub-coordinator
  batches), whichever comes first, so the fsync is off the per-chunk path.
  A commit writes one line per job with new work: the ranges finished since
  the previous commit (their data already written), side-table rows, and the
  job's summary merged over everything finished so far (`total`), which is
  the coordinator's own running merge: nothing is encoded per chunk. The
  summary's union fields (workloads.base.UNION_FIELDS: verify's unresolved
  values, millions with a small step bound) are left out of `total`; the line
  holds their values new since the previous commit (`added`) instead, so a
  commit costs what it adds, never all the values so far;
- `OUT.checkpoint`: a snapshot (the merged summaries and done ranges of all
  ledger lines up to `seq`), written to a temporary name, fsync'd and renamed
  every few seconds; the ledger is then emptied.

Loading takes the snapshot and replays the ledger lines after its `seq`; a
torn last line (a kill during the write) is ignored, so its chunks are simply
computed again. Nothing is lost and nothing is counted twice: a kill -9 of
every rank loses at most the chunks of the group not yet committed, which
`--resume` computes again. A union field is the snapshot's values with the
`added` values of every later line. (Ledgers written by earlier versions, one
line per chunk with that chunk's own `summary`, are replayed by merging; their
lines' `total` holds the union fields whole.)
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcthreads.errors import OutputError
from hpcthreads.io.digest import checked, with_check
from hpcthreads.io.safewrite import open_nofollow, write_replacing
from hpcthreads.io.space import full_error, is_disk_full

LEDGER_SUFFIX = ".ledger"
CHECKPOINT_SUFFIX = ".checkpoint"

log = logging.getLogger("hpcthreads")


# A group of ledger lines is committed (written and fsync'd) after this long or this many lines
GROUP_SECONDS = 0.05
GROUP_ENTRIES = 256
# What a run stopped by a full disk tells its user
RESUME_HINT = "finished chunks are saved: make room, then run the same command with --resume"


class Ranges:
    """Disjoint half-open integer ranges.

    Adding is O(1): new ranges wait in a list and are merged into the sorted
    spans (O(n + k log k) for k new ones) when the spans are read, which
    happens at snapshots, not per chunk. Overlapping ranges are an error.
    """

    def __init__(self, spans: list[list[int]] | None = None) -> None:
        self._spans: list[list[int]] = []
        self._pending: list[tuple[int, int]] = []
        self._covered = 0
        for a, b in spans or []:
            self.add(a, b)

    def add(self, start: int, end: int) -> None:
        if end > start:
            self._pending.append((start, end))
            self._covered += end - start

    @property
    def spans(self) -> list[list[int]]:
        """The ranges as sorted, merged [start, end) pairs; ValueError if any two overlap."""
        return self.normalise()

    def normalise(self) -> list[list[int]]:
        """Merge the ranges added since the last call into the sorted spans."""
        if self._pending:
            self._pending.sort()
            merged: list[list[int]] = []
            for a, b in heapq.merge(map(tuple, self._spans), self._pending):
                if merged and a < merged[-1][1]:
                    raise ValueError(f"ranges overlap at {a}..{min(b, merged[-1][1]) - 1}")
                if merged and a == merged[-1][1]:
                    merged[-1][1] = b
                else:
                    merged.append([a, b])
            self._spans, self._pending = merged, []
        return self._spans

    def covered(self) -> int:
        return self._covered

    def overlaps(self, start: int, end: int) -> bool:
        return any(a < end and start < b for a, b in self.spans)

    def gaps(self, size: int) -> list[tuple[int, int]]:
        """(offset, count) of every part of [0, size) not covered."""
        out, cursor = [], 0
        for a, b in self.spans:
            if a > cursor:
                out.append((cursor, a - cursor))
            cursor = max(cursor, b)
        if cursor < size:
            out.append((cursor, size - cursor))
        return out


@dataclass
class _Pending:
    spans: list[tuple[int, int]] = field(default_factory=list)
    ended: float = 0.0
    extra: dict[str, list[list[int]]] = field(default_factory=dict)
    digests: list[tuple[int, int, int]] = field(default_factory=list)
    # Values of the summary's union fields finished since the last commit (None: it has none)
    added: dict[str, list[int]] | None = None


@dataclass
class LedgerState:
    """What a ledger holds: per job name, the done ranges and the merged plain summary."""

    config: str
    seq: int = 0
    done: dict[str, Ranges] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, dict[str, list[list[int]]]] = field(default_factory=dict)
    updated: float = 0.0
    # Why the run that wrote this ledger stopped early ("" while it runs)
    stopped: str = ""
    # Per job name: (offset, count, data digest) of every finished chunk with per-item data
    digests: dict[str, list[list[int]]] = field(default_factory=dict)


def paths(output: Path) -> tuple[Path, Path]:
    output = Path(output)
    return output.with_name(output.name + LEDGER_SUFFIX), output.with_name(output.name + CHECKPOINT_SUFFIX)


def exists(output: Path) -> bool:
    return any(p.exists() for p in paths(output))


def remove(output: Path) -> None:
    for path in paths(output):
        path.unlink(missing_ok=True)


def records_work(output: Path) -> bool:
    """Whether the ledger of OUTPUT records any finished chunk (True when it cannot be read: keep it)."""
    ledger_path, checkpoint_path = paths(output)
    try:
        if ledger_path.exists() and ledger_path.stat().st_size:
            return True
        if not checkpoint_path.exists():
            return False
        body = checked(json.loads(checkpoint_path.read_text(encoding="utf-8")))
        return any(spans for spans in body["done"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return True


def _fsync_write(path: Path, text: str) -> None:
    # An unpredictable temporary name, fsync'd and renamed; a full disk leaves nothing half written
    write_replacing(path, text, "checkpoint", sync=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _open_ledger(path: Path, flag: int) -> Any:
    """The ledger for appending or emptied (FLAG), created if missing; never through a planted link."""
    return os.fdopen(open_nofollow(path, os.O_WRONLY | os.O_CREAT | flag, "ledger"), "a", encoding="utf-8")


def load(output: Path, merge: Any) -> LedgerState:
    """Read the snapshot and replay the ledger; `merge(job, plain_a, plain_b)` merges plain summaries.

    ValueError when the lines contradict each other or the snapshot (ranges done twice).
    """
    ledger_path, checkpoint_path = paths(output)
    try:
        snapshot = checked(json.loads(checkpoint_path.read_text(encoding="utf-8")))
    except ValueError as exc:
        raise ValueError(f"{checkpoint_path.name}: {exc}") from None
    state = LedgerState(snapshot["config"], snapshot["seq"], updated=snapshot.get("updated", 0.0))
    state.digests = dict(snapshot.get("digests", {}))
    state.done = {name: Ranges(spans) for name, spans in snapshot["done"].items()}
    state.summaries = dict(snapshot["summaries"])
    state.extra = dict(snapshot.get("extra", {}))
    state.stopped = snapshot.get("stopped", "")
    # Per job, the union fields' values so far, from the lines that hold only their new values
    grown: dict[str, dict[str, list[int]]] = {}
    if ledger_path.exists():
        with open(ledger_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn last line: that chunk is computed again
                try:
                    entry = checked(entry)
                except ValueError as exc:
                    raise ValueError(f"{ledger_path.name}, line {entry.get('seq')!r}: {exc}") from None
                if entry["seq"] <= state.seq:
                    continue
                _apply(state, entry)
                name = entry["job"]
                if "added" in entry:
                    _grow(grown.setdefault(name, {}), state.summaries.get(name, {}), entry["added"])
                elif "total" in entry:
                    grown.pop(name, None)  # a line of an earlier version: its total holds them whole
                if "total" in entry:
                    state.summaries[name] = entry["total"]
                else:
                    previous, summary = state.summaries.get(name), entry["summary"]
                    state.summaries[name] = summary if previous is None else merge(name, previous, summary)
    for name, fields in grown.items():
        state.summaries[name].update({key: sorted(set(values)) for key, values in fields.items()})
    for name, ranges in state.done.items():
        try:
            ranges.normalise()
        except ValueError as exc:
            raise ValueError(f"the ledger records work of job {name!r} twice ({exc})") from None
    return state


def _grow(fields: dict[str, list[int]], before: dict[str, Any], added: dict[str, list[int]]) -> None:
    """Add a line's new union-field values; the first such line starts from the whole set `before` it."""
    for key, values in added.items():
        if key not in fields:
            fields[key] = list(before.get(key, []))
        fields[key].extend(values)


def entry_spans(entry: dict[str, Any]) -> list[list[int]]:
    """(offset, count) pairs of a ledger line (one chunk's line has `offset` and `count`)."""
    if "spans" in entry:
        return entry["spans"]
    return [[entry["offset"], entry["count"]]]


def _apply(state: LedgerState, entry: dict[str, Any]) -> None:
    """Done ranges, side tables, seq and time of one line; the caller merges the summary."""
    name = entry["job"]
    ranges = state.done.setdefault(name, Ranges())
    for offset, count in entry_spans(entry):
        ranges.add(offset, offset + count)
    for table, rows in entry.get("extra", {}).items():
        state.extra.setdefault(name, {}).setdefault(table, []).extend(rows)
    if entry.get("digests"):
        state.digests.setdefault(name, []).extend(entry["digests"])
    state.seq = entry["seq"]
    state.updated = entry.get("ended", state.updated)


class LedgerWriter:
    """Rank 0's side: record finished ranges, commit them in groups, take snapshots.

    `summaries()` gives the merged summary of every job with finished work
    (plain, as `to_plain` makes it): the coordinator points it at its own
    running merge, which every snapshot writes as it is; `lean_summaries()`,
    when set, gives them without their union fields, for commits (which write
    those fields' new values, from `append`, instead).
    """

    def __init__(
        self,
        output: Path,
        state: LedgerState,
        interval: float = 30.0,
        summaries: Callable[[], dict[str, dict[str, Any]]] | None = None,
        group_seconds: float = GROUP_SECONDS,
        group_entries: int = GROUP_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        sync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.ledger_path, self.checkpoint_path = paths(output)
        self.state = state
        self.interval = interval
        self.summaries = summaries
        self.lean_summaries: Callable[[], dict[str, dict[str, Any]]] | None = None
        self.group_seconds = group_seconds
        self.group_entries = group_entries
        self.clock = clock
        self.sync = sync
        # Per job: ranges, end time and side-table rows recorded since the last commit
        self.pending: dict[str, _Pending] = {}
        self.records = 0
        self.group_started = 0.0
        self.commits = 0
        self.next_snapshot = clock() + interval
        if not self.checkpoint_path.exists() or state.stopped:
            # A resumed run is no longer stopped
            state.stopped = ""
            self.snapshot()
        self.handle = _open_ledger(self.ledger_path, os.O_APPEND)

    def append(
        self,
        job: str,
        spans: list[tuple[int, int]],
        ended: float,
        extra: dict[str, list] | None = None,
        digests: list[tuple[int, int, int]] | None = None,
        added: dict[str, list[int]] | None = None,
    ) -> None:
        """Record finished ranges [(offset, count), ...] of `job`: their data must be written and their
        summary merged into what `summaries()` returns. `digests` are their chunks' data digests;
        `added`, their summary's union-field values (workloads.base.split_union)."""
        if not self.pending:
            self.group_started = self.clock()
        pending = self.pending.setdefault(job, _Pending())
        pending.spans.extend(spans)
        pending.ended = max(pending.ended, ended)
        done = self.state.done.setdefault(job, Ranges())
        for offset, count in spans:
            done.add(offset, offset + count)
        for table, rows in (extra or {}).items():
            plain = [list(row) for row in rows]
            pending.extra.setdefault(table, []).extend(plain)
            self.state.extra.setdefault(job, {}).setdefault(table, []).extend(plain)
        if digests:
            pending.digests.extend(digests)
            self.state.digests.setdefault(job, []).extend(list(d) for d in digests)
        if added:
            if pending.added is None:
                pending.added = {}
            for key, values in added.items():
                pending.added.setdefault(key, []).extend(values)
        self.state.updated = max(self.state.updated, ended)
        self.records += 1
        if self.records >= self.group_entries:
            self.commit()

    def tick(self, now: float | None = None) -> None:
        """Commit a group that is due, take a snapshot that is due; between messages, never inside one."""
        now = self.clock() if now is None else now
        if now >= self.next_snapshot:
            self.snapshot()
        elif self.pending and now - self.group_started >= self.group_seconds:
            self.commit()

    def commit(self) -> None:
        """Write and fsync one line per job with work recorded since the last commit."""
        if not self.pending:
            return
        totals_of = self.lean_summaries or self.summaries
        totals = totals_of() if totals_of is not None else {}
        lines = []
        for job, pending in self.pending.items():
            self.state.seq += 1
            entry: dict[str, Any] = {"seq": self.state.seq, "job": job, "spans": pending.spans}
            entry["ended"] = pending.ended
            entry["total"] = totals.get(job, {})
            if pending.added is not None:
                # Only what is new: loading adds it to the union fields' values so far
                entry["total"] = {k: v for k, v in entry["total"].items() if k not in pending.added}
                entry["added"] = pending.added
            if pending.extra:
                entry["extra"] = pending.extra
            if pending.digests:
                entry["digests"] = [list(d) for d in pending.digests]
            lines.append(with_check(entry) + "\n")
        try:
            self.handle.write("".join(lines))
            self.handle.flush()
            self.sync(self.handle.fileno())
        except OSError as exc:
            if is_disk_full(exc):
                raise full_error(self.ledger_path) from None
            raise OutputError(f"writing the ledger {self.ledger_path} failed ({exc})") from None
        self.pending.clear()
        self.records = 0
        self.commits += 1

    def snapshot(self) -> None:
        """Fold the ledger into a new checkpoint, then empty the ledger."""
        state = self.state
        if self.summaries is not None:
            state.summaries = self.summaries()
        body = {
            "config": state.config,
            "seq": state.seq,
            "updated": time.time(),
            "done": {name: ranges.spans for name, ranges in state.done.items()},
            "summaries": state.summaries,
            "extra": state.extra,
            "digests": state.digests,
        }
        if state.stopped:
            body["stopped"] = state.stopped
        text = with_check(body)
        try:
            _fsync_write(self.checkpoint_path, text)
        except OSError as exc:
            if is_disk_full(exc):
                raise full_error(self.checkpoint_path, len(text)) from None
            raise OutputError(f"writing the checkpoint {self.checkpoint_path} failed ({exc})") from None
        # Lines up to seq are in the checkpoint, and so is what was recorded and not yet committed
        self.pending.clear()
        self.records = 0
        if hasattr(self, "handle") and not self.handle.closed:
            self.handle.truncate(0)
            self.handle.seek(0)
        else:
            _open_ledger(self.ledger_path, os.O_TRUNC).close()
        self.next_snapshot = self.clock() + self.interval

    def close(self) -> None:
        self.snapshot()
        self.handle.close()

    def has_work(self) -> bool:
        """Whether any chunk was recorded as done, in this session or an earlier one."""
        return any(ranges.covered() for ranges in self.state.done.values()) or bool(self.pending)

    def discard(self) -> None:
        """Close and remove the ledger and checkpoint of a run that recorded no work; never raises."""
        try:
            self.handle.close()
        except (OSError, ValueError, AttributeError):
            pass
        for path in (self.ledger_path, self.checkpoint_path):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not remove %s: %s", path, exc)

    def stop(self, reason: str) -> None:
        """Record why the run is ending early, for `hpcthreads status`; never raises."""
        self.state.stopped = reason
        try:
            self.snapshot()
        except (OSError, ValueError, OutputError) as exc:
            log.warning("could not record the stop in %s: %s", self.checkpoint_path, exc)
        try:
            self.handle.close()
        except (OSError, ValueError):
            pass  # lines that could not be written are not in the ledger: their chunks run again
