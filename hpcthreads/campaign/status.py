"""`hpcthreads campaign status DIR`: units done, running, expired and free, per job; who works; rate and ETA.

Also the campaign's Prometheus metrics (DIR_METRICS/hpcthreads_campaign.prom),
for node_exporter's textfile collector and an autoscaler acting on them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from hpcthreads.campaign.holders import holder_info
from hpcthreads.campaign.lease import newest_leases, server_now
from hpcthreads.campaign.records import DamagedRecord, read_record
from hpcthreads.campaign.store import Campaign
from hpcthreads.errors import OutputError
from hpcthreads.io.safewrite import write_replacing
from hpcthreads.runtime.monitor import label_value

log = logging.getLogger("hpcthreads")

METRICS_FILE = "hpcthreads_campaign.prom"
STATES = ("done", "running", "expired", "free")
# The recent rate is measured over the units finished in this many seconds
RATE_WINDOW_SECONDS = 900.0


def campaign_status(root: Path | str) -> dict[str, Any]:
    """Where the campaign stands, as plain data (exact integers).

    It only reads: it works on a campaign directory it may not write (where it
    measures ages in this machine's clock instead of the file server's). A
    damaged done marker is listed under "damaged" with what to do.
    """
    campaign = Campaign.open(root)
    now = _now(campaign)
    done, damaged = {}, []
    for uid in sorted(campaign.done_ids()):
        try:
            done[uid] = campaign.done_record(uid) or {}
        except OutputError as exc:
            done[uid] = {}
            damaged.append(str(exc))
    leases = newest_leases(campaign)
    jobs = [
        {"name": j.name, "type": j.type, "items": j.size, "items_done": 0, "units": dict.fromkeys(STATES, 0)}
        for j in campaign.jobs
    ]
    running, finished = [], []
    for unit in campaign.units:
        entry = jobs[unit.job]
        view = leases.get(unit.id)
        if unit.id in done:
            state = "done"
            entry["items_done"] += unit.count
            finished.append((float(done[unit.id].get("finished", 0.0)), unit.count, unit.job))
        elif view is None or view.released:
            state = "free"
        else:
            state = "expired" if view.expired(now) else "running"
            running.append(
                {
                    "unit": unit.id,
                    "job": campaign.jobs[unit.job].name,
                    "state": state,
                    "generation": view.generation,
                    **{key: view.field(key) for key in ("holder", "host", "pid", "job_id")},
                    "renewed_seconds_ago": round(view.age(now), 1),
                    "lease_seconds": view.timeout,
                }
            )
        entry["units"][state] += 1
    for index, entry in enumerate(jobs):
        rate = _rate([(t, n) for t, n, j in finished if j == index], now)
        left = entry["items"] - entry["items_done"]
        entry["rate_items_per_second"] = rate
        entry["eta_seconds"] = (left / rate if rate > 0 else None) if left else 0.0
    units = {state: sum(entry["units"][state] for entry in jobs) for state in STATES}
    rate = _rate([(t, n) for t, n, _ in finished], now)
    left = sum(entry["items"] - entry["items_done"] for entry in jobs)
    return {
        "campaign": str(campaign.root),
        # A damaged marker stops the merge: not complete until it is removed and its unit done again
        "complete": units["done"] == len(campaign.units) and not damaged,
        "units": {"total": len(campaign.units), **units},
        "items": sum(entry["items"] for entry in jobs),
        "items_done": sum(entry["items_done"] for entry in jobs),
        "rate_items_per_second": rate,
        "eta_seconds": (left / rate if rate > 0 else None) if left else 0.0,
        "jobs": jobs,
        "running": running,
        "holders": _holders(campaign, now, leases),
        "damaged": damaged,
    }


def _now(campaign: Campaign) -> float:
    """The file server's time, measured by writing a file; this machine's where the campaign is read-only."""
    try:
        return server_now(campaign.folder("holders"))
    except OSError:
        return time.time()


def _rate(finished: list[tuple[float, int]], now: float) -> float:
    """Items per second over the units finished in the last RATE_WINDOW_SECONDS (0 with fewer than 2)."""
    recent = sorted((t, n) for t, n in finished if now - t <= RATE_WINDOW_SECONDS)
    if len(recent) < 2:
        return 0.0
    span = max(now - recent[0][0], 1e-9)
    return sum(n for _, n in recent[1:]) / span


def _holders(campaign: Campaign, now: float, leases: dict) -> list[dict[str, Any]]:
    """The runs that joined; active when their heartbeat is fresh and they have not left."""
    out = []
    folder = campaign.folder("holders")
    timeouts = {view.field("holder"): view.timeout for view in leases.values() if view.info is not None}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = folder / name
        try:
            info = holder_info(read_record(path))
            age = max(0.0, now - path.lstat().st_mtime)
        except (OSError, DamagedRecord):
            # Being replaced this instant, or not a holder record: not a run that works now
            continue
        limit = timeouts.get(info["holder"], 300.0)
        active = not info["left"] and age <= max(limit, 60.0)
        out.append({**info, "seen_seconds_ago": round(age, 1), "active": active})
    return out


def render_status(status: dict[str, Any]) -> str:
    """The status as text for a terminal."""
    units = status["units"]
    lines = [
        f"campaign {status['campaign']}: {'complete' if status['complete'] else 'not complete'}",
        f"  units: {units['done']}/{units['total']} done, {units['running']} running, "
        f"{units['expired']} expired, {units['free']} free",
        f"  items: {status['items_done']:,}/{status['items']:,} done, {_rate_text(status)}",
    ]
    for job in status["jobs"]:
        counts = job["units"]
        lines.append(
            f"  job {job['name']} ({job['type']}): {job['items_done']:,}/{job['items']:,} items; units "
            + ", ".join(f"{counts[state]} {state}" for state in STATES)
        )
    for entry in status["running"]:
        lines.append(
            f"  {entry['state']:<8} {entry['unit']} ({entry['job']}) held by {_who(entry)}, "
            f"renewed {entry['renewed_seconds_ago']:.0f} s ago"
        )
    active = [h for h in status["holders"] if h["active"]]
    lines.append(f"  working now: {len(active)} run(s)")
    for holder in active:
        lines.append(f"    {_who(holder)}: {holder['units_done']} unit(s) done, on {holder['unit'] or '-'}")
    lines.extend(f"  damaged: {problem}" for problem in status["damaged"])
    return "\n".join(lines)


def _who(entry: dict[str, Any]) -> str:
    job = f" [{entry['job_id']}]" if entry.get("job_id") else ""
    return f"{entry['host']} pid {entry['pid']}{job}"


def _rate_text(status: dict[str, Any]) -> str:
    rate, eta = status["rate_items_per_second"], status["eta_seconds"]
    if status["complete"]:
        return "nothing left"
    if not rate:
        return "rate not known yet"
    return f"{rate:,.0f} items/s recently, ETA {_duration(eta)}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def render_metrics(status: dict[str, Any]) -> str:
    """Prometheus text format: the campaign's units by state, items, rate and active holders."""
    name = Path(status["campaign"]).name
    label = f'campaign="{label_value(name)}"'
    out: list[str] = []

    def metric(metric_name: str, text: str, rows: list[tuple[str, float]]) -> None:
        out.append(f"# HELP hpcthreads_campaign_{metric_name} {text}")
        out.append(f"# TYPE hpcthreads_campaign_{metric_name} gauge")
        out.extend(f"hpcthreads_campaign_{metric_name}{{{labels}}} {value:.17g}" for labels, value in rows)

    by_state = [(f'{label},state="{s}"', status["units"][s]) for s in STATES]
    metric("units", "Units of the campaign by state.", by_state)
    metric(
        "units_remaining",
        "Units not done yet (running, expired or free).",
        [(label, status["units"]["total"] - status["units"]["done"])],
    )
    jobs = status["jobs"]
    # `hpc_job`: Prometheus sets `job` itself on every series it scrapes
    rows = [(f'{label},hpc_job="{label_value(j["name"])}"', j) for j in jobs]
    metric("items", "Items of each job.", [(labels, j["items"]) for labels, j in rows])
    done = [(labels, j["items_done"]) for labels, j in rows]
    metric("items_done", "Items of each job in finished units.", done)
    metric(
        "rate_items_per_second",
        "Items per second over the units finished recently.",
        [(label, status["rate_items_per_second"])],
    )
    active = sum(holder["active"] for holder in status["holders"])
    metric("active_holders", "Runs working on the campaign now.", [(label, active)])
    metric("complete", "1 when every unit is done.", [(label, float(status["complete"]))])
    return "\n".join(out) + "\n"


def write_metrics(status: dict[str, Any], folder: Path) -> Path:
    """Write the metrics atomically (a temporary file renamed) to FOLDER/hpcthreads_campaign.prom."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / METRICS_FILE
    write_replacing(path, render_metrics(status), "metrics file")
    return path
