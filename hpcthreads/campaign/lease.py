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
from the timeout). Two kinds of claims are judged without trusting what they
say: one that cannot be read (torn, or not a lease record) has expired once
it is older than MAX_LEASE_SECONDS, the longest timeout any run may set; one
stamped ahead of the server's clock (by a skewed clock) also expires once
it has gone MAX_LEASE_SECONDS on the server's clock without a change, counted
from the server's record of its last change (ctime) or from when this run
first saw that stamp. Correctness never rests on a lease: every generation
writes its own part file, and the first finished part of a unit is the one
`done/UNIT` names.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcthreads.campaign.records import DamagedRecord, mapping, number, read_record, text
from hpcthreads.campaign.store import Campaign, Unit
from hpcthreads.errors import HPCThreadsError
from hpcthreads.io.safewrite import temporary_beside

log = logging.getLogger("hpcthreads")

DEFAULT_LEASE_SECONDS = 300.0
# The shortest lease timeout a run may ask for (--lease-timeout)
MIN_LEASE_SECONDS = 1.0
# The longest (--lease-timeout): how long a claim that cannot be read, or is stamped by a skewed clock, lasts
MAX_LEASE_SECONDS = 86400.0
LEASE_NAME = re.compile(r"(u\d{6,})\.g(\d{4,})(\.released)?")
PART_NAME = re.compile(r"(u\d{6,})\.g(\d{4,})\.h5.*")
PRIORITY_ORDER = {"high": 0, "normal": 1, "low": 2}


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
    """The newest claim of one unit, as seen by listing the leases folder.

    `info` is the claim's record, None until read or when it cannot be read;
    `seen` is when (server's clock) this run first saw the claim's stamp.
    """

    unit: str
    generation: int = -1
    released: bool = False
    mtime: float = 0.0
    ctime: float = 0.0
    seen: float = math.inf
    info: dict[str, Any] | None = None

    def age(self, now: float) -> float:
        return max(0.0, now - self.mtime)

    def expired(self, now: float) -> bool:
        """Whether another run may take the unit: see the module's docstring."""
        if self.generation < 0 or self.released:
            return False
        if now - self.mtime > self.timeout:
            return True
        # Stamped ahead of the server's clock: counted in the server's clock, with the longest timeout
        return self.mtime > now and now - min(self.ctime, self.seen) > MAX_LEASE_SECONDS

    @property
    def timeout(self) -> float:
        """The holder's timeout; the longest any run may set when its record cannot be read."""
        return self.info["lease_seconds"] if self.info is not None else MAX_LEASE_SECONDS

    def field(self, key: str) -> Any:
        return None if self.info is None else self.info.get(key)


def lease_path(campaign: Campaign, unit: str, generation: int) -> Path:
    return campaign.folder("leases") / f"{unit}.g{generation:04d}"


def lease_info(value: Any) -> dict[str, Any]:
    """A claim's record as `try_claim` writes it, its fields typed; DamagedRecord otherwise."""
    record = mapping(value, "it")
    seconds = number(record.get("lease_seconds"))
    if seconds is None or not MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS:
        raise DamagedRecord("its lease_seconds is not a timeout")
    pid = record.get("pid")
    return {
        **{key: text(record.get(key)) for key in ("holder", "host", "job_id")},
        "pid": pid if type(pid) is int else None,
        "lease_seconds": seconds,
    }


def newest_leases(campaign: Campaign, with_info: bool = True) -> dict[str, LeaseView]:
    """Per unit of the campaign, its newest claim (units never claimed are absent)."""
    views: dict[str, LeaseView] = {}
    released: set[tuple[str, int]] = set()
    units = set(campaign.by_id)
    for unit, generation, suffix in _generations(campaign.folder("leases"), LEASE_NAME, units):
        if suffix:
            released.add((unit, generation))
        elif generation > views.get(unit, LeaseView(unit)).generation:
            views[unit] = LeaseView(unit, generation)
    for view in views.values():
        view.released = (view.unit, view.generation) in released
        _read(campaign, view, with_info)
    return views


def newest_parts(campaign: Campaign) -> dict[str, int]:
    """Per unit, the newest generation of which any part file exists (its lease may have been removed)."""
    newest: dict[str, int] = {}
    for unit, generation, _ in _generations(campaign.folder("parts"), PART_NAME, set(campaign.by_id)):
        newest[unit] = max(generation, newest.get(unit, -1))
    return newest


def _generations(folder: Path, pattern: re.Pattern, units: set[str]) -> list[tuple[str, int, str | None]]:
    out = []
    for name in os.listdir(folder):
        match = pattern.fullmatch(name)
        if match and match.group(1) in units:
            out.append((match.group(1), int(match.group(2)), match.group(3) if pattern.groups > 2 else None))
    return out


def _read(campaign: Campaign, view: LeaseView, with_info: bool) -> None:
    path = lease_path(campaign, view.unit, view.generation)
    try:
        stamp = os.lstat(path)
    except OSError:
        # Removed since the listing (taken over, or its unit done): fresh until the next look
        view.mtime = view.ctime = math.inf
        return
    view.mtime, view.ctime = stamp.st_mtime, stamp.st_ctime
    if with_info:
        try:
            view.info = lease_info(read_record(path))
        except (DamagedRecord, OSError):
            # Torn, or not a claim at all: judged by its age alone (see the module's docstring)
            view.info = None


class Sightings:
    """When this run first saw each claim stamped ahead of the server's clock (in the server's clock)."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, int, float], float] = {}

    def note(self, views: dict[str, LeaseView], now: float) -> None:
        ahead = {(v.unit, v.generation, v.mtime): v for v in views.values() if v.mtime > now}
        # A new stamp (a renewal) starts a new count; stamps no longer seen are forgotten
        self.first = {key: self.first.get(key, now) for key in ahead}
        for key, view in ahead.items():
            view.seen = self.first[key]


class Lease:
    """A claim this process holds, renewed by a thread until it is dropped."""

    def __init__(
        self, campaign: Campaign, unit: Unit, generation: int, seconds: float, record: dict[str, Any]
    ) -> None:
        self.campaign = campaign
        self.unit = unit
        self.generation = generation
        self.seconds = seconds
        self.record = record
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
            self._restore()
        except OSError as exc:
            log.warning("cannot renew the lease %s: %s", self.path, exc.strerror)
        newer = lease_path(self.campaign, self.unit.id, self.generation + 1)
        if self.lost_reason is None and os.path.lexists(newer):
            self.lost_reason = "lease taken over (it was not renewed in time)"
        elif self.lost_reason is None and os.path.lexists(self.campaign.folder("done") / self.unit.id):
            self.lost_reason = "unit done by another run"

    def _restore(self) -> None:
        """Make the claim again after its file (or all of leases/) was removed, unless another run has."""
        self.campaign.make_folders()
        if os.path.lexists(lease_path(self.campaign, self.unit.id, self.generation + 1)):
            return
        if create_claim(self.path, self.record):
            log.warning("unit %s: its lease %s was removed; made it again", self.unit.id, self.path.name)
        else:
            self.lost_reason = "lease removed, and claimed again by another run"

    def _renew_loop(self) -> None:
        interval = renew_interval(self.seconds)
        while not self._stop.wait(interval):
            try:
                self.check()
            except (OSError, HPCThreadsError) as exc:
                # Tried again at the next renewal; the claim expires if this goes on
                log.warning("unit %s: cannot renew its lease: %s", self.unit.id, exc)
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
    record = {**holder, "unit": unit.id, "generation": generation, "lease_seconds": seconds}
    try:
        made = create_claim(path, record)
    except FileNotFoundError:
        # leases/ was removed since this pass began
        campaign.make_folders()
        made = create_claim(path, record)
    return Lease(campaign, unit, generation, seconds, record) if made else None


def create_claim(path: Path, record: dict[str, Any]) -> bool:
    """Create the claim file PATH holding RECORD; False when it exists (another run made it first)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def claim_order(campaign: Campaign) -> list[Unit]:
    """Units in the order runs take them: by their job's priority, then in order."""
    return sorted(
        campaign.units, key=lambda u: (PRIORITY_ORDER[campaign.jobs[u.job].priority], int(u.id[1:]))
    )


def claim_next(
    campaign: Campaign,
    holder: dict[str, Any],
    seconds: float,
    now: float,
    sightings: Sightings | None = None,
) -> tuple[Lease | None, int]:
    """Claim the first unit not done and not held: never claimed first, then released, then expired.

    Returns the lease (None when no unit can be had now) and how many units
    are not done yet. A new claim's generation is past every earlier claim's
    and every part's, so two claims never share a part, even after leases/
    was removed.
    """
    done = campaign.done_ids()
    leases = newest_leases(campaign, with_info=False)
    if sightings is not None:
        sightings.note(leases, now)
    parts = newest_parts(campaign)
    remaining = [unit for unit in claim_order(campaign) if unit.id not in done]
    fresh = [unit for unit in remaining if unit.id not in leases]
    released = [unit for unit in remaining if unit.id in leases and leases[unit.id].released]
    held = [unit for unit in remaining if unit.id in leases and not leases[unit.id].released]

    def next_generation(unit: Unit) -> int:
        return max(leases[unit.id].generation if unit.id in leases else -1, parts.get(unit.id, -1)) + 1

    for unit in fresh + released:
        lease = try_claim(campaign, unit, next_generation(unit), holder, seconds)
        if lease is not None:
            return lease, len(remaining)
    for unit in held:
        view = leases[unit.id]
        if now - MIN_LEASE_SECONDS <= view.mtime <= now:
            continue
        # Its holder and timeout, read only for claims old enough to have expired (one small file)
        _read(campaign, view, True)
        if view.expired(now):
            lease = try_claim(campaign, unit, next_generation(unit), holder, seconds)
            if lease is not None:
                age = view.age(now)
                who = f"{view.field('host') or '?'} pid {view.field('pid') or '?'}"
                log.warning(
                    "unit %s: the lease of %s was not renewed for %.0f s (timeout %.0f s); taking it over",
                    unit.id,
                    who,
                    age,
                    view.timeout,
                )
                return lease, len(remaining)
    return None, len(remaining)
