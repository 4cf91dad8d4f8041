"""Leases on a campaign's units: claims made with O_EXCL, renewed by their mtime, taken when they expire.

A unit's claims are generations: `leases/UNIT.g0000`, `UNIT.g0001`, ... Only
the newest counts. A run claims a unit that no one holds by creating the
next generation's file with O_EXCL: of any number of runs trying at once,
exactly one succeeds. The holder renews the claim by touching it; once its
mtime is older than the timeout the holder wrote into it, the unit may be
taken by creating the next generation, again with O_EXCL. A holder that
finds a newer generation (or the unit done) has lost the unit and stops it.

Ages are measured in the file server's clock: "now" is the mtime of a file
just written, so skew between the nodes' clocks does not enter (on
filesystems whose clients stamp times themselves, the skew adds to or takes
from the timeout). Correctness never rests on a lease: every generation
writes its own part file, and the first finished part of a unit is the one
`done/UNIT` names.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcthreads.campaign.store import Campaign, Unit
from hpcthreads.io.safewrite import temporary_beside, write_replacing

log = logging.getLogger("hpcthreads")

DEFAULT_LEASE_SECONDS = 300.0
# The shortest lease timeout a run may ask for (--lease-timeout)
MIN_LEASE_SECONDS = 1.0
LEASE_NAME = re.compile(r"(u\d{6})\.g(\d{4,})(\.released)?")
PRIORITY_ORDER = {"high": 0, "normal": 1, "low": 2}


def job_id() -> str:
    """The batch job this process belongs to, as its scheduler names it (empty outside one)."""
    slurm = os.environ.get("SLURM_JOB_ID")
    if slurm:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        return f"slurm {array}_{task}" if array and task else f"slurm {slurm}"
    for name, label in (("OMPI_MCA_orte_job_id", "mpi"), ("KUBERNETES_SERVICE_HOST", "pod")):
        if os.environ.get(name):
            return f"{label} {os.environ.get('HOSTNAME', socket.gethostname())}"
    return ""


def identity() -> dict[str, Any]:
    host = socket.gethostname()
    return {
        "holder": f"{host}-{os.getpid()}-{secrets.token_hex(3)}",
        "host": host,
        "pid": os.getpid(),
        "job_id": job_id(),
    }


def server_now(folder: Path) -> float:
    """The time by the clock that stamps files in `folder` (the file server's, on NFS)."""
    # A private file of an unpredictable name: one named after the host and pid could be a planted link
    fd, probe = temporary_beside(folder / ".now")
    try:
        os.write(fd, b"t")
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


@dataclass
class LeaseView:
    """The newest claim of one unit, as seen by listing the leases folder."""

    unit: str
    generation: int = -1
    released: bool = False
    mtime: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def age(self, now: float) -> float:
        return max(0.0, now - self.mtime)

    def expired(self, now: float) -> bool:
        return self.generation >= 0 and not self.released and self.age(now) > self.timeout

    @property
    def timeout(self) -> float:
        return float(self.info.get("lease_seconds", DEFAULT_LEASE_SECONDS))


def lease_path(campaign: Campaign, unit: str, generation: int) -> Path:
    return campaign.folder("leases") / f"{unit}.g{generation:04d}"


def newest_leases(campaign: Campaign, with_info: bool = True) -> dict[str, LeaseView]:
    """Per unit, its newest claim (units never claimed are absent)."""
    views: dict[str, LeaseView] = {}
    released: set[tuple[str, int]] = set()
    folder = campaign.folder("leases")
    for name in os.listdir(folder):
        match = LEASE_NAME.fullmatch(name)
        if not match:
            continue
        unit, generation = match.group(1), int(match.group(2))
        if match.group(3):
            released.add((unit, generation))
        elif generation > views.get(unit, LeaseView(unit)).generation:
            views[unit] = LeaseView(unit, generation)
    for view in views.values():
        view.released = (view.unit, view.generation) in released
        _read(campaign, view, with_info)
    return views


def _read(campaign: Campaign, view: LeaseView, with_info: bool) -> None:
    path = lease_path(campaign, view.unit, view.generation)
    try:
        view.mtime = path.stat().st_mtime
        if with_info:
            view.info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        # Being written this instant, or removed: it counts as fresh, never as expired
        view.mtime = float("inf")


class Lease:
    """A claim this process holds, renewed by a thread until it is dropped."""

    def __init__(self, campaign: Campaign, unit: Unit, generation: int, seconds: float) -> None:
        self.campaign = campaign
        self.unit = unit
        self.generation = generation
        self.seconds = seconds
        self.path = lease_path(campaign, unit.id, generation)
        self.lost_reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def part(self) -> Path:
        return self.campaign.part_path(self.unit, self.generation)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.unit.id}", daemon=True)
        self._thread.start()

    def lost(self) -> str | None:
        """Why the unit is no longer ours (a newer claim, or done by another run), else None."""
        return self.lost_reason

    def check(self) -> None:
        """Renew the claim, then look for a newer one: in this order, a takeover is always seen."""
        try:
            os.utime(self.path)
        except FileNotFoundError:
            self.lost_reason = "lease removed"
            return
        except OSError as exc:
            log.warning("cannot renew the lease %s: %s", self.path, exc)
        newer = lease_path(self.campaign, self.unit.id, self.generation + 1)
        if newer.exists():
            self.lost_reason = "lease taken over (it was not renewed in time)"
        elif self.campaign.done_record(self.unit.id) is not None:
            self.lost_reason = "unit done by another run"

    def _renew_loop(self) -> None:
        interval = renew_interval(self.seconds)
        while not self._stop.wait(interval):
            self.check()
            if self.lost_reason:
                log.warning("unit %s: %s; stopping it", self.unit.id, self.lost_reason)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def release(self) -> None:
        """Say the holder stopped cleanly: its part may be taken at once, without waiting for expiry."""
        self.stop()
        if self.lost_reason is None:
            try:
                fd = os.open(f"{self.path}.released", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.close(fd)
            except FileExistsError:
                pass


def renew_interval(seconds: float) -> float:
    """A claim is renewed five times per timeout (at most every 30 s)."""
    return max(0.05, min(30.0, seconds / 5))


def try_claim(
    campaign: Campaign, unit: Unit, generation: int, holder: dict[str, Any], seconds: float
) -> Lease | None:
    """Create the unit's claim of this generation; None when another run made it first."""
    path = lease_path(campaign, unit.id, generation)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    try:
        info = {**holder, "unit": unit.id, "generation": generation, "lease_seconds": seconds}
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return Lease(campaign, unit, generation, seconds)


def claim_order(campaign: Campaign) -> list[Unit]:
    """Units in the order runs take them: by their job's priority, then in order."""
    return sorted(
        campaign.units, key=lambda u: (PRIORITY_ORDER[campaign.jobs[u.job].priority], int(u.id[1:]))
    )


def claim_next(
    campaign: Campaign, holder: dict[str, Any], seconds: float, now: float
) -> tuple[Lease | None, int]:
    """Claim the first unit not done and not held: never claimed first, then released, then expired.

    Returns the lease (None when no unit can be had now) and how many units
    are not done yet.
    """
    done = campaign.done_ids()
    leases = newest_leases(campaign, with_info=False)
    remaining = [unit for unit in claim_order(campaign) if unit.id not in done]
    fresh = [unit for unit in remaining if unit.id not in leases]
    released = [unit for unit in remaining if unit.id in leases and leases[unit.id].released]
    held = [unit for unit in remaining if unit.id in leases and not leases[unit.id].released]
    for unit in fresh + released:
        generation = leases[unit.id].generation + 1 if unit.id in leases else 0
        lease = try_claim(campaign, unit, generation, holder, seconds)
        if lease is not None:
            return lease, len(remaining)
    for unit in held:
        view = leases[unit.id]
        if view.age(now) <= MIN_LEASE_SECONDS:
            continue
        # Its holder and timeout, read only for claims old enough to have expired (one small file)
        _read(campaign, view, True)
        if view.expired(now):
            lease = try_claim(campaign, unit, view.generation + 1, holder, seconds)
            if lease is not None:
                age = view.age(now)
                who = f"{view.info.get('host', '?')} pid {view.info.get('pid', '?')}"
                log.warning(
                    "unit %s: the lease of %s was not renewed for %.0f s (timeout %.0f s); taking it over",
                    unit.id,
                    who,
                    age,
                    view.timeout,
                )
                return lease, len(remaining)
    return None, len(remaining)


class HolderFile:
    """DIR/holders/ID.json: who this run is, what it holds, what it did; its mtime is its heartbeat."""

    def __init__(self, campaign: Campaign, info: dict[str, Any]) -> None:
        self.path = campaign.folder("holders") / f"{info['holder']}.json"
        self.info = {**info, "joined": time.time(), "unit": None, "units_done": 0, "items_done": 0}

    def write(self, **changes: Any) -> float:
        """Record the changes; returns the server's time of the write."""
        self.info.update(changes, seen=time.time())
        write_replacing(self.path, json.dumps(self.info), "holder record")
        return self.path.stat().st_mtime

    def leave(self) -> None:
        self.write(unit=None, left=time.time())
