"""Telling a full disk from other errors, the reserve, and files staged to appear together."""

from __future__ import annotations

import errno
import json
import os

import pytest

from hpcthreads.errors import OutputError
from hpcthreads.io.digest import with_check
from hpcthreads.io.safewrite import staged
from hpcthreads.io.space import Reserve, full_error, is_disk_full, size_text
from hpcthreads.runtime import ledger


def test_full_disk_errors_are_told_apart():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    # HDF5's errors reach Python as RuntimeError or OSError with the errno in their text
    assert is_disk_full(
        RuntimeError("Can't write data (file write failed: ..., errno = 28, error message = ...)")
    )
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("errno = 2, error message = 'No such file or directory'"))


def test_the_full_disk_line_names_the_path_and_what_is_needed(tmp_path):
    error = full_error(tmp_path / "o.h5.checkpoint", 3 << 20).then("run again")
    text = str(error)
    assert isinstance(error, OutputError) and "\n" not in text
    assert str(tmp_path / "o.h5.checkpoint") in text and "3.0 MiB" in text and text.endswith("run again")
    assert size_text(512) == "512 bytes" and size_text(1536) == "1.5 KiB"


def test_the_reserve_holds_real_blocks_and_goes(tmp_path):
    out = tmp_path / "o.h5"
    reserve = Reserve(out, 256 << 10)
    reserve.take()
    path = tmp_path / "o.h5.reserve"
    assert path.stat().st_size == 256 << 10 and path.stat().st_blocks * 512 >= 256 << 10
    # A reserve a killed run left is replaced, not refused
    again = Reserve(out, 128 << 10)
    again.take()
    assert path.stat().st_size == 128 << 10
    assert again.release() and not path.exists() and not again.release()


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    (tmp_path / "a.csv").write_text("old a")
    with pytest.raises(RuntimeError), staged() as stage:
        for name in ("a.csv", "b.csv"):
            with stage.replacing(tmp_path / name) as handle:
                handle.write(b"new")
        raise RuntimeError("interrupted before the end")
    assert sorted(os.listdir(tmp_path)) == ["a.csv"] and (tmp_path / "a.csv").read_text() == "old a"
    with staged() as stage:
        for name in ("a.csv", "b.csv"):
            with stage.replacing(tmp_path / name) as handle:
                handle.write(b"new")
        assert sorted(n for n in os.listdir(tmp_path) if not n.startswith(".")) == ["a.csv"]
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]
    assert (tmp_path / "b.csv").read_text() == "new"


def test_a_ledger_records_work_only_with_a_finished_chunk(tmp_path):
    out = tmp_path / "o.h5"
    ledger_path, checkpoint = ledger.paths(out)
    assert not ledger.records_work(out)
    checkpoint.write_text(with_check({"config": "{}", "seq": 0, "done": {"a": []}, "summaries": {}}))
    assert not ledger.records_work(out)
    checkpoint.write_text(with_check({"config": "{}", "seq": 1, "done": {"a": [[0, 5]]}, "summaries": {}}))
    assert ledger.records_work(out)
    checkpoint.write_text(with_check({"config": "{}", "seq": 0, "done": {}, "summaries": {}}))
    ledger_path.write_text(json.dumps({"seq": 1}) + "\n")
    assert ledger.records_work(out)
    # What cannot be read is kept: it may hold work
    ledger_path.write_text("")
    checkpoint.write_text("{torn")
    assert ledger.records_work(out)
