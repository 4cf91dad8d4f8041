"""Damaged campaigns: every file of the directory read with its shape checked; signals to multi-rank runs.

Each damaged file gives one line (exit 2) or a documented recovery, never a
traceback: see docs/deploy.md, "Damaged campaigns".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import cli, kill_run
from test_campaign import join, wait_until

from hpcthreads.campaign.holders import identity
from hpcthreads.campaign.lease import MAX_LEASE_SECONDS, LeaseView, Sightings, claim_next
from hpcthreads.campaign.store import FOLDERS, Campaign

JOBS = "jobs:\n  - {name: c, type: collatz, parameters: {count: 40000, batch_size: 10000}}\n"
DAY = 86400.0
# A unit of 10,000 items takes about 2 s at this pace
PACE = {"HPCTHREADS_TEST_FAULTS": "slow:rate=5000"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A campaign of four units, none claimed."""
    folder = tmp_path_factory.mktemp("pristine")
    (folder / "jobs.yaml").write_text(JOBS)
    cli("campaign", "create", str(folder / "camp"), str(folder / "jobs.yaml"), "--units", "4", check=True)
    return folder / "camp"


@pytest.fixture(scope="module")
def finished(pristine, tmp_path_factory) -> Path:
    """The same campaign, every unit done by one run."""
    campaign = tmp_path_factory.mktemp("finished") / "camp"
    shutil.copytree(pristine, campaign, symlinks=True)
    run = cli("run", "--campaign", str(campaign), "--quiet")
    assert run.returncode == 0, run.stderr
    return campaign


def copy(campaign: Path, tmp_path: Path) -> Path:
    target = tmp_path / "camp"
    shutil.copytree(campaign, target, symlinks=True)
    return target


def one_line(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The run's only error line, its exit status CODE; no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcthreads: error: ")]
    assert proc.returncode == code and len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def status(campaign: Path) -> dict:
    proc = cli("campaign", "status", str(campaign), "--json")
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def backdate(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp), follow_symlinks=False)


# Plants: what a careless or hostile user leaves at a file's name


def planted(content: bytes):
    return lambda path: path.write_bytes(content)


def plant_directory(path: Path) -> None:
    path.mkdir()


def plant_fifo(path: Path) -> None:
    os.mkfifo(path)


def plant_link(path: Path) -> None:
    path.symlink_to("/dev/zero")


DAMAGED_RECORDS = {
    "empty": planted(b""),
    "torn": planted(b'{"holder": "h-1-abc", "lease_seconds": 3'),
    "null": planted(b"null"),
    "list": planted(b"[1, 2, 3]"),
    "text": planted(b'"soon"'),
    "not utf-8": planted(b"\xff\xfe\x00{}"),
    "nested a million deep": planted(b"[" * 10**6 + b"]" * 10**6),
    "larger than a record": planted(b" " * (1 << 17) + b"{}"),
    "a directory": plant_directory,
    "a fifo": plant_fifo,
    "a link to a device": plant_link,
}
BAD_TIMEOUTS = {
    "timeout as text": b'{"lease_seconds": "300"}',
    "timeout null": b'{"lease_seconds": null}',
    "timeout a boolean": b'{"lease_seconds": true}',
    "timeout infinite": b'{"lease_seconds": 1e999}',
    "timeout negative": b'{"lease_seconds": -5}',
    "timeout of 5000 digits": b'{"lease_seconds": ' + b"9" * 5000 + b"}",
    "timeout of a year": b'{"lease_seconds": 31536000}',
}
LEASES = {**DAMAGED_RECORDS, **{name: planted(text) for name, text in BAD_TIMEOUTS.items()}}


# Leases


@pytest.mark.parametrize("variant", sorted(LEASES))
def test_an_unreadable_lease_is_held_until_older_than_the_longest_timeout(pristine, tmp_path, variant):
    campaign = copy(pristine, tmp_path)
    lease = campaign / "leases" / "u000000.g0000"
    LEASES[variant](lease)
    # Far past any default timeout, yet held: its holder may have asked for the longest
    backdate(lease, MAX_LEASE_SECONDS - 60)
    running = status(campaign)["running"]
    assert [(r["unit"], r["state"], r["holder"]) for r in running] == [("u000000", "running", None)]
    backdate(lease, MAX_LEASE_SECONDS + 60)
    assert status(campaign)["running"][0]["state"] == "expired"


def test_a_lease_with_fields_of_the_wrong_type_keeps_its_timeout_and_shows_nothing_false(pristine, tmp_path):
    campaign = copy(pristine, tmp_path)
    lease = campaign / "leases" / "u000001.g0000"
    lease.write_text(json.dumps({"host": ["x"], "pid": "1; rm -rf /", "holder": "a\nb", "lease_seconds": 30}))
    backdate(lease, 10)
    report = status(campaign)
    entry = report["running"][0]
    assert (entry["state"], entry["host"], entry["pid"], entry["holder"]) == ("running", None, None, None)
    assert entry["lease_seconds"] == 30
    backdate(lease, 40)
    assert status(campaign)["running"][0]["state"] == "expired"
    text = cli("campaign", "status", str(campaign)).stdout
    assert "rm -rf" not in text and "expired  u000001" in text


def test_a_run_takes_over_unreadable_expired_leases_and_waits_for_fresh_and_future_ones(pristine, tmp_path):
    campaign = copy(pristine, tmp_path)
    leases = campaign / "leases"
    (leases / "u000000.g0000").write_bytes(b"")
    backdate(leases / "u000000.g0000", 2 * DAY)
    (leases / "u000001.g0000").write_bytes(b"[1]")
    ahead = time.time() + 365 * DAY
    (leases / "u000002.g0000").write_text(json.dumps({"host": "skewed", "pid": 7, "lease_seconds": 300}))
    os.utime(leases / "u000002.g0000", (ahead, ahead))
    proc = cli("run", "--campaign", str(campaign), "--no-wait")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "unit u000000: the lease of ? pid ? was not renewed" in proc.stderr
    assert "no unit free; 2 held by other runs" in proc.stderr
    assert sorted(p.name for p in (campaign / "done").iterdir()) == ["u000000", "u000003"]
    # The takeover is a generation of its own, past the unreadable claim
    assert json.loads((campaign / "done" / "u000000").read_text())["part"] == "u000000.g0001.h5"


# The expiry rules, on clocks given


def view(mtime: float, ctime: float | None = None, seconds: float | None = 300.0, **kw) -> LeaseView:
    info = None if seconds is None else {"lease_seconds": seconds}
    return LeaseView("u000000", 0, mtime=mtime, ctime=mtime if ctime is None else ctime, info=info, **kw)


def test_a_readable_lease_expires_after_its_own_timeout():
    now = 1e9
    assert not view(now - 299).expired(now) and view(now - 301).expired(now)
    assert not view(now - 10**6, released=True).expired(now), "a released claim is free, not expired"


def test_an_unreadable_lease_expires_after_the_longest_timeout():
    now = 1e9
    assert not view(now - 301, seconds=None).expired(now)
    assert not view(now - MAX_LEASE_SECONDS + 1, seconds=None).expired(now)
    assert view(now - MAX_LEASE_SECONDS - 1, seconds=None).expired(now)


@pytest.mark.parametrize("seconds", [300.0, None])
def test_a_lease_stamped_ahead_expires_by_its_age_on_the_servers_clock(seconds):
    now, year = 1e9, 365 * DAY
    # The server recorded the change (ctime) when it happened, whatever time was written into mtime
    assert not view(now + year, ctime=now - MAX_LEASE_SECONDS + 1, seconds=seconds).expired(now)
    assert view(now + year, ctime=now - MAX_LEASE_SECONDS - 1, seconds=seconds).expired(now)
    # Where clients stamp ctime too, the count starts when this run first saw the stamp
    skewed = view(now + year, ctime=now + year, seconds=seconds, seen=now - MAX_LEASE_SECONDS - 1)
    assert skewed.expired(now)
    assert not view(now + year, ctime=now + year, seconds=seconds, seen=now - 5).expired(now)
    # A stamp slightly ahead (a renewal racing the clock probe) is still judged by its own timeout
    assert not view(now + 0.5, seconds=seconds).expired(now)


def test_sightings_count_from_the_first_look_and_restart_at_a_renewal():
    sightings, now, ahead = Sightings(), 1e9, 1e9 + 365 * DAY
    first = {"u000000": view(ahead, ctime=ahead)}
    sightings.note(first, now)
    later = {"u000000": view(ahead, ctime=ahead)}
    sightings.note(later, now + MAX_LEASE_SECONDS + 1)
    assert later["u000000"].seen == now and later["u000000"].expired(now + MAX_LEASE_SECONDS + 1)
    renewed = {"u000000": view(ahead + 30, ctime=ahead + 30)}
    sightings.note(renewed, now + MAX_LEASE_SECONDS + 2)
    assert not renewed["u000000"].expired(now + MAX_LEASE_SECONDS + 2)


def test_claim_next_takes_a_future_stamped_lease_once_the_server_clock_passes_the_longest_timeout(
    pristine, tmp_path
):
    campaign = copy(pristine, tmp_path)
    for name in ("u000000", "u000001", "u000002", "u000003"):
        (campaign / "done" / name).write_text(json.dumps({"part": f"{name}.g0000.h5"}))
    (campaign / "done" / "u000001").unlink()
    lease = campaign / "leases" / "u000001.g0000"
    lease.write_text(json.dumps({"host": "skewed", "pid": 7, "lease_seconds": 300}))
    now = time.time()
    os.utime(lease, (now + 365 * DAY, now + 365 * DAY))
    opened, me, sightings = Campaign.open(campaign), identity(), Sightings()
    assert claim_next(opened, me, 60.0, now + 600, sightings) == (None, 1)
    taken, remaining = claim_next(opened, me, 60.0, now + MAX_LEASE_SECONDS + 600, sightings)
    assert remaining == 1 and taken is not None and (taken.unit.id, taken.generation) == ("u000001", 1)


# Done markers


DONE_MARKERS = {
    **DAMAGED_RECORDS,
    "a bare part name": planted(b'"u000002.g0000.h5"'),
    "part outside parts/": planted(b'{"part": "../../campaign.json"}'),
    "part of another unit": planted(b'{"part": "u000001.g0000.h5"}'),
    "part a number": planted(b'{"part": 7}'),
    "finished as text": planted(b'{"part": "u000002.g0000.h5", "finished": "yesterday"}'),
    "items negative": planted(b'{"part": "u000002.g0000.h5", "items": -1}'),
}


@pytest.mark.parametrize("variant", sorted(DONE_MARKERS))
def test_a_damaged_done_marker_is_named_with_its_recovery(finished, tmp_path, variant):
    campaign = copy(finished, tmp_path)
    marker = campaign / "done" / "u000002"
    marker.unlink()
    DONE_MARKERS[variant](marker)
    proc = cli("campaign", "status", str(campaign))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"damaged: {marker}: damaged done marker" in proc.stdout
    assert "remove it to have unit u000002 computed again" in proc.stdout
    if variant in ("part outside parts/", "a fifo", "null"):
        proc = cli("campaign", "merge", str(campaign), "-o", str(tmp_path / "m.h5"))
        one_line(proc, 2, str(marker), "remove it")
        assert not (tmp_path / "m.h5").exists()


def test_a_removed_damaged_marker_has_its_unit_computed_again(finished, tmp_path):
    campaign = copy(finished, tmp_path)
    (campaign / "done" / "u000002").write_text("null")
    assert cli("run", "--campaign", str(campaign), "--quiet").returncode == 0, "the unit counts as done"
    (campaign / "done" / "u000002").unlink()
    # As if the unit had just been finished: its lease fresh, yet released, so the unit is free at once
    for lease in (campaign / "leases").iterdir():
        os.utime(lease)
    proc = cli("run", "--campaign", str(campaign), "--quiet", "--no-wait")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((campaign / "done" / "u000002").read_text())["part"] == "u000002.g0001.h5"
    assert status(campaign)["complete"]
    cli("campaign", "merge", str(campaign), "-o", str(tmp_path / "m.h5"), check=True)


# The campaign file


def unit_change(index: int, **changes):
    def change(document: dict) -> None:
        document["units"][index].update(changes)

    return change


def set_key(key: str, value):
    def change(document: dict) -> None:
        document[key] = value

    return change


CAMPAIGN_FILES = {
    "unit id a path": (unit_change(1, id="../../x"), "'../../x', not 'u000001'"),
    "unit id absolute": (unit_change(1, id="/etc/passwd"), "not 'u000001'"),
    "unit ids swapped": (unit_change(0, id="u000001"), "not 'u000000'"),
    "job index out of range": (unit_change(2, job=7), "job index 7 is not one of 0..0"),
    "job index negative": (unit_change(2, job=-1), "job index -1"),
    "job index as text": (unit_change(2, job="0"), "job index '0'"),
    "job index a boolean": (unit_change(2, job=False), "job index False"),
    "offset as text": (unit_change(1, offset="10000"), "range does not follow"),
    "count zero": (unit_change(3, count=0), "range does not follow"),
    "count short": (unit_change(3, count=9999), "cover 39,999 of its 40,000 items"),
    "units null": (set_key("units", None), "units are not a list"),
    "unit null": (lambda d: d["units"].__setitem__(0, None), "no record"),
    "units missing": (lambda d: d.pop("units"), "'units'"),
    "jobs not JSON": (set_key("config", "{"), "inconsistent campaign file"),
    "jobs not text": (set_key("config", 5), "inconsistent campaign file"),
    "jobs empty": (set_key("config", '{"jobs": []}'), "holds no jobs"),
    "job not a mapping": (set_key("config", '{"jobs": [5]}'), "expected a mapping"),
    "format a list": (set_key("format", [1]), "format [1]"),
}


@pytest.mark.parametrize("variant", sorted(CAMPAIGN_FILES))
def test_a_damaged_campaign_file_is_one_line(pristine, tmp_path, variant):
    campaign = copy(pristine, tmp_path)
    change, words = CAMPAIGN_FILES[variant]
    document = json.loads((campaign / "campaign.json").read_text())
    change(document)
    (campaign / "campaign.json").write_text(json.dumps(document))
    one_line(cli("campaign", "status", str(campaign)), 2, words)
    if variant in ("unit id a path", "job index out of range"):
        one_line(cli("run", "--campaign", str(campaign)), 2, words)
        assert not list((campaign / "leases").iterdir())


@pytest.mark.parametrize("variant", ["empty", "null", "list", "nested a million deep", "a fifo"])
def test_an_unreadable_campaign_file_is_one_line(pristine, tmp_path, variant):
    campaign = copy(pristine, tmp_path)
    (campaign / "campaign.json").unlink()
    DAMAGED_RECORDS[variant](campaign / "campaign.json")
    one_line(cli("campaign", "status", str(campaign)), 2, "campaign.json: damaged campaign file")


# Holder records


def test_damaged_holder_records_are_not_runs(pristine, tmp_path):
    campaign = copy(pristine, tmp_path)
    for name, plant in DAMAGED_RECORDS.items():
        plant(campaign / "holders" / f"{name.replace(' ', '-')}.json")
    (campaign / "holders" / "typed.json").write_text(json.dumps({"host": 5, "pid": "x", "units_done": [1]}))
    report = status(campaign)
    assert [(h["host"], h["pid"], h["units_done"]) for h in report["holders"]] == [(None, None, None)]
    assert cli("campaign", "status", str(campaign)).returncode == 1


# Folders removed


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_missing_folder_is_named_by_status(pristine, tmp_path, folder):
    campaign = copy(pristine, tmp_path)
    shutil.rmtree(campaign / folder)
    one_line(cli("campaign", "status", str(campaign)), 2, f"its folder {folder}/ is missing")


def test_a_run_makes_missing_folders_again_and_refuses_a_file_in_their_place(pristine, tmp_path):
    campaign = copy(pristine, tmp_path)
    for folder in FOLDERS:
        shutil.rmtree(campaign / folder)
    proc = cli("run", "--campaign", str(campaign), "--quiet")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert all(f"its folder {folder}/ was missing; made it again" in proc.stderr for folder in FOLDERS)
    assert status(campaign)["complete"]
    other = copy(pristine, tmp_path / "other")
    (other / "leases").rmdir()
    (other / "leases").write_text("")
    one_line(cli("run", "--campaign", str(other)), 2, "leases is not a folder")


def test_folders_removed_during_a_run_are_made_again_and_it_completes(pristine, tmp_path):
    campaign = copy(pristine, tmp_path)
    run = join(campaign, "--checkpoint-interval", "0.2", env=PACE)
    try:
        wait_until(lambda: (campaign / "done" / "u000000").exists(), what="a unit done", timeout=120)
        for folder in ("done", "leases", "holders"):
            shutil.rmtree(campaign / folder)
        _, stderr = run.communicate(timeout=180)
    finally:
        kill_run(run, signal.SIGKILL)
    assert run.returncode == 0 and "Traceback" not in stderr, stderr
    assert "its folder done/ was missing; made it again" in stderr
    report = status(campaign)
    assert report["complete"] and not report["damaged"], report
    cli("campaign", "merge", str(campaign), "-o", str(tmp_path / "m.h5"), check=True)


def test_parts_removed_during_a_run_stop_it_with_one_line_and_the_next_run_recovers(pristine, tmp_path):
    campaign = copy(pristine, tmp_path)
    run = join(campaign, "--checkpoint-interval", "0.2", env=PACE)
    try:
        wait_until(lambda: (campaign / "done" / "u000000").exists(), what="a unit done", timeout=120)
        time.sleep(0.5)
        shutil.rmtree(campaign / "parts")
        stdout, stderr = run.communicate(timeout=180)
    finally:
        kill_run(run, signal.SIGKILL)
    one_line(subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr), 2, "No such file")
    # The unit it held was released: the next run takes it at once
    assert list((campaign / "leases").glob("u000001.g*.released"))
    cli("run", "--campaign", str(campaign), "--quiet", check=True)
    proc = cli("campaign", "merge", str(campaign), "-o", str(tmp_path / "m.h5"))
    one_line(proc, 2, "unit u000000 is marked done but its part", "remove done/u000000")
    (campaign / "done" / "u000000").unlink()
    cli("run", "--campaign", str(campaign), "--quiet", check=True)
    cli("campaign", "merge", str(campaign), "-o", str(tmp_path / "m.h5"), check=True)


# A campaign this run may only read


@pytest.fixture
def read_only(pristine, tmp_path):
    """The campaign, a lease and a done marker in it, on a filesystem mounted read-only."""
    mount = tmp_path / "ro"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)]
    made = subprocess.run(command, capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        campaign = copy(pristine, mount)
        (campaign / "leases" / "u000000.g0000").write_text(json.dumps({"host": "h", "lease_seconds": 300}))
        (campaign / "done" / "u000001").write_text(json.dumps({"part": "u000001.g0000.h5"}))
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield campaign
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_status_reads_a_read_only_campaign_and_a_run_says_it_cannot_write(read_only):
    proc = cli("campaign", "status", str(read_only), "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    assert report["units"] == {"total": 4, "done": 1, "running": 1, "expired": 0, "free": 2}
    proc = cli("run", "--campaign", str(read_only))
    one_line(proc, 2, "cannot write in its folder", "Read-only file system", "campaign status works")


# Signals to a multi-rank run waiting for units


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The live processes started by PID, at any depth (Hydra starts each rank in a session of its own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def ranks_of(run: subprocess.Popen) -> dict[int, int]:
    """The run's ranks: rank -> pid."""
    out = {}
    for pid in descendants(run.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        rank = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"PMI_RANK=")]
        if rank and b"hpcthreads" in command:
            out[int(rank[0])] = pid
    return out


@pytest.mark.parametrize("whom", ["mpiexec", "rank 1"])
def test_sigterm_stops_every_rank_of_a_waiting_run_with_75_and_removes_its_holder(pristine, tmp_path, whom):
    campaign = copy(pristine, tmp_path)
    # Every unit held by another run, alive: its leases fresh
    for unit in ("u000000", "u000001", "u000002", "u000003"):
        lease = campaign / "leases" / f"{unit}.g0000"
        lease.write_text(json.dumps({"holder": "other", "host": "elsewhere", "pid": 1, "lease_seconds": 600}))
    run = join(campaign, ranks=2)
    ranks: dict[int, int] = {}
    try:
        wait_until(lambda: list((campaign / "holders").glob("*.json")), what="the run joined", timeout=120)
        ranks = wait_until(lambda: len(ranks_of(run)) == 2 and ranks_of(run), what="both ranks")
        # Waiting ranks sleep between looks: well under a tenth of a core each
        before = {rank: cpu_seconds(pid) for rank, pid in ranks.items()}
        time.sleep(2.0)
        for rank, pid in ranks.items():
            assert cpu_seconds(pid) - before[rank] < 0.2, f"rank {rank} spins while it waits"
        os.kill(run.pid if whom == "mpiexec" else ranks[1], signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    finally:
        kill_run(run, signal.SIGKILL)
        for pid in ranks_of(run).values():
            os.kill(pid, signal.SIGKILL)
    assert run.returncode == 75, stderr
    assert "Traceback" not in stderr and "BAD TERMINATION" not in stderr, stderr
    assert "stopped by SIGTERM" in stderr
    assert not list((campaign / "holders").iterdir()), "the holder record is removed"
    assert not descendants(run.pid) and not any(Path(f"/proc/{pid}").exists() for pid in ranks.values())
