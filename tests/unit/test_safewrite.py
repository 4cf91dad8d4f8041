"""Files written in shared directories never go through a symbolic link planted at their names."""

from __future__ import annotations

import os
import socket
import stat
import threading

import pytest

from hpcthreads.campaign.holders import HolderFile
from hpcthreads.campaign.lease import server_now
from hpcthreads.campaign.status import METRICS_FILE, STATES, write_metrics
from hpcthreads.campaign.store import create_campaign, publish
from hpcthreads.config import make_jobs
from hpcthreads.errors import OutputError
from hpcthreads.io import safewrite
from hpcthreads.runtime import ledger

SECRET = b"the user's own file\n"


@pytest.fixture
def victim(tmp_path):
    """A file of the user's that a link planted by someone else points at."""
    path = tmp_path / "elsewhere" / "precious"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def plant(link, target) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def test_replacing_refuses_a_link_at_the_final_name(tmp_path, victim):
    plant(tmp_path / "out.csv", victim)
    with pytest.raises(OutputError, match="is a symbolic link; hpcthreads never writes through one"):
        safewrite.write_replacing(tmp_path / "out.csv", "new", "exported table")
    assert victim.read_bytes() == SECRET and os.listdir(tmp_path) == ["elsewhere", "out.csv"]


def test_temporary_names_are_unpredictable_and_follow_the_umask(tmp_path):
    names = set()
    for _ in range(20):
        fd, path = safewrite.temporary_beside(tmp_path / "f.json")
        os.close(fd)
        names.add(path.name)
        assert str(os.getpid()) not in path.name and path.name.startswith(".f.json.")
        assert stat.S_IMODE(path.stat().st_mode) == safewrite.FILE_MODE
    assert len(names) == 20


def test_an_error_while_writing_leaves_the_old_content_and_no_temporary_file(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError), safewrite.replacing(path) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["table.csv"]


def test_create_new_never_follows_a_dangling_link(tmp_path):
    target = tmp_path / "made-elsewhere"
    plant(tmp_path / "out.h5.partial", target)
    with pytest.raises(OutputError, match="partial file .* is a symbolic link"):
        safewrite.create_new(tmp_path / "out.h5.partial", "partial file")
    assert not target.exists()


def test_publishing_a_campaign_record_ignores_links_at_names_from_host_and_pid(tmp_path, victim):
    # What earlier versions wrote first: a name anyone can derive from holders/ (host and pid)
    path = tmp_path / "done" / "u0001"
    plant(path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp"), victim)
    assert publish(path, '{"part": "x"}')
    assert path.read_text() == '{"part": "x"}' and victim.read_bytes() == SECRET


def test_the_clock_probe_ignores_a_link_at_its_old_name(tmp_path, victim):
    plant(tmp_path / f".now.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}", victim)
    assert server_now(tmp_path) > 0
    assert victim.read_bytes() == SECRET
    assert [n for n in os.listdir(tmp_path) if not n.startswith(".now.") and n != "elsewhere"] == []


@pytest.fixture
def campaign(tmp_path):
    jobs = make_jobs({"jobs": [{"name": "a", "type": "collatz", "parameters": {"count": 100}}]})
    return create_campaign(tmp_path / "camp", jobs, "", units_per_job=2)


def test_a_holder_record_is_replaced_not_written_through_a_link(campaign, victim):
    holder = HolderFile(campaign, {"holder": "node1-123-abcdef", "host": "node1", "pid": 123})
    plant(holder.path.with_name(f".{holder.path.name}.tmp"), victim)
    holder.write(units_done=1)
    assert victim.read_bytes() == SECRET and '"units_done": 1' in holder.path.read_text()
    os.unlink(holder.path)
    plant(holder.path, victim)
    with pytest.raises(OutputError, match="holder record .* is a symbolic link"):
        holder.write(units_done=2)
    assert victim.read_bytes() == SECRET


def test_campaign_metrics_refuse_a_link_and_ignore_one_at_the_old_temporary_name(tmp_path, victim):
    status = {
        "campaign": "c",
        "units": {**dict.fromkeys(STATES, 0), "total": 0},
        "jobs": [],
        "rate_items_per_second": 0.0,
        "holders": [],
        "complete": True,
    }
    folder = tmp_path / "metrics"
    plant(folder / f".{METRICS_FILE}.{os.getpid()}.tmp", victim)
    assert write_metrics(status, folder).read_text().startswith("# HELP")
    assert victim.read_bytes() == SECRET
    os.unlink(folder / METRICS_FILE)
    plant(folder / METRICS_FILE, victim)
    with pytest.raises(OutputError, match="metrics file .* is a symbolic link"):
        write_metrics(status, folder)
    assert victim.read_bytes() == SECRET


def test_the_ledger_and_its_checkpoint_never_follow_links(tmp_path, victim):
    out = tmp_path / "run.h5"
    ledger_path, checkpoint = ledger.paths(out)
    plant(checkpoint.with_name(checkpoint.name + ".tmp"), victim)
    journal = ledger.LedgerWriter(out, ledger.LedgerState('{"jobs": []}'))
    journal.append("j", [(0, 10)], 1.0)
    journal.close()
    assert victim.read_bytes() == SECRET and ledger.load(out, None).done["j"].covered() == 10
    os.unlink(ledger_path)
    plant(ledger_path, victim)
    with pytest.raises(OutputError, match="ledger .* is a symbolic link"):
        ledger.LedgerWriter(out, ledger.load(out, None))
    assert victim.read_bytes() == SECRET
