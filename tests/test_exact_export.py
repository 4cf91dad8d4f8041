"""Values of 2^128 and more, outside the kernels: the API and export give them exactly, from the overflow
tables, against a Python-integer reference; unfinished jobs are not exported; tables keep the job order."""

from __future__ import annotations

import csv

import h5py
import pytest
import reference as ref
from helpers import cli, inspect_json

import hpcthreads

pytestmark = pytest.mark.timeout(300)

START = 2**128 - 5


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide")
    collatz = folder / "pn.h5"
    cli(
        "run",
        "collatz",
        "--start",
        str(START),
        "--count",
        "5",
        "--store",
        "per-number",
        "-o",
        str(collatz),
        check=True,
    )
    thread = folder / "th.h5"
    cli(
        "run",
        "thread",
        "--start",
        "2**128-3",
        "--count",
        "3",
        "--max-depth",
        "6",
        "-o",
        str(thread),
        check=True,
    )
    return folder, collatz, thread


def test_per_number_peaks_of_2_to_the_128_and_more_are_exact_in_the_api_and_the_csv(wide):
    folder, collatz, _ = wide
    want = [ref.peak(n) for n in range(START, START + 5)]
    assert all(p >= 2**128 for p in want)
    with hpcthreads.open(collatz) as results:
        assert list(results["collatz"].array("peak")) == want
    assert cli("export", str(collatz), "--csv", str(folder / "csv")).returncode == 0
    with open(folder / "csv" / "collatz-numbers.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["peak"]) for r in rows] == want
    assert [int(r["delay"]) for r in rows] == [ref.delay(n) for n in range(START, START + 5)]
    with open(folder / "csv" / "collatz-peak-overflow.csv") as handle:
        assert [(int(r["n"]), int(r["peak"])) for r in csv.DictReader(handle)] == list(
            zip(range(START, START + 5), want)
        )


def test_thread_paths_and_finals_of_2_to_the_128_and_more_are_exact(wide):
    folder, _, thread = wide
    paths = [ref.thread_path(2**128 - 3 + i, 6) for i in range(3)]
    with hpcthreads.open(thread) as results:
        job = results["thread"]
        got = job.array("paths")
        finals = job.array("final")
    for i, path in enumerate(paths):
        assert list(got[i, : len(path)]) == path
        assert finals[i] == path[-1]
    # Thread 2 starts at 2^128 - 1 itself: the stored words equal the placeholder's, the table decides
    assert got[2, 0] == 2**128 - 1
    assert cli("export", str(thread), "--parquet", str(folder / "pq")).returncode == 0
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "pq" / "thread-threads.parquet").to_pydict()
    assert [int(v) for v in table["final"]] == [p[-1] for p in paths]
    assert [[int(v) for v in text.split()] for text in table["path"]] == paths


def test_export_refuses_an_unfinished_job_and_an_existing_file(tmp_path, wide):
    folder, collatz, _ = wide
    stopped = tmp_path / "stopped.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": "kill:rank=0,after=3"}
    args = ["run", "collatz", "--count", "1e7", "--batch-size", "1e5", "--store", "per-number"]
    cli(*args, "-o", str(stopped), "--chunk-seconds", "0.001", env=faults)
    partial = tmp_path / "stopped.h5.partial"
    proc = cli("export", str(partial), "--csv", str(tmp_path / "out"))
    assert proc.returncode == 2 and "not complete" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    target = tmp_path / "again"
    assert cli("export", str(collatz), "--csv", str(target)).returncode == 0
    again = cli("export", str(collatz), "--csv", str(target))
    assert again.returncode == 2 and "--force" in again.stderr
    assert cli("export", str(collatz), "--csv", str(target), "--force").returncode == 0


def test_jobs_keep_the_order_of_the_job_file_and_verify_shows_its_glide_records(tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "jobs:\n"
        "  - {name: low-range, type: collatz, parameters: {start: 1, count: 3000}}\n"
        "  - {name: b-verify, type: verify, parameters: {start: 1, count: 3000}}\n"
        "  - {name: a-paths, type: thread, parameters: {thread_count: 10, max_depth: 5}}\n"
    )
    out = tmp_path / "out.h5"
    cli("run", str(jobs), "-o", str(out), check=True)
    with hpcthreads.open(out) as results:
        assert results.names == ["low-range", "b-verify", "a-paths"]
        with h5py.File(out) as f:
            index = {int(j) for j in f["run/chunks/job"][()]}
        assert index == {0, 1, 2}
    glides = [(n, ref.glide(n)) for n in range(1, 3001)]
    doc = inspect_json(out)["jobs"]["b-verify"]
    assert [tuple(pair) for pair in doc["glide_records"]] == ref.range_records(glides)
    assert "glide records: " in cli("inspect", str(out), check=True).stdout
