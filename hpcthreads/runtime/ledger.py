"""The checkpoint ledger: which chunks are done, with their partial results, durably.

HDF5 files cannot be appended to safely while a process may be killed at any
moment, so the ledger lives beside the results file, written by rank 0 only:

- `OUT.ledger`: one JSON line per finished chunk, or per batch of chunks a
  sub-coordinator reports at once (job, ranges, rank, times and the partial
  summary of those ranges), written after the chunks' data. Lines are
  committed in groups: one write and one fsync for every GROUP_SECONDS or
  GROUP_ENTRIES lines, whichever comes first, so the fsync is off the
  per-chunk path;
- `OUT.checkpoint`: a snapshot (the merged summaries and done ranges of all
  ledger lines up to `seq`), written to a temporary name, fsync'd and renamed
  every few seconds; the ledger is then emptied.

Loading takes the snapshot and replays the ledger lines after its `seq`; a
torn last line (a kill during the write) is ignored, so its chunk is simply
computed again. Nothing is lost and nothing is counted twice: a kill -9 of
every rank loses at most the lines of the group not yet committed, whose
chunks are computed again by `--resume`.
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

LEDGER_SUFFIX = ".ledger"
CHECKPOINT_SUFFIX = ".checkpoint"

log = logging.getLogger("hpcthreads")


# A group of ledger lines is committed (written and fsync'd) after this long or this many lines
GROUP_SECONDS = 0.05
GROUP_ENTRIES = 256


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


def paths(output: Path) -> tuple[Path, Path]:
    output = Path(output)
    return output.with_name(output.name + LEDGER_SUFFIX), output.with_name(output.name + CHECKPOINT_SUFFIX)


def exists(output: Path) -> bool:
    return any(p.exists() for p in paths(output))


def remove(output: Path) -> None:
    for path in paths(output):
        path.unlink(missing_ok=True)


def _fsync_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(output: Path, merge: Any) -> LedgerState:
    """Read the snapshot and replay the ledger; `merge(job, plain_a, plain_b)` merges plain summaries.

    ValueError when the lines contradict each other or the snapshot (ranges done twice).
    """
    ledger_path, checkpoint_path = paths(output)
    snapshot = json.loads(checkpoint_path.read_text(encoding="utf-8"))
    state = LedgerState(snapshot["config"], snapshot["seq"], updated=snapshot.get("updated", 0.0))
    state.done = {name: Ranges(spans) for name, spans in snapshot["done"].items()}
    state.summaries = dict(snapshot["summaries"])
    state.extra = dict(snapshot.get("extra", {}))
    state.stopped = snapshot.get("stopped", "")
    if ledger_path.exists():
        with open(ledger_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn last line: that chunk is computed again
                if entry["seq"] <= state.seq:
                    continue
                _apply(state, entry)
                name, previous = entry["job"], state.summaries.get(entry["job"])
                summary = entry["summary"]
                state.summaries[name] = summary if previous is None else merge(name, previous, summary)
    for name, ranges in state.done.items():
        try:
            ranges.normalise()
        except ValueError as exc:
            raise ValueError(f"the ledger records work of job {name!r} twice ({exc})") from None
    return state


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
    state.seq = entry["seq"]
    state.updated = entry.get("ended", state.updated)


class LedgerWriter:
    """Rank 0's side: append finished chunks in committed groups, take snapshots.

    The merged summaries written into a snapshot come from `summaries()`,
    which the coordinator points at its own running merge (merging here
    too would do the same work twice per chunk).
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
        self.group_seconds = group_seconds
        self.group_entries = group_entries
        self.clock = clock
        self.sync = sync
        self.buffer: list[str] = []
        self.group_started = 0.0
        self.commits = 0
        self.next_snapshot = clock() + interval
        if not self.checkpoint_path.exists() or state.stopped:
            # A resumed run is no longer stopped
            state.stopped = ""
            self.snapshot()
        self.handle = open(self.ledger_path, "a", encoding="utf-8")

    def append(
        self,
        job: str,
        spans: list[tuple[int, int]],
        rank: int,
        started: float,
        ended: float,
        summary: dict[str, Any],
        extra: dict[str, list] | None = None,
    ) -> None:
        """Record finished ranges [(offset, count), ...] of one job; their data must be written."""
        entry: dict[str, Any] = {"seq": self.state.seq + 1, "job": job}
        if len(spans) == 1:
            entry["offset"], entry["count"] = spans[0]
        else:
            entry["spans"] = [list(span) for span in spans]
        entry.update({"rank": rank, "started": started, "ended": ended, "summary": summary})
        if extra:
            entry["extra"] = {name: [list(row) for row in rows] for name, rows in extra.items()}
        if not self.buffer:
            self.group_started = self.clock()
        self.buffer.append(json.dumps(entry, separators=(",", ":")) + "\n")
        _apply(self.state, entry)
        if len(self.buffer) >= self.group_entries:
            self.commit()

    def tick(self, now: float | None = None) -> None:
        """Commit a group that is due, take a snapshot that is due; between messages, never inside one."""
        now = self.clock() if now is None else now
        if now >= self.next_snapshot:
            self.snapshot()
        elif self.buffer and now - self.group_started >= self.group_seconds:
            self.commit()

    def commit(self) -> None:
        """Write and fsync the lines appended since the last commit."""
        if not self.buffer:
            return
        try:
            self.handle.write("".join(self.buffer))
            self.handle.flush()
            self.sync(self.handle.fileno())
        except OSError as exc:
            raise OutputError(f"writing the ledger {self.ledger_path} failed ({exc})") from None
        self.buffer.clear()
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
        }
        if state.stopped:
            body["stopped"] = state.stopped
        _fsync_write(self.checkpoint_path, json.dumps(body, separators=(",", ":")))
        # Lines up to seq are in the checkpoint, those not yet committed too
        self.buffer.clear()
        if hasattr(self, "handle") and not self.handle.closed:
            self.handle.truncate(0)
            self.handle.seek(0)
        else:
            self.ledger_path.write_text("")
        self.next_snapshot = self.clock() + self.interval

    def close(self) -> None:
        self.snapshot()
        self.handle.close()

    def stop(self, reason: str) -> None:
        """Record why the run is ending early, for `hpcthreads status`; never raises."""
        self.state.stopped = reason
        try:
            self.snapshot()
            self.handle.close()
        except (OSError, ValueError) as exc:
            log.warning("could not record the stop in %s: %s", self.checkpoint_path, exc)
