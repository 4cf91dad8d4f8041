"""Union fields (verify's unresolved values) in the ledger: a commit writes what is new; loading adds up."""

from __future__ import annotations

import json

from hpcthreads.io.digest import with_check
from hpcthreads.runtime import ledger

CONFIG = '{"jobs": [{"name": "v", "type": "verify", "parameters": {"count": 1000000}}]}'


class Merge:
    """The coordinator's side, as the ledger sees it: a running merge with the union values kept apart."""

    def __init__(self, unresolved: list[int] | None = None) -> None:
        self.count = 0
        self.unresolved = list(unresolved or [])
        self.lean_calls = 0

    def whole(self) -> dict:
        return {"v": {"count": self.count, "glide_records": [], "unresolved": sorted(set(self.unresolved))}}

    def lean(self) -> dict:
        self.lean_calls += 1
        return {"v": {"count": self.count, "glide_records": [], "unresolved": []}}


def journal_for(out, merge: Merge, state: ledger.LedgerState | None = None) -> ledger.LedgerWriter:
    journal = ledger.LedgerWriter(
        out, state or ledger.LedgerState(CONFIG), interval=1e9, summaries=merge.whole
    )
    journal.lean_summaries = merge.lean
    return journal


def finish_chunk(journal: ledger.LedgerWriter, merge: Merge, offset: int, values: list[int]) -> None:
    merge.count += 100
    merge.unresolved += values
    journal.append("v", [(offset, 100)], 1.0, added={"unresolved": values})
    journal.commit()


def ledger_lines(out) -> list[str]:
    return ledger.paths(out)[0].read_text().splitlines()


def test_each_commit_holds_only_the_values_it_adds(tmp_path):
    out, merge = tmp_path / "run.h5", Merge()
    journal = journal_for(out, merge)
    chunks = [list(range(1001 + 100 * i, 1001 + 100 * (i + 1), 2)) for i in range(300)]
    for i, values in enumerate(chunks):
        finish_chunk(journal, merge, 100 * i, values)
    lines = ledger_lines(out)
    assert len(lines) == 300 and merge.lean_calls == 300
    for line, values in zip(lines, chunks):
        entry = json.loads(line)
        assert entry["added"] == {"unresolved": values} and "unresolved" not in entry["total"]
    # Linear: the last commit, with 15,000 values behind it, is as long as the first
    assert max(map(len, lines)) < 1.5 * min(map(len, lines))
    state = ledger.load(out, None)
    assert state.summaries["v"]["unresolved"] == sorted(v for values in chunks for v in values)
    assert state.summaries["v"]["count"] == 30_000


def test_values_since_a_snapshot_are_added_to_its_whole_set(tmp_path):
    out, merge = tmp_path / "run.h5", Merge()
    journal = journal_for(out, merge)
    finish_chunk(journal, merge, 0, [3, 5, 7])
    journal.snapshot()
    assert ledger_lines(out) == []
    finish_chunk(journal, merge, 100, [103, 105])
    # A value may come twice (a sieve's successor followed by its own chunk too): it is one value
    finish_chunk(journal, merge, 200, [203, 5])
    state = ledger.load(out, None)
    assert state.summaries["v"]["unresolved"] == [3, 5, 7, 103, 105, 203]
    assert state.done["v"].spans == [[0, 300]]


def test_a_resumed_run_continues_from_what_was_loaded(tmp_path):
    out, merge = tmp_path / "run.h5", Merge()
    journal = journal_for(out, merge)
    finish_chunk(journal, merge, 0, [11, 13])
    # kill -9: no snapshot; the next run loads, takes a snapshot of what it found, and goes on
    state = ledger.load(out, None)
    resumed_merge = Merge(state.summaries["v"]["unresolved"])
    resumed_merge.count = state.summaries["v"]["count"]
    resumed = journal_for(out, resumed_merge, state)
    finish_chunk(resumed, resumed_merge, 100, [111])
    assert ledger.load(out, None).summaries["v"]["unresolved"] == [11, 13, 111]
    resumed.close()
    assert ledger.load(out, None).summaries["v"]["unresolved"] == [11, 13, 111]


def _old_line(seq: int, offset: int, unresolved: list[int]) -> str:
    """A ledger line as earlier versions wrote it: the whole set in `total`."""
    total = {"count": offset + 100, "glide_records": [], "unresolved": unresolved}
    entry = {"seq": seq, "job": "v", "spans": [[offset, 100]], "ended": 1.0, "total": total}
    return with_check(entry) + "\n"


def test_a_ledger_of_an_earlier_version_is_read_as_before_and_can_be_continued(tmp_path):
    out, merge = tmp_path / "run.h5", Merge()
    journal_for(out, merge).handle.close()
    ledger_path = ledger.paths(out)[0]
    ledger_path.write_text(_old_line(1, 0, [3, 5]) + _old_line(2, 100, [3, 5, 101]))
    state = ledger.load(out, None)
    assert state.summaries["v"]["unresolved"] == [3, 5, 101]
    # This version goes on appending to it (a run stopped by the earlier version, resumed by this one)
    resumed_merge = Merge([3, 5, 101])
    resumed = journal_for(out, resumed_merge, state)
    finish_chunk(resumed, resumed_merge, 200, [201])
    assert ledger.load(out, None).summaries["v"]["unresolved"] == [3, 5, 101, 201]


def test_jobs_without_union_fields_keep_their_whole_total(tmp_path):
    out = tmp_path / "run.h5"
    journal = ledger.LedgerWriter(
        out, ledger.LedgerState(CONFIG), interval=1e9, summaries=lambda: {"c": {"n": 1}}
    )
    journal.append("c", [(0, 10)], 1.0)
    journal.commit()
    entry = json.loads(ledger_lines(out)[0])
    assert entry["total"] == {"n": 1} and "added" not in entry
