"""The ledger's record of why a run stopped, and the abort that keeps the reason visible."""

from __future__ import annotations

import io
import sys
import time

from hpcthreads.runtime import ledger, mpiutil
from hpcthreads.tools.status import format_status, run_status


def _keep_newest(_name, _a, b):
    return b


def _write_chunk(journal: ledger.LedgerWriter) -> None:
    journal.append("collatz", 0, 10, 1, 0.0, 1.0, {"items": 10})


def test_a_stop_reason_reaches_status_and_a_resumed_run_clears_it(tmp_path):
    out = tmp_path / "run.h5"
    config = '{"jobs": [{"name": "collatz", "type": "collatz", "parameters": {"count": 100}}]}'
    journal = ledger.LedgerWriter(out, ledger.LedgerState(config), _keep_newest)
    _write_chunk(journal)
    journal.stop("rank 2 on node7 sent nothing for 60 s while holding work")

    state = ledger.load(out, _keep_newest)
    assert state.stopped == "rank 2 on node7 sent nothing for 60 s while holding work"
    assert state.done["collatz"].covered() == 10, "the chunk finished before the stop is kept"
    report = run_status(out)
    assert report["state"] == "stopped: rank 2 on node7 sent nothing for 60 s while holding work"
    assert "10 / 100 (10.0%)" in format_status(report)

    resumed = ledger.LedgerWriter(out, state, _keep_newest)
    assert run_status(out)["state"] == "in progress or stopped"
    resumed.close()
    assert ledger.load(out, _keep_newest).stopped == ""


def test_stop_after_close_still_records_the_reason(tmp_path):
    out = tmp_path / "run.h5"
    journal = ledger.LedgerWriter(out, ledger.LedgerState('{"jobs": []}'), _keep_newest)
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
