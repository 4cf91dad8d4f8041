"""`check` covers the attributes that say where a job's data lies and how to read it, not only the data."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest
from helpers import cli

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meaning")
    jobs = folder / "j.yaml"
    jobs.write_text(
        "jobs:\n"
        "  - {name: numbers, type: collatz, parameters: {start: 1000, count: 5000, store: per-number}}\n"
        "  - {name: paths, type: thread, parameters: {thread_count: 50, max_depth: 20}}\n"
        "  - {name: check, type: verify, parameters: {start: 3, count: 3000, max_steps: 50}}\n"
    )
    out = folder / "r.h5"
    cli("run", str(jobs), "-o", str(out), "--quiet", check=True)
    return out


def changed(original, tmp_path, job, name, value):
    path = tmp_path / "changed.h5"
    shutil.copy(original, path)
    with h5py.File(path, "r+") as f:
        f[f"jobs/{job}"].attrs[name] = value
    return path


def test_an_intact_file_checks_out(files):
    proc = cli("check", str(files))
    assert proc.returncode == 0 and "OK" in proc.stdout and "attributes" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    "job,name,value",
    [
        ("numbers", "start", "1001"),
        ("numbers", "size", "4999"),
        ("numbers", "count", "4999"),
        ("numbers", "high_word", True),
        ("numbers", "parameters", json.dumps({"start": 1001, "count": 5000, "store": "per-number"})),
        ("paths", "start", "2"),
        ("paths", "max_depth", "19"),
        ("check", "start", "5"),
        ("check", "max_steps", "49"),
    ],
)
def test_a_changed_attribute_that_locates_or_interprets_data_is_found(files, tmp_path, job, name, value):
    path = changed(files, tmp_path, job, name, value)
    with h5py.File(files) as f:
        if name not in f[f"jobs/{job}"].attrs:
            pytest.skip(f"job {job} has no attribute {name}")
    proc = cli("check", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"job {job!r}: the attributes that say where its data lies and how to read it" in proc.stdout


def test_merge_refuses_a_part_whose_start_was_changed(files, tmp_path):
    path = changed(files, tmp_path, "numbers", "start", "1001")
    proc = cli("merge", str(tmp_path / "m.h5"), str(path))
    assert proc.returncode == 2 and "is damaged" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.h5").exists()


def test_a_file_from_before_the_attribute_digest_is_noted_not_refused(files, tmp_path):
    path = tmp_path / "older.h5"
    shutil.copy(files, path)
    with h5py.File(path, "r+") as f:
        for job in f["jobs"].values():
            del job.attrs["attrs_digest"]
    proc = cli("check", str(path))
    assert (
        proc.returncode == 0
        and "no checksum of its attributes (written by an earlier version)" in proc.stdout
    )
