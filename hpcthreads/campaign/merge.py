"""`hpcthreads campaign merge DIR -o OUT`: the finished units' parts joined into one file, as `merge` does."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from hpcthreads.campaign.store import Campaign
from hpcthreads.config import Job, comparable
from hpcthreads.errors import ConfigError
from hpcthreads.io import schema
from hpcthreads.io.parts import ResultsPart
from hpcthreads.tools.merge import check_parts, claim_output, merged_job, write_merged


def merge_campaign(root: Path | str, output: Path, force: bool = False) -> list[Job]:
    """Write OUTPUT from every unit's part; refuses a campaign with a unit not done.

    OUTPUT may not be inside the campaign directory, even with `force`: it
    could replace a part, a record or the campaign file, or be taken for one.
    """
    campaign = Campaign.open(root)
    _refuse_inside(campaign.root, Path(output))
    done = campaign.done_ids()
    missing = [unit.id for unit in campaign.units if unit.id not in done]
    if missing:
        raise ConfigError(
            f"campaign {str(campaign.root)!r} is not complete: {len(missing)} of {len(campaign.units)} "
            f"unit(s) not done (first: {missing[0]}); see hpcthreads campaign status"
        )
    paths = {}
    for unit in campaign.units:
        record = campaign.done_record(unit.id) or {}
        path = campaign.folder("parts") / str(record.get("part", ""))
        if not record.get("part") or not path.is_file():
            raise ConfigError(
                f"campaign {str(campaign.root)!r}: unit {unit.id} is marked done but its part "
                f"{path.name or '(none named)'} is missing; remove done/{unit.id} to have it computed again"
            )
        paths[unit.id] = path
    with claim_output(Path(output), force, list(paths.values())), ExitStack() as stack:
        parts = {uid: stack.enter_context(ResultsPart(path)) for uid, path in paths.items()}
        try:
            check_parts(list(parts.values()))
        except ConfigError as exc:
            raise ConfigError(f"{exc}; remove its done/ marker to have the unit computed again") from None
        plans = []
        for index, job in enumerate(campaign.jobs):
            pieces = []
            for unit in (u for u in campaign.units if u.job == index):
                part = parts[unit.id]
                piece = next((j for j in part.jobs if j.name == job.name), None)
                if piece is None or len(part.jobs) != 1:
                    raise ConfigError(f"{part.path}: unit {unit.id} must hold job {job.name!r} alone")
                state = part.job_state(piece)
                if state != schema.STATE_COMPLETE:
                    raise ConfigError(f"{part.path}: job {job.name!r} is {state}, not complete")
                pieces.append((part, piece))
            merged, ordered = merged_job([(str(part.path), piece) for part, piece in pieces])
            if _key(merged) != _key(job):
                raise ConfigError(
                    f"campaign {str(campaign.root)!r}: the parts of job {job.name!r} do not add up to the job"
                )
            by_piece = {id(piece): part for part, piece in pieces}
            plans.append((job, [(by_piece[id(piece)], piece) for _, piece in ordered]))
        write_merged(Path(output), plans, list(parts.values()))
    return list(campaign.jobs)


def _refuse_inside(root: Path, output: Path) -> None:
    # Resolved through every link of the directories above it: OUTPUT itself need not exist yet
    where = output.parent.resolve() / output.name
    inside = Path(root).resolve()
    if where == inside or inside in where.parents:
        raise ConfigError(
            f"campaign merge: -o {str(output)!r} is inside the campaign directory {str(root)!r}; "
            "write the merged file elsewhere"
        )


def _key(job: Job) -> str:
    return json.dumps(comparable(job.to_dict()), sort_keys=True)
