"""Operations and analysis: progress, Prometheus metrics, report figures, export, the Python API."""

from __future__ import annotations

import csv
import io
import re
import shutil
import socket
import struct
import subprocess

import numpy as np
import pytest
import reference as ref
from helpers import cli, inspect_json, mpirun

import hpcthreads
from hpcthreads.runtime.devices import count_physical
from hpcthreads.runtime.monitor import Progress, Snapshot, metrics_path

JOBS = """
jobs:
  - {name: numbers, type: collatz, parameters: {start: 1, count: 30000, batch_size: 4000, store: per-number}}
  - {name: high, type: collatz, parameters: {start: '2**64 - 100', count: 200, store: per-number}}
  - {name: check, type: verify, parameters: {start: 1000, count: 5000}}
  - {name: tree, type: thread, parameters: {thread_count: 400, max_depth: 120, batch_size: 50}}
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ops")
    (folder / "jobs.yaml").write_text(JOBS)
    out = folder / "out.h5"
    proc = mpirun(
        3, "run", str(folder / "jobs.yaml"), "-o", str(out), "--metrics-dir", str(folder / "metrics")
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_batch_logs_get_periodic_progress_lines(tmp_path):
    # At most 1e6 items/s: 3 s or more however fast the machine
    slow = {"HPCTHREADS_TEST_FAULTS": "slow:rate=1e6"}
    proc = cli(
        "run",
        "collatz",
        "--start",
        "2**64",
        "--count",
        "3e6",
        "-o",
        str(tmp_path / "p.h5"),
        "--progress-interval",
        "0.2",
        "--batch-size",
        "1e5",
        env=slow,
        check=True,
    )
    lines = [line for line in proc.stderr.splitlines() if " progress " in line]
    assert len(lines) >= 2 and "items/s" in lines[-1] and "ETA" in lines[-1]
    assert "100.0% (3,000,000/3,000,000)" in lines[-1]
    quiet = cli(
        "run",
        "collatz",
        "--count",
        "1e6",
        "-o",
        str(tmp_path / "q.h5"),
        "--progress-interval",
        "0.1",
        "--quiet",
        check=True,
    )
    assert " progress " not in quiet.stderr


def test_a_terminal_gets_a_redrawn_bar_with_rate_and_eta():
    stream = io.StringIO()
    progress = Progress(stream, tty=True)
    snap = Snapshot(done={"a": 0, "b": 0}, total={"a": 100, "b": 300})
    progress.update(snap, now=0.0)
    snap.done = {"a": 100, "b": 100}
    progress.update(snap, now=2.0)
    text = stream.getvalue()
    assert "[" in text and "50.0% (200/400)" in text and "100 items/s" in text and "ETA 0:00:02" in text
    assert text.count("\x1b[3F") == 1  # the second drawing moves back over the first (3 lines)


def test_metrics_file_is_valid_prometheus_text_with_the_runs_values(results):
    [path] = (results.parent / "metrics").glob("hpcthreads-*.prom")
    assert path == metrics_path(results.parent / "metrics", results)
    text = path.read_text()
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    # Every series names its run (the output) and the host of rank 0
    run = f'run="{results}",host="{socket.gethostname()}"'
    values = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            assert f"{{{run}" in name, name
            values[name.replace(run, "").replace("{,", "{").replace("{}", "")] = float(value)
    assert (
        values['hpcthreads_items_done{hpc_job="numbers"}']
        == values['hpcthreads_items{hpc_job="numbers"}']
        == 30000
    )
    assert values['hpcthreads_items_done{hpc_job="tree"}'] == 400
    assert values['hpcthreads_run_state{state="complete"}'] == 1 and values["hpcthreads_failures_total"] == 0
    assert 0 < values['hpcthreads_rank_busy_fraction{rank="1"}'] <= 1
    # Resident memory of every rank, the coordinator's too; no GPU figures where no rank has a GPU
    assert all(10e6 < values[f'hpcthreads_rank_memory_rss_bytes{{rank="{r}"}}'] < 64e9 for r in range(3))
    if count_physical() == 0:
        assert "hpcthreads_rank_gpu" not in text
    assert not list(path.parent.glob(".*tmp"))  # written atomically: no temporary left


def test_every_ranks_memory_reaches_the_metrics_through_sub_coordinators(tmp_path):
    # Two groups: ranks 2 and 4 report to sub-coordinators 1 and 3, which pass their samples up
    proc = mpirun(
        5, "run", "collatz", "--count", "2e6", "--batch-size", "1e5", "--groups", "2", "--quiet",
        "-o", str(tmp_path / "g.h5"), "--metrics-dir", str(tmp_path / "m"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "sub-coordinator" in proc.stderr
    [path] = (tmp_path / "m").glob("hpcthreads-*.prom")
    rows = re.findall(r'hpcthreads_rank_memory_rss_bytes\{[^}]*rank="(\d+)"\} (\S+)', path.read_text())
    assert sorted(int(rank) for rank, _ in rows) == [0, 1, 2, 3, 4]
    assert all(10e6 < float(value) < 64e9 for _, value in rows)


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_writes_sensible_pngs_and_a_summary(results, tmp_path):
    proc = cli("report", str(results), "-o", str(tmp_path / "fig"), "--html", check=True)
    assert "max delay  307 at n = 26,623" in proc.stdout and "rank 1" in proc.stdout
    names = {p.name for p in (tmp_path / "fig").glob("*.png")}
    assert {
        "numbers-histogram.png",
        "numbers-records.png",
        "tree-tree.png",
        "timeline.png",
        "throughput.png",
    } <= names
    for name in names:
        width, height = png_size(tmp_path / "fig" / name)
        assert 400 <= width <= 2000 and 300 <= height <= 2000
        assert (tmp_path / "fig" / name).stat().st_size > 10_000
    page = (tmp_path / "fig" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(names)


def test_csv_export_matches_the_file(results, tmp_path):
    cli("export", str(results), "--csv", str(tmp_path / "csv"), check=True)
    with open(tmp_path / "csv" / "numbers-numbers.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30000
    assert [int(rows[26][k]) for k in ("n", "delay", "glide", "peak")] == [27, 111, 96, 9232]
    with open(tmp_path / "csv" / "high-numbers.csv") as handle:
        high = list(csv.DictReader(handle))
    n = int(high[150]["n"])
    assert n == 2**64 + 50 and int(high[150]["peak"]) == ref.peak(n)
    with open(tmp_path / "csv" / "numbers-records-path.csv") as handle:
        records = [[int(a), int(b)] for a, b in list(csv.reader(handle))[1:]]
    assert records == inspect_json(results)["jobs"]["numbers"]["path_records"]
    with open(tmp_path / "csv" / "tree-threads.csv") as handle:
        threads = list(csv.DictReader(handle))
    assert [int(v) for v in threads[26]["path"].split()] == ref.thread_path(27, 120)


def test_parquet_export(results, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    cli("export", str(results), "--parquet", str(tmp_path / "pq"), "--job", "numbers", check=True)
    table = pq.read_table(tmp_path / "pq" / "numbers-numbers.parquet")
    assert table.num_rows == 30000 and table.column("delay").to_pylist()[26] == 111


def test_export_needs_exactly_one_format(results, tmp_path):
    proc = cli("export", str(results))
    assert proc.returncode == 2 and "exactly one of --csv" in proc.stderr


def test_python_api_gives_exact_arrays(results):
    with hpcthreads.open(results) as res:
        assert set(res.names) == {"numbers", "high", "check", "tree"}
        job = res["numbers"]
        want = ref.collatz_summary(1, 30000)
        assert job.histogram.tolist() == want["histogram"]
        assert job.records("delay") == want["delay_records"]
        assert job.array("delay")[:100].tolist() == [want["delay"][n] for n in range(1, 101)]
        high = res["high"].array("peak")
        assert high.dtype == object and high[150] == ref.peak(2**64 + 50)
        blocks = list(job.blocks("glide", rows=7000))
        assert [offset for offset, _ in blocks] == [0, 7000, 14000, 21000, 28000]
        assert np.concatenate([b for _, b in blocks]).tolist() == [want["glide"][n] for n in range(1, 30001)]
        assert res["check"].summary["covered"] == 5000
        with pytest.raises(KeyError, match="no job 'nope'"):
            res["nope"]


def test_python_api_to_xarray(results):
    pytest.importorskip("xarray")
    with hpcthreads.open(results) as res:
        data = res["numbers"].to_xarray()
        assert int(data["delay"].sel(n=27)) == 111
