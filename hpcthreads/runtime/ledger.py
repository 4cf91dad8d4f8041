"""The checkpoint ledger: which chunks are done, with their partial results, durably.

HDF5 files cannot be appended to safely while a process may be killed at any
moment, so the ledger lives beside the results file, written by rank 0 only:

- `OUT.ledger`: one JSON line per finished chunk (job, range, rank, times and
  the chunk's partial summary), flushed and fsync'd after the chunk's data;
- `OUT.checkpoint`: a snapshot (the merged summaries and done ranges of all
  ledger lines up to `seq`), written to a temporary name, fsync'd and renamed
  every few seconds; the ledger is then emptied.

Loading takes the snapshot and replays the ledger lines after its `seq`; a
torn last line (a kill during the write) is ignored, so its chunk is simply
computed again. Nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcthreads.errors import OutputError

LEDGER_SUFFIX = ".ledger"
CHECKPOINT_SUFFIX = ".checkpoint"

log = logging.getLogger("hpcthreads")


class Ranges:
    """Disjoint half-open integer ranges, kept merged and sorted."""

    def __init__(self, spans: list[list[int]] | None = None) -> None:
        self.spans: list[list[int]] = []
        for a, b in spans or []:
            self.add(a, b)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        merged = []
        for a, b in self.spans:
            if b < start or a > end:
                merged.append([a, b])
            else:
                start, end = min(a, start), max(b, end)
        merged.append([start, end])
        self.spans = sorted(merged)

    def covered(self) -> int:
        return sum(b - a for a, b in self.spans)

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
    """Read the snapshot and replay the ledger; `merge(job, plain_a, plain_b)` merges plain summaries."""
    ledger_path, checkpoint_path = paths(output)
    snapshot = json.loads(checkpoint_path.read_text(encoding="utf-8"))
    state = LedgerState(snapshot["config"], snapshot["seq"], updated=snapshot.get("updated", 0.0))
    state.done = {name: Ranges(spans) for name, spans in snapshot["done"].items()}
    state.summaries = dict(snapshot["summaries"])
    state.extra = dict(snapshot.get("extra", {}))
    state.stopped = snapshot.get("stopped", "")
    if not ledger_path.exists():
        return state
    with open(ledger_path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line: that chunk is computed again
            if entry["seq"] <= state.seq:
                continue
            _apply(state, entry, merge)
    return state


def _apply(state: LedgerState, entry: dict[str, Any], merge: Any) -> None:
    name = entry["job"]
    ranges = state.done.setdefault(name, Ranges())
    start, end = entry["offset"], entry["offset"] + entry["count"]
    if ranges.overlaps(start, end):
        raise ValueError(f"ledger entry {entry['seq']} overlaps finished work of job {name!r}")
    ranges.add(start, end)
    previous = state.summaries.get(name)
    state.summaries[name] = entry["summary"] if previous is None else merge(name, previous, entry["summary"])
    for table, rows in entry.get("extra", {}).items():
        state.extra.setdefault(name, {}).setdefault(table, []).extend(rows)
    state.seq = entry["seq"]
    state.updated = entry.get("ended", state.updated)


class LedgerWriter:
    """Rank 0's side: append finished chunks, take snapshots."""

    def __init__(self, output: Path, state: LedgerState, merge: Any, interval: float = 30.0) -> None:
        self.ledger_path, self.checkpoint_path = paths(output)
        self.state = state
        self.merge = merge
        self.interval = interval
        self.next_snapshot = time.monotonic() + interval
        if not self.checkpoint_path.exists() or state.stopped:
            # A resumed run is no longer stopped
            state.stopped = ""
            self.snapshot()
        self.handle = open(self.ledger_path, "a", encoding="utf-8")

    def append(
        self,
        job: str,
        offset: int,
        count: int,
        rank: int,
        started: float,
        ended: float,
        summary: dict[str, Any],
        extra: dict[str, list] | None = None,
    ) -> None:
        """Record a finished chunk; its data must already be written."""
        entry = {
            "seq": self.state.seq + 1,
            "job": job,
            "offset": offset,
            "count": count,
            "rank": rank,
            "started": started,
            "ended": ended,
            "summary": summary,
        }
        if extra:
            entry["extra"] = {name: [list(row) for row in rows] for name, rows in extra.items()}
        try:
            self.handle.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as exc:
            raise OutputError(f"writing the ledger {self.ledger_path} failed ({exc})") from None
        _apply(self.state, entry, self.merge)
        if time.monotonic() >= self.next_snapshot:
            self.snapshot()

    def snapshot(self) -> None:
        """Fold the ledger into a new checkpoint, then empty the ledger."""
        state = self.state
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
        # Lines up to seq are in the checkpoint; a crash before this truncation is harmless
        if hasattr(self, "handle") and not self.handle.closed:
            self.handle.truncate(0)
            self.handle.seek(0)
        else:
            self.ledger_path.write_text("")
        self.next_snapshot = time.monotonic() + self.interval

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
