"""Campaigns: units claimed by any number of runs, leases taken over, results as one run's."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from h5compare import assert_same_results
from helpers import cli, kill_run, mpiexec

from hpcthreads.campaign.store import Campaign, split
from hpcthreads.config import make_jobs

JOBS = """\
jobs:
  - name: numbers
    type: collatz
    parameters: {start: 1, count: 600000, batch_size: 20000, store: per-number}
  - name: frontier
    type: verify
    priority: high
    parameters: {start: 2**64 - 300000, count: 900000, batch_size: 30000}
  - name: paths
    type: thread
    parameters: {start: 27, thread_count: 240, max_depth: 400, batch_size: 10}
"""
# A unit of the collatz or verify job takes 3 s or more at this pace, on any machine
PACE = {"HPCTHREADS_TEST_FAULTS": "slow:rate=50000"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted one-process run of the job file."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "jobs.yaml").write_text(JOBS)
    cli("run", str(folder / "jobs.yaml"), "-o", str(folder / "one.h5"), "--quiet", check=True)
    return folder / "one.h5"


def per_number_job(count: int, batch: int) -> str:
    parameters = f"{{count: {count}, batch_size: {batch}, store: per-number}}"
    return f"jobs:\n  - {{name: c, type: collatz, parameters: {parameters}}}\n"


def make_campaign(tmp_path: Path, units: int = 4, jobs: str = JOBS) -> Path:
    (tmp_path / "jobs.yaml").write_text(jobs)
    cli(
        "campaign",
        "create",
        str(tmp_path / "camp"),
        str(tmp_path / "jobs.yaml"),
        "--units",
        str(units),
        check=True,
    )
    return tmp_path / "camp"


def join(campaign: Path, *args: str, ranks: int = 1, env: dict | None = None) -> subprocess.Popen:
    """A run joining the campaign, in a session of its own (mpiexec -n RANKS when RANKS > 1)."""
    command = [sys.executable, "-m", "hpcthreads", "run", "--campaign", str(campaign), *args]
    if ranks > 1:
        command = [mpiexec(), "-n", str(ranks), *command]
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_run(proc, signal.SIGKILL)
        raise
    assert proc.returncode == 0, stderr
    return stderr


def holders(campaign: Path) -> dict[int, dict]:
    """The joined runs by pid."""
    out = {}
    for path in (campaign / "holders").glob("*.json"):
        try:
            info = json.loads(path.read_text())
        except ValueError:
            continue
        out[info["pid"]] = info
    return out


def wait_until(condition, timeout: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def working_with_progress(campaign: Path, pid: int, types: tuple[str, ...] = ("collatz", "verify")):
    """(unit, generation) once run `pid` holds a unit of those job types with finished chunks saved."""
    from hpcthreads.tools.status import run_status

    info = holders(campaign).get(pid)
    if not info or not info.get("unit"):
        return None
    opened = Campaign.open(campaign)
    unit = opened.by_id[info["unit"]]
    if opened.jobs[unit.job].type not in types:
        return None
    try:
        jobs = run_status(opened.part_path(unit, info["generation"]))["jobs"].values()
    except Exception:  # noqa: BLE001 - not started yet, or mid-snapshot
        return None
    return (unit.id, info["generation"]) if sum(job["done"] or 0 for job in jobs) > 0 else None


def merged(campaign: Path, tmp_path: Path) -> Path:
    status = cli("campaign", "status", str(campaign), "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    cli("campaign", "merge", str(campaign), "-o", str(tmp_path / "merged.h5"), check=True)
    return tmp_path / "merged.h5"


# Units


@pytest.mark.parametrize("start", [1, 2**64 - 5, 2**128 - 2 * 10**6])
def test_units_tile_each_job_exactly(start):
    jobs = make_jobs(
        {
            "jobs": [
                {
                    "name": "a",
                    "type": "verify",
                    "parameters": {"start": start, "count": 10**6 + 7, "batch_size": 1000},
                },
                {
                    "name": "b",
                    "type": "collatz",
                    "parameters": {"start": start, "count": 5000, "batch_size": 1000},
                },
            ]
        }
    )
    units = split(jobs, 64)
    for index, job in enumerate(jobs):
        mine = [u for u in units if u.job == index]
        assert sum(u.count for u in mine) == job.size
        assert [u.offset for u in mine] == [sum(v.count for v in mine[:k]) for k in range(len(mine))]
        assert min(u.count for u in mine) >= job.batch_size
        assert max(u.count for u in mine) - min(u.count for u in mine) <= 1
    assert len([u for u in units if u.job == 0]) == 64
    # Fewer units than asked where a job has fewer batches
    assert len([u for u in units if u.job == 1]) == 5
    assert len({u.id for u in units}) == len(units)


# Claims


RACER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from hpcthreads.campaign.holders import identity
    from hpcthreads.campaign.lease import claim_next, server_now
    from hpcthreads.campaign.store import Campaign, publish
    root, go, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    campaign = Campaign.open(root)
    me = identity()
    while not go.exists():
        time.sleep(0.001)
    taken = []
    while True:
        lease, remaining = claim_next(campaign, me, 600.0, server_now(root / "holders"))
        if lease is None:
            break
        taken.append(lease.unit.id)
        publish(root / "done" / lease.unit.id, json.dumps({"part": lease.part.name, "pid": os.getpid()}))
    log.write_text(json.dumps(taken))
    """
)


def test_forty_processes_claim_every_unit_exactly_once(tmp_path):
    jobs = "jobs:\n  - {name: c, type: collatz, parameters: {count: 400, batch_size: 1}}\n"
    campaign = make_campaign(tmp_path, units=400, jobs=jobs)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(campaign), str(go), str(tmp_path / f"log{i}.json")]
        )
        for i in range(40)
    ]
    time.sleep(2.0)  # every process imported and waiting
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    taken = [unit for i in range(40) for unit in json.loads((tmp_path / f"log{i}.json").read_text())]
    units = [u.id for u in Campaign.open(campaign).units]
    assert sorted(taken) == units, "every unit claimed once, none skipped"
    assert sum(1 for i in range(40) if json.loads((tmp_path / f"log{i}.json").read_text())) > 1
    status = json.loads(cli("campaign", "status", str(campaign), "--json").stdout)
    assert status["complete"] and status["units"]["done"] == 400


# Runs joining, dying and coming back


def test_runs_join_die_and_are_taken_over_with_results_of_one_run(tmp_path, reference):
    campaign = make_campaign(tmp_path)
    lease = ["--lease-timeout", "3", "--checkpoint-interval", "0.2"]
    a = join(campaign, *lease, ranks=2, env=PACE)
    b = join(campaign, *lease, env=PACE)
    c = join(campaign, *lease, env=PACE)
    unit, generation = wait_until(lambda: working_with_progress(campaign, b.pid), what="run b mid-unit")
    b.send_signal(signal.SIGKILL)
    b.wait()
    killed_at = time.monotonic()
    late = join(campaign, *lease, env=PACE)
    logs = [finish(proc) for proc in (a, c, late)]
    took = [log for log in logs if f"unit {unit}: the lease of" in log and "taking it over" in log]
    assert len(took) == 1, "one run took the killed run's unit over"
    resumed = re.search(r"resuming from the ledger: ([\d,]+) of ([\d,]+) items already done", took[0])
    assert resumed and int(resumed.group(1).replace(",", "")) > 0, took[0]
    assert time.monotonic() - killed_at > 3.0
    done = json.loads((campaign / "done" / unit).read_text())
    assert done["generation"] > generation
    assert holders(campaign)[late.pid]["units_done"] >= 1, "a run that joins late takes units"
    assert_same_results(merged(campaign, tmp_path), reference)
    # Only the parts that hold the units' results are left
    names = sorted(p.name for p in (campaign / "parts").iterdir())
    assert names == sorted(json.loads(p.read_text())["part"] for p in (campaign / "done").iterdir())


def test_a_paused_holder_neither_corrupts_nor_doubles_its_unit(tmp_path):
    jobs = per_number_job(400000, 20000)
    campaign = make_campaign(tmp_path, units=2, jobs=jobs)
    cli("run", str(tmp_path / "jobs.yaml"), "-o", str(tmp_path / "one.h5"), "--quiet", check=True)
    slow = {"HPCTHREADS_TEST_FAULTS": "slow:rate=40000"}
    x = join(campaign, "--lease-timeout", "2", "--checkpoint-interval", "0.2", env=slow)
    unit, _ = wait_until(lambda: working_with_progress(campaign, x.pid), what="run x mid-unit")
    os.kill(x.pid, signal.SIGSTOP)
    y = join(campaign, "--lease-timeout", "2", "--checkpoint-interval", "0.2", env=slow)
    wait_until(lambda: (campaign / "leases" / f"{unit}.g0001").exists(), what="the takeover")
    os.kill(x.pid, signal.SIGCONT)
    logs = {"x": finish(x), "y": finish(y)}
    assert f"unit {unit}: lease taken over" in logs["x"], logs["x"]
    assert "taking it over" in logs["y"]
    assert_same_results(merged(campaign, tmp_path), tmp_path / "one.h5")
    records = {p.name: json.loads(p.read_text()) for p in (campaign / "done").iterdir()}
    assert len(records) == 2 and records[unit]["generation"] == 1
    assert sorted(p.name for p in (campaign / "parts").iterdir()) == sorted(
        r["part"] for r in records.values()
    )


def test_a_signalled_run_releases_its_unit_for_the_next_at_once(tmp_path):
    jobs = "jobs:\n  - {name: c, type: collatz, parameters: {count: 300000, batch_size: 20000}}\n"
    campaign = make_campaign(tmp_path, units=1, jobs=jobs)
    x = join(campaign, "--checkpoint-interval", "0.2", env={"HPCTHREADS_TEST_FAULTS": "slow:rate=40000"})
    wait_until(lambda: working_with_progress(campaign, x.pid), what="run x mid-unit")
    x.send_signal(signal.SIGTERM)
    _, stderr = x.communicate(timeout=60)
    assert x.returncode == 75, stderr
    assert (campaign / "leases" / "u000000.g0000.released").exists()
    status = json.loads(cli("campaign", "status", str(campaign), "--json").stdout)
    assert status["units"]["free"] == 1 and not status["complete"]
    # The default lease is 5 minutes: a released unit is taken without waiting for it
    t0 = time.monotonic()
    stderr = finish(join(campaign))
    assert time.monotonic() - t0 < 60
    assert re.search(r"resuming from the ledger: [1-9][\d,]* of 300,000", stderr), stderr
    assert not list((campaign / "parts").glob("u000000.g0000*"))


# What status says


def test_status_names_units_holders_and_writes_metrics(tmp_path):
    campaign = make_campaign(tmp_path, units=3)
    proc = cli("campaign", "status", str(campaign), "--json", "--metrics-dir", str(tmp_path / "m"))
    assert proc.returncode == 1, "not complete"
    status = json.loads(proc.stdout)
    assert status["units"] == {"total": 9, "done": 0, "running": 0, "expired": 0, "free": 9}
    assert [job["items"] for job in status["jobs"]] == [600000, 900000, 240]
    metrics = (tmp_path / "m" / "hpcthreads_campaign.prom").read_text()
    assert 'hpcthreads_campaign_units_remaining{campaign="camp"} 9' in metrics
    x = join(campaign, "--lease-timeout", "30", env=PACE)
    wait_until(lambda: working_with_progress(campaign, x.pid), what="run x mid-unit")
    status = json.loads(cli("campaign", "status", str(campaign), "--json").stdout)
    running = status["running"]
    assert len(running) == 1 and running[0]["pid"] == x.pid and running[0]["state"] == "running"
    # The high-priority verify job's units are claimed first
    assert running[0]["job"] == "frontier"
    assert [h["pid"] for h in status["holders"] if h["active"]] == [x.pid]
    text = cli("campaign", "status", str(campaign)).stdout
    assert f"pid {x.pid}" in text and "not complete" in text
    x.send_signal(signal.SIGKILL)
    x.wait()
    os.utime(campaign / "leases" / f"{running[0]['unit']}.g0000", (time.time() - 60, time.time() - 60))
    status = json.loads(cli("campaign", "status", str(campaign), "--json").stdout)
    assert status["units"]["expired"] == 1 and status["running"][0]["state"] == "expired"


# Bad input


def test_bad_campaigns_are_refused_with_one_line(tmp_path):
    (tmp_path / "plain").mkdir()
    for args in (
        ["run", "--campaign", str(tmp_path / "plain")],
        ["campaign", "status", str(tmp_path / "plain")],
    ):
        proc = cli(*args)
        assert proc.returncode == 2 and "is not a campaign" in proc.stderr and "Traceback" not in proc.stderr
    campaign = make_campaign(tmp_path, units=2)
    proc = cli("campaign", "create", str(campaign), str(tmp_path / "jobs.yaml"))
    assert proc.returncode == 2 and "already a campaign" in proc.stderr
    proc = cli("run", "collatz", "--campaign", str(campaign))
    assert proc.returncode == 2 and "either TARGET or --campaign" in proc.stderr
    proc = cli("run", "collatz", "--count", "10", "--lease-timeout", "5")
    assert proc.returncode == 2 and "--lease-timeout is for --campaign" in proc.stderr
    proc = cli("campaign", "merge", str(campaign), "-o", str(tmp_path / "m.h5"))
    assert proc.returncode == 2 and "not complete: 6 of 6 unit(s) not done" in proc.stderr
    document = json.loads((campaign / "campaign.json").read_text())
    (campaign / "campaign.json").write_text(json.dumps({**document, "hpcthreads_version": "0.0.1"}))
    proc = cli("run", "--campaign", str(campaign))
    assert proc.returncode == 2 and "created by hpcthreads 0.0.1" in proc.stderr


def test_a_damaged_part_is_refused_and_named(tmp_path):
    jobs = per_number_job(40000, 10000)
    campaign = make_campaign(tmp_path, units=2, jobs=jobs)
    finish(join(campaign, "--quiet"))
    part = campaign / "parts" / json.loads((campaign / "done" / "u000001").read_text())["part"]
    with h5py.File(part, "r+") as f:
        data = f["jobs/c/delay"]
        data[5] = np.uint32(data[5] + 1)
    proc = cli("campaign", "merge", str(campaign), "-o", str(tmp_path / "m.h5"))
    assert proc.returncode == 2 and part.name in proc.stderr and "damaged" in proc.stderr
    assert "done/ marker" in proc.stderr and not (tmp_path / "m.h5").exists()


def test_campaign_help_explains_the_commands():
    proc = cli("campaign", "--help", check=True)
    for command in ("create", "status", "merge", "run --campaign"):
        assert command in proc.stdout
    assert "--lease-timeout" in cli("run", "--help", check=True).stdout
