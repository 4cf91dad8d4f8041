"""A symbolic link planted at a name hpcthreads writes (a shared scratch directory) is never written through.

Each case plants a link to a file of the user's own (the victim) and runs the
command as a user would: the victim is unchanged, and the command either
refuses with one line or writes its own file in place of the link.
"""

from __future__ import annotations

import os

import pytest
from helpers import cli

pytestmark = pytest.mark.timeout(120)

SECRET = b"the user's own file\n"
RUN = ["run", "collatz", "--count", "1000", "--quiet"]


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "elsewhere" / "precious"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "r.h5"
    cli(*RUN, "-o", str(out), check=True)
    return out


def refused(proc, *needles: str) -> None:
    report = f"exit {proc.returncode}\n{proc.stderr}"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, report
    assert proc.stderr.count("\n") == 1, report
    for needle in needles:
        assert needle in proc.stderr, report


@pytest.mark.parametrize(
    "suffix,extra,message",
    [
        (".lock", [], "lock"),
        (".lock", ["--force"], "lock"),
        (".ledger", [], "ledger"),
        (".ledger", ["--resume"], "ledger"),
        (".checkpoint", ["--force"], "checkpoint"),
        ("", ["--force"], "is a symbolic link; hpcthreads only replaces regular files"),
        (".partial", ["--resume"], "partial file"),
        (".partial", ["--force"], "partial file"),
    ],
)
def test_a_run_refuses_a_link_at_its_files(tmp_path, victim, suffix, extra, message):
    out = tmp_path / "out.h5"
    os.symlink(victim, f"{out}{suffix}")
    refused(cli(*RUN, "-o", str(out), *extra), message, "symbolic link")
    assert victim.read_bytes() == SECRET


@pytest.mark.parametrize("suffix", [".lock", ".ledger", ".checkpoint", ".partial"])
def test_a_dangling_link_creates_nothing_where_it_points(tmp_path, suffix):
    out, target = tmp_path / "out.h5", tmp_path / "elsewhere-new"
    os.symlink(target, f"{out}{suffix}")
    refused(cli(*RUN, "-o", str(out)), "symbolic link")
    assert not target.exists() and not os.path.lexists(out)


def test_a_link_at_the_checkpoints_old_temporary_name_is_left_alone(tmp_path, victim):
    out = tmp_path / "out.h5"
    os.symlink(victim, tmp_path / "out.h5.checkpoint.tmp")
    cli(*RUN, "-o", str(out), check=True)
    assert victim.read_bytes() == SECRET and out.is_file() and not out.is_symlink()


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_merge_refuses_a_link_at_a_run_file_of_its_output(tmp_path, victim, results, force):
    # OUTPUT.partial is a run's name, and earlier versions of merge wrote through it
    out = tmp_path / "merged.h5"
    os.symlink(victim, tmp_path / "merged.h5.partial")
    refused(cli("merge", str(out), str(results), *force), "partial file", "symbolic link")
    assert victim.read_bytes() == SECRET and not out.exists()
    assert os.path.islink(tmp_path / "merged.h5.partial"), "someone else's file is not touched either"


def test_merge_leaves_no_temporary_file_behind(tmp_path, results):
    out = tmp_path / "merged.h5"
    cli("merge", str(out), str(results), check=True)
    assert os.listdir(tmp_path) == ["merged.h5"] and out.is_file()


def test_merge_refuses_a_link_as_its_output(tmp_path, victim, results):
    os.symlink(victim, tmp_path / "merged.h5")
    refused(cli("merge", str(tmp_path / "merged.h5"), str(results), "--force"), "symbolic link")
    assert victim.read_bytes() == SECRET


@pytest.mark.parametrize("fmt", ["--csv", "--parquet"])
def test_export_refuses_a_link_at_a_table_even_with_force(tmp_path, victim, results, fmt):
    folder = tmp_path / "tables"
    folder.mkdir()
    ext = fmt[2:]
    os.symlink(victim, folder / f"collatz-histogram.{ext}")
    refused(cli("export", str(results), fmt, str(folder), "--force"), "symbolic link")
    assert victim.read_bytes() == SECRET and os.listdir(folder) == [f"collatz-histogram.{ext}"]
    os.unlink(folder / f"collatz-histogram.{ext}")
    cli("export", str(results), fmt, str(folder), check=True)
    assert not [p for p in folder.iterdir() if p.is_symlink() or p.name.startswith(".")]


def test_report_refuses_a_link_at_a_figure_even_with_force(tmp_path, victim, results):
    folder = tmp_path / "fig"
    folder.mkdir()
    os.symlink(victim, folder / "timeline.png")
    refused(cli("report", str(results), "-o", str(folder), "--force"), "symbolic link")
    assert victim.read_bytes() == SECRET and os.listdir(folder) == ["timeline.png"]


def test_a_log_file_is_never_written_through_a_link(tmp_path, victim):
    log = tmp_path / "run.log"
    os.symlink(victim, log)
    refused(cli(*RUN, "-o", str(tmp_path / "out.h5"), "--log-file", str(log)), "log file", "symbolic link")
    assert victim.read_bytes() == SECRET
    # A regular log file is appended to, as before
    log.unlink()
    log.write_text("earlier line\n")
    cli(*RUN, "-o", str(tmp_path / "out.h5"), "--log-file", str(log), check=True)
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier line" and len(lines) > 1
