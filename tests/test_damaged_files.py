"""Crafted and damaged results files: every command that reads one gives one line and exit 2.

A matrix of damaged files, each made from one real results file, goes through
inspect, status, check, report, export and merge: wrong types, shapes and
sizes, numbers of 5000 digits, external links (to another results file and
to a system file), soft links and their cycles, and datasets that declare
16 GiB in a file of about 110 KB. Those last run as real processes whose
address space is capped far below what they declare.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import cli

from hpcthreads.cli import main

pytestmark = pytest.mark.timeout(300)

JOBS = """
jobs:
  - {name: numbers, type: collatz, parameters: {start: 1000, count: 3000, store: per-number}}
  - {name: wide, type: collatz, parameters: {start: '2**64 - 100', count: 200}}
  - {name: paths, type: thread, parameters: {thread_count: 40, max_depth: 20}}
  - {name: check, type: verify, parameters: {start: 3, count: 2000, max_steps: 50}}
"""
COMMANDS = ("inspect", "status", "check", "report", "export", "merge")
# The address space of a command reading a damaged file: enough for Python, h5py and matplotlib,
# far from the 16 GiB the huge variants declare
ADDRESS_SPACE = 600 << 20
HUGE = 2**31  # int64 values: 16 GiB


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("damaged")
    (folder / "jobs.yaml").write_text(JOBS)
    out = folder / "base.h5"
    cli("run", str(folder / "jobs.yaml"), "-o", str(out), "--quiet", check=True)
    return out


def attr(obj: str, name: str, value: object):
    def change(f: h5py.File, _: Path) -> None:
        f[obj].attrs[name] = value

    return change


def drop_attr(obj: str, name: str):
    def change(f: h5py.File, _: Path) -> None:
        del f[obj].attrs[name]

    return change


def replace(obj: str, make):
    """Put what `make(base)` returns (a link, an array, or a callable that makes it) in place of OBJ."""

    def change(f: h5py.File, base: Path) -> None:
        if obj in f:
            del f[obj]
        value = make(base)
        if callable(value):
            value(f, obj)
        else:
            f[obj] = value

    return change


def dataset(**kwargs):
    return lambda _: lambda f, obj: f.create_dataset(obj, **kwargs)


def config(change):
    def edit(f: h5py.File, _: Path) -> None:
        f.attrs["config"] = change(f.attrs["config"])

    return edit


def wider_count(text: str) -> str:
    data = json.loads(text)
    data["jobs"][0]["parameters"]["count"] += 1
    return json.dumps(data)


def hard_link(obj: str, target: str):
    def change(f: h5py.File, _: Path) -> None:
        f[obj] = f[target]

    return change


DIGITS_5000 = "7" * 5000
VARIANTS = {
    # Links
    "external link to a system file": replace(
        "jobs/numbers/records/path", lambda _: h5py.ExternalLink("/etc/passwd", "/")
    ),
    "external link to another results file": replace(
        "jobs", lambda base: h5py.ExternalLink(str(base), "/jobs")
    ),
    "external link to a table of another file": replace(
        "jobs/numbers/delay_histogram",
        lambda base: h5py.ExternalLink(str(base), "/jobs/numbers/delay_histogram"),
    ),
    "soft link to itself": replace(
        "jobs/numbers/records/delay", lambda _: h5py.SoftLink("/jobs/numbers/records/delay")
    ),
    "soft link cycle of two": replace("jobs/paths", lambda _: lambda f, obj: _soft_pair(f)),
    "soft link where a dataset belongs": replace(
        "jobs/check/unresolved", lambda _: h5py.SoftLink("/jobs/check/records/glide")
    ),
    "hard link cycle": hard_link("jobs/numbers/records/again", "jobs/numbers/records"),
    "dataset stored in /etc/passwd": replace(
        "jobs/numbers/delay_histogram",
        dataset(shape=(238,), dtype="int64", external=[("/etc/passwd", 0, 1904)]),
    ),
    # Declared sizes the file does not hold
    "16 GiB histogram": replace("jobs/numbers/delay_histogram", dataset(shape=(HUGE,), dtype="int64")),
    "16 GiB compressed unresolved list": replace(
        "jobs/check/unresolved", dataset(shape=(HUGE,), dtype="int64", chunks=(1 << 20,), compression="gzip")
    ),
    "16 GiB column of the chunk timeline": replace(
        "run/chunks/started", dataset(shape=(HUGE,), dtype="float64")
    ),
    "16 GiB record table": replace("jobs/wide/records/path", dataset(shape=(HUGE // 2, 2), dtype="int64")),
    # Numbers of 5000 digits
    "5000-digit start": attr("jobs/numbers", "start", DIGITS_5000),
    "5000-digit sum of delays": attr("jobs/wide", "sum_delay", DIGITS_5000),
    "5000-digit maximum": attr("jobs/wide", "max_peak", DIGITS_5000.encode()),
    "5000-digit record": replace(
        "jobs/wide/records/path", lambda _: np.array([[b"1", DIGITS_5000.encode()]])
    ),
    "5000-digit number in the configuration": config(lambda text: text.replace("1000", DIGITS_5000, 1)),
    # Attributes of the wrong type or shape
    "start as a float": attr("jobs/numbers", "start", 1000.5),
    "start as a list": attr("jobs/numbers", "start", np.array([1000, 1001])),
    "size as words": attr("jobs/numbers", "size", "three thousand"),
    "negative size": attr("jobs/paths", "size", -40),
    "size of zero": attr("jobs/check", "size", 0),
    "unknown job type": attr("jobs/numbers", "type", "mandelbrot"),
    "job type as a number": attr("jobs/paths", "type", 7),
    "format version as text": attr("/", "format_version", "one"),
    "wall seconds as text": attr("/", "wall_seconds", "fast"),
    "makespan not finite": attr("/", "makespan_seconds", float("nan")),
    "configuration not JSON": config(lambda text: text[:40]),
    "configuration names a job the file lacks": config(lambda text: text.replace('"check"', '"ghost"')),
    "maximum without its n": drop_attr("jobs/numbers", "max_delay_n"),
    "complete job without its count": drop_attr("jobs/paths", "reached_one"),
    # Objects of the wrong kind, type, shape or size
    "job that is a dataset": replace("jobs/paths", lambda _: np.zeros(3)),
    "records that are a dataset": replace("jobs/numbers/records", lambda _: np.zeros((3, 2), np.int64)),
    "per-item data one row short": replace("jobs/numbers/delay", lambda _: np.zeros(2999, np.uint32)),
    "per-item data of floats": replace("jobs/numbers/peak", lambda _: np.zeros(3000, np.float64)),
    "thread paths of no width": replace("jobs/paths/paths", lambda _: np.zeros((40, 0), np.uint64)),
    "thread depths one row short": replace("jobs/paths/depth", lambda _: np.zeros(39, np.uint32)),
    "per-item data missing": replace("jobs/numbers/glide", lambda _: lambda f, obj: None),
    "histogram of two rows": replace("jobs/numbers/delay_histogram", lambda _: np.zeros((2, 119), np.int64)),
    "histogram of text": replace("jobs/numbers/delay_histogram", lambda _: np.array([b"1", b"2"])),
    "record table of three columns": replace(
        "jobs/numbers/records/delay", lambda _: np.zeros((4, 3), np.int64)
    ),
    "record that is not a number": replace("jobs/wide/records/delay", lambda _: np.array([[b"12x4", b"5"]])),
    "unresolved values as floats": replace("jobs/check/unresolved", lambda _: np.zeros(22, np.float64)),
    "complete job without its histogram": replace(
        "jobs/numbers/delay_histogram", lambda _: lambda f, obj: None
    ),
    "unexpected dataset in a job": replace("jobs/numbers/notes", lambda _: np.zeros(3000, np.uint8)),
    "checksum rows beyond the job": replace(
        "run/digests/numbers", lambda _: np.array([[0, 10**9, 1]], np.int64)
    ),
    "chunk timeline columns of different lengths": replace("run/chunks/ended", lambda _: np.zeros(1)),
    "rank devices as numbers": replace("run/ranks/device", lambda _: np.zeros(1, np.int64)),
    "timeline start that is not a number": replace("run/chunks/started", lambda _: np.full(8, np.nan)),
}
HUGE_VARIANTS = [name for name in VARIANTS if "16 GiB" in name]
# Damage to the file's bytes rather than its objects
TRUNCATED = "cut to half its length"


def _soft_pair(f: h5py.File) -> None:
    f["jobs/paths"] = h5py.SoftLink("/jobs/loop")
    f["jobs/loop"] = h5py.SoftLink("/jobs/paths")


def damaged(base: Path, folder: Path, name: str) -> Path:
    path = folder / "damaged.h5"
    shutil.copy(base, path)
    if name == TRUNCATED:
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
        return path
    with h5py.File(path, "r+") as f:
        VARIANTS[name](f, base)
    return path


def arguments(command: str, path: Path, folder: Path) -> list[str]:
    return {
        "report": ["report", str(path), "-o", str(folder / "report")],
        "export": ["export", str(path), "--csv", str(folder / "tables")],
        "merge": ["merge", str(folder / "merged.h5"), str(path)],
    }.get(command, [command, str(path)])


def test_there_are_at_least_thirty_variants():
    assert len(VARIANTS) + 1 >= 30


def test_the_base_file_reads_with_every_command(base, tmp_path):
    for command in COMMANDS:
        proc = CliRunner().invoke(main, arguments(command, base, tmp_path))
        assert proc.exit_code == 0, f"{command}: {proc.output}{proc.exception!r}"


# In this process: a variant that declares 16 GiB runs capped, in a process of its own
@pytest.mark.parametrize("name", [name for name in VARIANTS if name not in HUGE_VARIANTS] + [TRUNCATED])
def test_a_damaged_file_is_one_line_from_every_command(base, tmp_path, name):
    path = damaged(base, tmp_path, name)
    for command in COMMANDS:
        proc = CliRunner().invoke(main, arguments(command, path, tmp_path))
        report = f"{command} on {name!r}: exit {proc.exit_code}, {proc.exception!r}\n{proc.output}"
        assert proc.exit_code == 2 and isinstance(proc.exception, SystemExit), report
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("hpcthreads: error: "), report
        assert str(path) in lines[0], report
    assert not (tmp_path / "merged.h5").exists() and not (tmp_path / "tables").exists()
    assert not (tmp_path / "report").exists() or not any((tmp_path / "report").iterdir())


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.mark.parametrize("name", HUGE_VARIANTS)
def test_a_declared_size_is_never_allocated(base, tmp_path, name):
    path = damaged(base, tmp_path, name)
    for command in COMMANDS:
        proc = subprocess.run(
            [sys.executable, "-m", "hpcthreads", *arguments(command, path, tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=_capped,
        )
        report = f"{command} on {name!r}: exit {proc.returncode}\n{proc.stderr}"
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, report
        assert len(proc.stderr.splitlines()) == 1 and str(path) in proc.stderr, report


def test_the_python_api_refuses_a_damaged_file_in_one_line(base, tmp_path):
    import hpcthreads
    from hpcthreads.errors import OutputError

    path = damaged(base, tmp_path, "external link to another results file")
    with pytest.raises(OutputError, match="is an external link"):
        hpcthreads.open(path)


def test_objects_beside_the_layout_are_walked_once_and_left_alone(base, tmp_path):
    path = tmp_path / "annotated.h5"
    shutil.copy(base, path)
    with h5py.File(path, "r+") as f:
        f.create_group("notes/more")
        f["notes/more/loop"] = f["notes"]
        f["notes/text"] = np.array([b"checked by hand"])
    proc = CliRunner().invoke(main, ["inspect", str(path)])
    assert proc.exit_code == 0, proc.output


def test_merge_refuses_a_job_whose_range_is_not_the_configurations(base, tmp_path):
    path = tmp_path / "wider.h5"
    shutil.copy(base, path)
    with h5py.File(path, "r+") as f:
        f.attrs["config"] = wider_count(f.attrs["config"])
    proc = CliRunner().invoke(main, arguments("merge", path, tmp_path))
    assert proc.exit_code == 2 and isinstance(proc.exception, SystemExit), proc.output
    assert "/jobs/numbers disagrees with the job configuration" in proc.stderr, proc.output
    assert not (tmp_path / "merged.h5").exists()


def test_what_an_external_link_points_to_is_never_opened(base, tmp_path):
    # Opened, a pipe with no writer would block the command for good
    pipe = tmp_path / "pipe.h5"
    os.mkfifo(pipe)
    path = tmp_path / "linked.h5"
    shutil.copy(base, path)
    with h5py.File(path, "r+") as f:
        del f["jobs/numbers/records/path"]
        f["jobs/numbers/records/path"] = h5py.ExternalLink(str(pipe), "/")
    proc = cli("inspect", str(path), timeout=60)
    assert proc.returncode == 2 and "/jobs/numbers/records/path is an external link" in proc.stderr, (
        proc.stderr
    )
