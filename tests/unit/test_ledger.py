"""The ledger's record of why a run stopped, and the abort that keeps the reason visible."""

from __future__ import annotations

import io
import json
import sys
import time

from hpcthreads.runtime import ledger, mpiutil
from hpcthreads.tools.status import format_status, run_status


def _keep_newest(_name, _a, b):
    return b


def _write_chunk(journal: ledger.LedgerWriter) -> None:
    journal.append("collatz", [(0, 10)], 1.0)


def test_a_stop_reason_reaches_status_and_a_resumed_run_clears_it(tmp_path):
    out = tmp_path / "run.h5"
    config = '{"jobs": [{"name": "collatz", "type": "collatz", "parameters": {"count": 100}}]}'
    journal = ledger.LedgerWriter(out, ledger.LedgerState(config))
    _write_chunk(journal)
    journal.stop("rank 2 on node7 sent nothing for 60 s while holding work")

    state = ledger.load(out, _keep_newest)
    assert state.stopped == "rank 2 on node7 sent nothing for 60 s while holding work"
    assert state.done["collatz"].covered() == 10, "the chunk finished before the stop is kept"
    report = run_status(out)
    assert report["state"] == "stopped: rank 2 on node7 sent nothing for 60 s while holding work"
    assert "10 / 100 (10.0%)" in format_status(report)

    resumed = ledger.LedgerWriter(out, state)
    assert run_status(out)["state"].startswith("stopped (killed"), "no longer stopped for the old reason"
    resumed.close()
    assert ledger.load(out, _keep_newest).stopped == ""


def test_stop_after_close_still_records_the_reason(tmp_path):
    out = tmp_path / "run.h5"
    journal = ledger.LedgerWriter(out, ledger.LedgerState('{"jobs": []}'))
    journal.close()
    journal.stop("writing the results failed")
    assert ledger.load(out, _keep_newest).stopped == "writing the results failed"


class _RecordingComm:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream
        self.seen_at_abort: str | None = None
        self.abort_time = 0.0

    def Abort(self, code: int) -> None:  # noqa: N802 - mpi4py's name
        self.seen_at_abort = self.stream.getvalue()
        self.code = code
        self.abort_time = time.monotonic()


class _BufferedStream(io.StringIO):
    """A stream whose writes reach `sink` only when flushed, like a pipe's buffer."""

    def __init__(self, sink: io.StringIO) -> None:
        super().__init__()
        self.sink = sink

    def flush(self) -> None:
        self.sink.write(self.getvalue())
        self.seek(0)
        self.truncate()


def test_abort_flushes_and_waits_before_killing_the_world(monkeypatch):
    sink = io.StringIO()
    stream = _BufferedStream(sink)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(mpiutil, "ABORT_GRACE_SECONDS", 0.2)
    comm = _RecordingComm(sink)
    stream.write("the reason for the abort\n")
    before = time.monotonic()
    mpiutil.abort_world(comm, 4)
    assert comm.seen_at_abort == "the reason for the abort\n"
    assert comm.code == 4
    assert comm.abort_time - before >= 0.2


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _group_journal(out, clock, syncs):
    config = '{"jobs": [{"name": "j", "type": "collatz", "parameters": {"count": 1000}}]}'
    return ledger.LedgerWriter(
        out,
        ledger.LedgerState(config),
        interval=60.0,
        summaries=lambda: {"j": {"items": 1}},
        group_seconds=0.02,
        group_entries=4,
        clock=clock,
        sync=lambda fd: syncs.append(fd),
    )


def _lines_on_disk(out) -> int:
    ledger_path, _ = ledger.paths(out)
    return len(ledger_path.read_text().splitlines())


def test_ledger_lines_are_committed_in_groups_by_count_and_by_time(tmp_path):
    out, clock, syncs = tmp_path / "run.h5", _Clock(), []
    journal = _group_journal(out, clock, syncs)
    for i in range(6):
        journal.append("j", [(10 * i, 10)], 1.0)
    # One line and one fsync for the first four chunks; two wait in memory
    assert (len(syncs), _lines_on_disk(out)) == (1, 1)
    assert ledger.load(out, _keep_newest).done["j"].covered() == 40
    journal.tick()
    assert len(syncs) == 1, "a group is not committed before GROUP_SECONDS"
    clock.now += 0.021
    journal.tick()
    assert (len(syncs), _lines_on_disk(out)) == (2, 2)
    state = ledger.load(out, _keep_newest)
    assert state.done["j"].covered() == 60 and state.summaries == {"j": {"items": 1}}


def test_a_kill_loses_at_most_the_uncommitted_group(tmp_path):
    out, clock, syncs = tmp_path / "run.h5", _Clock(), []
    journal = _group_journal(out, clock, syncs)
    for i in range(5):
        journal.append("j", [(10 * i, 10)], 1.0)
    # kill -9 now: what is on disk is what the next run finds; the fifth chunk is computed again
    state = ledger.load(out, _keep_newest)
    assert state.done["j"].spans == [[0, 40]]
    assert ledger.Ranges(state.done["j"].spans).gaps(1000) == [(40, 960)]


def test_a_snapshot_folds_uncommitted_lines_and_takes_the_coordinators_summaries(tmp_path):
    out, clock, syncs = tmp_path / "run.h5", _Clock(), []
    journal = _group_journal(out, clock, syncs)
    journal.append("j", [(0, 10), (50, 5)], 1.0, {"peak_overflow": [(51, 2**130)]})
    clock.now += 61
    journal.tick()
    assert _lines_on_disk(out) == 0
    state = ledger.load(out, _keep_newest)
    assert state.done["j"].spans == [[0, 10], [50, 55]] and state.seq == 0
    assert state.summaries == {"j": {"items": 1}} and state.extra == {"j": {"peak_overflow": [[51, 2**130]]}}


def test_a_ledger_that_records_a_range_twice_is_refused(tmp_path):
    out, clock, syncs = tmp_path / "run.h5", _Clock(), []
    journal = _group_journal(out, clock, syncs)
    journal.append("j", [(0, 10)], 1.0)
    journal.commit()
    journal.append("j", [(20, 10), (5, 3)], 1.0)
    journal.commit()
    try:
        ledger.load(out, _keep_newest)
    except ValueError as exc:
        assert "job 'j'" in str(exc) and "5..7" in str(exc)
    else:
        raise AssertionError("overlapping ledger lines were accepted")


def test_ranges_match_a_set_of_integers():
    import random

    rng = random.Random(7)
    for _ in range(200):
        size = rng.randint(1, 300)
        taken: set[int] = set()
        ranges = ledger.Ranges()
        for _ in range(rng.randint(0, 40)):
            a = rng.randrange(size)
            b = min(size, a + rng.randint(1, 30))
            if taken.isdisjoint(range(a, b)):
                taken.update(range(a, b))
                ranges.add(a, b)
                if rng.random() < 0.3:
                    ranges.normalise()
        assert ranges.covered() == len(taken)
        assert {n for a, b in ranges.spans for n in range(a, b)} == taken
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(ranges.spans, ranges.spans[1:])), "merged"
        gaps = {n for a, c in ranges.gaps(size) for n in range(a, a + c)}
        assert gaps == set(range(size)) - taken


def test_a_ledger_of_one_line_per_chunk_from_an_earlier_version_is_replayed_by_merging(tmp_path):
    out = tmp_path / "old.h5"
    config = '{"jobs": [{"name": "j", "type": "collatz", "parameters": {"count": 100}}]}'
    ledger.LedgerWriter(out, ledger.LedgerState(config), summaries=dict).close()
    ledger_path, _ = ledger.paths(out)
    old = [
        {
            "seq": 1,
            "job": "j",
            "offset": 0,
            "count": 10,
            "rank": 1,
            "started": 0,
            "ended": 1,
            "summary": {"n": 10},
        },
        {
            "seq": 2,
            "job": "j",
            "offset": 10,
            "count": 5,
            "rank": 2,
            "started": 0,
            "ended": 2,
            "summary": {"n": 5},
        },
    ]
    ledger_path.write_text("".join(json.dumps(line) + "\n" for line in old))
    state = ledger.load(out, lambda _job, a, b: {"n": a["n"] + b["n"]})
    assert state.done["j"].spans == [[0, 15]] and state.summaries["j"] == {"n": 15}
