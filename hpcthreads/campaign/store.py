"""The campaign directory: its jobs, their units, and where every unit's files go.

Layout (every name is made with an operation that is atomic on NFS and
parallel filesystems: create with O_EXCL, `link`, `rename`):

    DIR/campaign.json        the jobs (canonical JSON), the units, the version that made it
    DIR/leases/UNIT.gGEN     a claim of UNIT, generation GEN (the holder, renewed by its mtime)
    DIR/leases/UNIT.gGEN.released   the holder stopped cleanly: its part may be taken at once
    DIR/parts/UNIT.gGEN.h5   the results of UNIT computed under that claim (with ledger and partial)
    DIR/done/UNIT            which part holds UNIT's finished results (made once, with link)
    DIR/holders/ID.json      one file per joined run: who, where, what it holds (its heartbeat)
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hpcthreads import __version__
from hpcthreads.campaign.records import DamagedRecord, is_count, mapping, number, read_record
from hpcthreads.config import Job, make_job
from hpcthreads.errors import ConfigError, OutputError, shown
from hpcthreads.io.safewrite import temporary_beside
from hpcthreads.io.space import full_error, is_disk_full

log = logging.getLogger("hpcthreads")

CAMPAIGN_FILE = "campaign.json"
FORMAT = 1
# Each job is cut into about this many units unless told otherwise
DEFAULT_UNITS = 64
FOLDERS = ("leases", "parts", "done", "holders")
UNIT_PATTERN = re.compile(r"u\d{6,}")
# The campaign file lists every unit: about 80 bytes each, for up to millions of units
MAX_CAMPAIGN_BYTES = 1 << 30


@dataclass(frozen=True)
class Unit:
    """Items offset..offset+count-1 (from the job's first item) of job number `job`."""

    id: str
    job: int
    offset: int
    count: int


def unit_id(index: int) -> str:
    """The id of the campaign's unit number INDEX: the only form a unit id takes (never a path)."""
    return f"u{index:06d}"


def min_unit(job: Job) -> int:
    """The smallest unit of a job: one batch (a unit smaller than a chunk only adds overhead)."""
    return job.batch_size


def split(jobs: tuple[Job, ...], units_per_job: int) -> list[Unit]:
    """Each job into about `units_per_job` units of nearly equal size, none under `min_unit`."""
    out: list[Unit] = []
    for index, job in enumerate(jobs):
        parts = max(1, min(units_per_job, job.size // min_unit(job)))
        size, extra = divmod(job.size, parts)
        offset = 0
        for k in range(parts):
            count = size + (k < extra)
            out.append(Unit(unit_id(len(out)), index, offset, count))
            offset += count
    return out


class Campaign:
    """An existing campaign directory, checked."""

    def __init__(self, root: Path, document: dict[str, Any]) -> None:
        self.root = Path(root)
        self.document = document
        self.source: str = document["source"]
        self.config: str = document["config"]
        self.version: str = document["hpcthreads_version"]
        self.jobs = tuple(make_job(entry, i) for i, entry in enumerate(json.loads(self.config)["jobs"]))
        if not self.jobs or not isinstance(self.source, str):
            raise ValueError("it holds no jobs")
        self.units = check_units(document["units"], self.jobs)
        self.by_id = {unit.id: unit for unit in self.units}

    @classmethod
    def open(cls, root: Path | str, repair: bool = False) -> Campaign:
        """Read DIR/campaign.json; ConfigError for anything that is not a campaign of this version.

        A missing folder (leases/, parts/, done/ or holders/) is an error, or
        with `repair` (a run joining) is made again.
        """
        root = Path(root)
        path = root / CAMPAIGN_FILE
        if not root.is_dir():
            raise ConfigError(f"campaign {str(root)!r}: no such directory")
        if not os.path.lexists(path):
            raise ConfigError(
                f"{str(root)!r} is not a campaign (it has no {CAMPAIGN_FILE}); "
                "make one with: hpcthreads campaign create DIR JOBFILE"
            )
        try:
            document = mapping(read_record(path, MAX_CAMPAIGN_BYTES), "its content")
            fmt, version = document["format"], document["hpcthreads_version"]
        except DamagedRecord as exc:
            raise ConfigError(f"{path}: damaged campaign file: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: unreadable campaign file ({exc.strerror})") from None
        except KeyError as exc:
            raise ConfigError(f"{path}: damaged campaign file: no {exc}") from None
        if fmt != FORMAT or version != __version__:
            raise ConfigError(
                f"campaign {str(root)!r} was created by hpcthreads {_plain(version)} (format {_plain(fmt)}); "
                f"this is {__version__} (format {FORMAT}): finish it with the version that created it, "
                "so that every unit is computed the same way"
            )
        try:
            campaign = cls(root, document)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, ConfigError) as exc:
            raise ConfigError(f"{path}: inconsistent campaign file ({exc})") from None
        if repair:
            campaign.make_folders()
        for folder in FOLDERS:
            if not (root / folder).is_dir():
                raise ConfigError(
                    f"campaign {str(root)!r}: its folder {folder}/ is missing (a run joining makes it again)"
                )
        return campaign

    def make_folders(self) -> None:
        """Make again any of the campaign's folders that was removed; logged, as it loses records."""
        for folder in FOLDERS:
            path = self.root / folder
            if path.is_dir():
                continue
            try:
                path.mkdir()
            except FileExistsError:
                if path.is_dir():
                    continue  # made this instant by another thread or run
                raise OutputError(f"campaign {str(self.root)!r}: {folder} is not a folder") from None
            except OSError as exc:
                raise OutputError(
                    f"campaign {str(self.root)!r}: cannot make {folder}/ ({exc.strerror})"
                ) from None
            log.warning("campaign %s: its folder %s/ was missing; made it again", self.root, folder)

    # Where things are

    def folder(self, name: str) -> Path:
        return self.root / name

    def part_path(self, unit: Unit | str, generation: int) -> Path:
        unit_id = unit if isinstance(unit, str) else unit.id
        return self.root / "parts" / f"{unit_id}.g{generation:04d}.h5"

    def unit_job(self, unit: Unit) -> Job:
        """The unit's job: its parent job over the unit's range, with every other parameter as it is."""
        job = self.jobs[unit.job]
        params = {**job.params, "start": job.start + unit.offset}
        params["thread_count" if job.type == "thread" else "count"] = unit.count
        return replace(job, params=params)

    def done_record(self, unit_id: str) -> dict[str, Any] | None:
        """What done/UNIT says (the part holding the unit's results), or None while it is not done.

        OutputError, naming the marker and what to do, when it is not a record this unit's run wrote.
        """
        path = self.root / "done" / unit_id
        try:
            record = check_done(mapping(read_record(path), "it"), self.by_id[unit_id])
        except FileNotFoundError:
            return None
        except (DamagedRecord, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise OutputError(
                f"{path}: damaged done marker ({why}); remove it to have unit {unit_id} computed again"
            ) from None
        return record

    def done_ids(self) -> set[str]:
        """The units marked done (names in done/ that are no unit of the campaign are not counted)."""
        return {name for name in os.listdir(self.root / "done") if name in self.by_id}


def _plain(value: Any) -> str:
    """A short text as it is; anything else as `shown` quotes it."""
    return value if isinstance(value, str) and len(value) <= 40 and value.isprintable() else shown(value)


def check_units(entries: Any, jobs: tuple[Job, ...]) -> list[Unit]:
    """The units of a campaign file: ids u000000, u000001, ... in order, tiling each job exactly."""
    if not isinstance(entries, list):
        raise ValueError("its units are not a list")
    units, ends = [], [0] * len(jobs)
    for index, entry in enumerate(entries):
        expected = unit_id(index)
        if not isinstance(entry, dict) or entry.get("id") != expected:
            found = shown(entry.get("id")) if isinstance(entry, dict) else "no record"
            raise ValueError(f"unit #{index}: its id is {found}, not {expected!r}")
        job, offset, count = entry.get("job"), entry.get("offset"), entry.get("count")
        if not is_count(job) or job >= len(jobs):
            raise ValueError(f"unit {expected}: job index {shown(job)} is not one of 0..{len(jobs) - 1}")
        if not is_count(count, 1) or not is_count(offset) or offset != ends[job]:
            raise ValueError(f"unit {expected}: its range does not follow the previous unit of its job")
        ends[job] += count
        units.append(Unit(expected, job, offset, count))
    for job, end in zip(jobs, ends):
        if end != job.size:
            raise ValueError(f"the units of job {job.name!r} cover {end:,} of its {job.size:,} items")
    return units


def check_done(record: dict[str, Any], unit: Unit) -> dict[str, Any]:
    """A done marker's record: the unit's part it names, and, where it says them, its time and items."""
    part = record.get("part")
    if not isinstance(part, str) or not re.fullmatch(rf"{unit.id}\.g\d{{4,}}\.h5", part):
        raise DamagedRecord(f"its part {shown(part)} is not one of this unit's parts")
    if "finished" in record and number(record["finished"]) is None:
        raise DamagedRecord(f"its finishing time {shown(record['finished'])} is not a number")
    if "items" in record and (not is_count(record["items"]) or record["items"] != unit.count):
        raise DamagedRecord(f"it says {shown(record['items'])} items; the unit has {unit.count:,}")
    return record


def create_campaign(
    root: Path | str, jobs: tuple[Job, ...], source: str, units_per_job: int = DEFAULT_UNITS
) -> Campaign:
    """Make a campaign directory for validated jobs (`source`: the job file's text, kept with them)."""
    root = Path(root)
    if units_per_job < 1:
        raise ConfigError("--units must be at least 1")
    if (root / CAMPAIGN_FILE).exists():
        raise ConfigError(f"{str(root)!r} is already a campaign; give a new directory")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{str(root)!r} exists and is not a directory")
    if root.is_dir() and any(name not in FOLDERS for name in os.listdir(root)):
        raise ConfigError(f"{str(root)!r} is not empty; a campaign needs a directory of its own")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for folder in FOLDERS:
            (root / folder).mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make the campaign directory {str(root)!r}: {exc.strerror}") from None
    units = split(jobs, units_per_job)
    document = {
        "format": FORMAT,
        "hpcthreads_version": __version__,
        "created": time.time(),
        "created_on": socket.gethostname(),
        "source": source,
        "config": json.dumps({"jobs": [job.to_dict() for job in jobs]}, sort_keys=True),
        "units": [{"id": u.id, "job": u.job, "offset": u.offset, "count": u.count} for u in units],
    }
    # Written whole under a private name, then linked into place: two creators cannot both succeed
    try:
        made = publish(root / CAMPAIGN_FILE, json.dumps(document, indent=1))
    except OSError as exc:
        if is_disk_full(exc):
            hint = "no campaign was made: make room, then create it again"
            raise full_error(root / CAMPAIGN_FILE, then=hint) from None
        raise OutputError(f"cannot write {root / CAMPAIGN_FILE} ({exc.strerror})") from None
    if not made:
        raise ConfigError(f"{str(root)!r} is already a campaign (made at the same time by another process)")
    return Campaign(root, document)


def publish(path: Path, text: str) -> bool:
    """Write `text` to `path` only if `path` does not exist, atomically (write, fsync, link).

    False when another process made `path` first. `link` is atomic and
    exclusive on local filesystems, NFS and parallel filesystems alike.
    """
    # An unpredictable private name, made exclusively: a link planted at a name derived from the
    # host and pid (both published in holders/) would have been written through
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
