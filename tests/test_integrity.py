"""Checksums: a flipped byte in written data, in a summary or in the ledger is found, named, and never
reused by --resume or merge; under MPI (workers take the digests where they compute) as on one rank."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest
from helpers import cli, mpirun

pytestmark = pytest.mark.timeout(300)

JOBS = """
jobs:
  - {name: numbers, type: collatz, parameters: {start: '2**64 - 30000', count: 60000, batch_size: 7000,
     store: per-number}}
  - {name: tree, type: thread, parameters: {thread_count: 3000, max_depth: 40, batch_size: 300}}
  - {name: check, type: verify, parameters: {start: '2**40', count: 50000}}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("integrity")
    jobs = folder / "jobs.yaml"
    jobs.write_text(JOBS)
    one = folder / "one.h5"
    cli("run", str(jobs), "-o", str(one), check=True)
    three = folder / "three.h5"
    proc = mpirun(4, "run", str(jobs), "-o", str(three), "--groups", "2")
    assert proc.returncode == 0, proc.stderr
    return folder, jobs, one, three


def flip(path, dataset, row, column=None):
    with h5py.File(path, "r+") as f:
        data = f[dataset]
        index = (row,) if column is None else (row, column)
        data[index] = data[index] ^ 1


def test_an_intact_file_checks_out_on_one_rank_and_under_mpi(files):
    _, _, one, three = files
    for path in (one, three):
        proc = cli("check", str(path))
        assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout
    with h5py.File(one) as f, h5py.File(three) as g:
        # The same data, cut into other chunks: each file's digests cover all of it
        assert sum(f["run/digests/numbers"][()][:, 1]) == sum(g["run/digests/numbers"][()][:, 1]) == 60000


@pytest.mark.parametrize(
    "dataset,row,column,where",
    [
        ("jobs/numbers/peak", 31234, None, "data of items"),
        ("jobs/numbers/glide", 59999, None, "data of items"),
        ("jobs/tree/paths", 1234, 17, "data of items"),
        ("jobs/numbers/delay_histogram", 200, None, "its summary"),
        ("jobs/check/records/glide", 0, 1, "its summary"),
    ],
)
def test_a_flipped_bit_is_found_and_named(files, tmp_path, dataset, row, column, where):
    _, _, one, _ = files
    damaged = tmp_path / "damaged.h5"
    shutil.copy(one, damaged)
    flip(damaged, dataset, row, column)
    proc = cli("check", str(damaged))
    assert proc.returncode == 1 and "DAMAGED" in proc.stdout and where in proc.stdout, proc.stdout
    job = dataset.split("/")[1]
    assert f"job '{job}'" in proc.stdout
    if where == "data of items" and job == "numbers":
        start, end = [
            int(v.replace(",", "")) for v in proc.stdout.split("items ")[1].split(" ")[0].split("..")
        ]
        assert start <= 2**64 - 30000 + row <= end


def test_merge_refuses_a_damaged_part(files, tmp_path):
    folder, _, one, _ = files
    damaged = tmp_path / "damaged.h5"
    shutil.copy(one, damaged)
    flip(damaged, "jobs/numbers/delay", 100)
    proc = cli("merge", str(tmp_path / "m.h5"), str(damaged))
    assert proc.returncode == 2 and "is damaged" in proc.stderr and "job 'numbers'" in proc.stderr
    merged = tmp_path / "ok.h5"
    assert cli("merge", str(merged), str(one)).returncode == 0
    assert cli("check", str(merged)).returncode == 0, "the merged file carries its own checksums"


def _stopped(folder, jobs, out):
    # Chunks of about 60 ms, so that the first ones are committed (a group lasts 50 ms) before the kill
    faults = {"HPCTHREADS_TEST_FAULTS": "slow:factor=30;kill:rank=0,after=6"}
    cli(
        "run",
        str(jobs),
        "-o",
        str(out),
        "--checkpoint-interval",
        "0.05",
        "--chunk-seconds",
        "0.002",
        env=faults,
    )
    assert out.with_name(out.name + ".partial").exists()


def test_resume_refuses_to_reuse_finished_data_that_was_changed(files, tmp_path):
    _, jobs, _, _ = files
    out = tmp_path / "stopped.h5"
    _stopped(tmp_path, jobs, out)
    checkpoint = json.loads(out.with_name("stopped.h5.checkpoint").read_text())
    ledger_lines = [json.loads(line) for line in out.with_name("stopped.h5.ledger").read_text().splitlines()]
    rows = checkpoint["digests"].get("numbers", []) + [
        d for line in ledger_lines for d in line.get("digests", [])
    ]
    assert rows, "some per-number chunks were finished before the kill"
    offset, count, _ = rows[0]
    flip(out.with_name("stopped.h5.partial"), "jobs/numbers/delay", offset + count // 2)
    proc = cli("run", str(jobs), "-o", str(out), "--resume")
    assert proc.returncode == 2 and "was changed after it was written" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_refuses_a_ledger_line_changed_after_it_was_written(files, tmp_path):
    _, jobs, _, _ = files
    out = tmp_path / "stopped.h5"
    _stopped(tmp_path, jobs, out)
    ledger = out.with_name("stopped.h5.ledger")
    checkpoint = out.with_name("stopped.h5.checkpoint")
    lines = ledger.read_text().splitlines()
    if lines:
        # One digit of a summary's count
        lines[0] = lines[0].replace('"count":', '"count":1', 1)
        ledger.write_text("\n".join(lines) + "\n")
    else:
        checkpoint.write_text(checkpoint.read_text().replace('"count":', '"count":1', 1))
    proc = cli("run", str(jobs), "-o", str(out), "--resume")
    assert proc.returncode == 2 and "checksum does not match" in proc.stderr, proc.stderr
