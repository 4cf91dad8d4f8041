"""A full disk at every phase of a run, and under `merge`, `export` and `campaign create`.

Each test gets a small tmpfs of its own (root and `mount` needed, as in CI).
The disk fills for real: a fault rule (HPCTHREADS_TEST_FAULTS `fill:at=PHASE`)
makes rank 0 write a file there until the disk has no byte left, at the moment
the run reaches PHASE. Afterwards: one line naming the path, no traceback, no
file a later run trips on, `status` telling the truth, and once the filler is
removed the same command (with --resume) gives the exact results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cli
from tests.reference import delay

FILL = "hpcthreads-test-fill"
START, COUNT = 1, 400_000
RUN = ("run", "collatz", "--start", str(START), "--count", str(COUNT), "--store", "per-number")
# The files a stopped run keeps, for --resume; anything else left behind is a defect
STOPPED = {"o.h5.partial", "o.h5.ledger", "o.h5.checkpoint"}


@pytest.fixture
def disk(tmp_path):
    """A 48 MiB tmpfs mounted at TMP/disk for this test."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a tmpfs needs root and mount")
    mount = tmp_path / "disk"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)]
    done = subprocess.run(command, capture_output=True)
    if done.returncode != 0:
        if os.environ.get("HPCTHREADS_REQUIRE_TMPFS") == "1":
            pytest.fail(f"cannot mount a tmpfs: {done.stderr.decode()}")
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> None:
    """Fill the disk of FOLDER to the last byte."""
    fd = os.open(folder / FILL, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while os.write(fd, bytes(size)):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    assert shutil.disk_usage(folder).free < 4096


def one_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The one error line of a refused command, checked for WORDS; no traceback anywhere."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcthreads: error:")]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def left(folder: Path) -> set[str]:
    return {name for name in os.listdir(folder) if name != FILL}


def check_delays(path: Path) -> None:
    """The per-number delays and the maximum delay against the brute-force reference (sampled)."""
    import hpcthreads

    with hpcthreads.open(path) as results:
        job = results["collatz"]
        delays = job.array("delay")
        assert len(delays) == COUNT
        for i in list(range(0, COUNT, 9973)) + [COUNT - 1]:
            assert delays[i] == delay(START + i), i
        top = int(delays.argmax())
        assert job.summary["max_delay"] == [START + top, delay(START + top)]


@pytest.mark.parametrize(
    "rule",
    ["layout", "ledger", "chunk,after=1", "finish", "results", "rename"],
)
def test_run_meets_a_full_disk(disk, rule):
    out = disk / "o.h5"
    faults = {"HPCTHREADS_TEST_FAULTS": f"fill:at={rule}"}
    proc = cli(*RUN, "--batch-size", "50000", "-o", str(out), env=faults)
    assert (disk / FILL).exists(), "the fault never fired"
    status = cli("status", str(out))
    if proc.returncode == 0:
        # The reserve kept room enough to finish
        assert left(disk) == {"o.h5"}
    else:
        assert proc.returncode == 2, proc.stderr
        line = one_error(proc, "free", str(disk))
        remaining = left(disk)
        assert remaining in (set(), STOPPED), remaining
        if remaining:
            assert "--resume" in line
            assert status.returncode == 3 and "stopped" in status.stdout, status.stdout + status.stderr
            assert "all work done" not in status.stdout
        else:
            assert "nothing was saved" in line
            assert status.returncode == 2 and "no run" in status.stderr
    (disk / FILL).unlink()
    again = cli(*RUN, "--batch-size", "50000", "-o", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    assert left(disk) == {"o.h5"}
    check_delays(out)
    assert cli("check", str(out)).returncode == 0


def test_full_disk_refused_before_the_layout(disk):
    fill(disk)
    out = disk / "o.h5"
    proc = cli(*RUN, "-o", str(out))
    one_error(proc, "no space left", "o.h5")
    assert left(disk) == set()
    # Room for the lock, not for the data
    os.truncate(disk / FILL, os.path.getsize(disk / FILL) - (64 << 10))
    proc = cli(*RUN, "-o", str(out))
    one_error(proc, "needs", "free", str(out))
    assert left(disk) == set()


@pytest.fixture
def parts(disk):
    """Two halves of the RUN range on the tmpfs, and the whole of it, complete."""
    half = COUNT // 2
    made = []
    for i in range(2):
        path = disk / f"part{i}.h5"
        where = ("--start", str(START + i * half), "--count", str(half))
        cli("run", "collatz", *where, "--store", "per-number", "-o", str(path), check=True)
        made.append(path)
    return made


def test_merge_meets_a_full_disk(disk, parts):
    out = disk / "merged.h5"
    before = left(disk)
    fill(disk)
    proc = cli("merge", str(out), *map(str, parts))
    one_error(proc, "no space left", "merged.h5")
    assert left(disk) == before, "a file was left behind"
    # Room for the lock, not for the data
    os.truncate(disk / FILL, os.path.getsize(disk / FILL) - (64 << 10))
    proc = cli("merge", str(out), *map(str, parts))
    assert proc.returncode == 2
    one_error(proc, "needs", str(out))
    assert left(disk) == before, "a temporary file was left behind"
    (disk / FILL).unlink()
    cli("merge", str(out), *map(str, parts), check=True)
    check_delays(out)


def test_export_meets_a_full_disk(disk, parts):
    folder = disk / "tables"
    before = left(disk)
    # Room for a few tables' first blocks, not for all of them
    fill(disk)
    os.truncate(disk / FILL, os.path.getsize(disk / FILL) - (256 << 10))
    proc = cli("export", str(parts[0]), "--csv", str(folder))
    assert proc.returncode == 2, proc.stderr
    one_error(proc, "no space left", "nothing was exported")
    assert left(disk) - before <= {"tables"}
    assert not folder.exists() or os.listdir(folder) == [], os.listdir(folder)
    (disk / FILL).unlink()
    cli("export", str(parts[0]), "--csv", str(folder), check=True)
    rows = (folder / "collatz-numbers.csv").read_text().splitlines()
    assert len(rows) == COUNT // 2 + 1


def test_campaign_create_on_a_full_disk(disk, tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n  - {name: c, type: collatz, parameters: {start: 1, count: 100000}}\n")
    camp = disk / "camp"
    fill(disk)
    proc = cli("campaign", "create", str(camp), str(jobs))
    assert proc.returncode == 2, proc.stderr
    one_error(proc, "no space left", "camp")
    (disk / FILL).unlink()
    cli("campaign", "create", str(camp), str(jobs), check=True)
    assert (camp / "campaign.json").exists()
