"""`hpcthreads campaign create|status|merge`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hpcthreads.campaign.store import DEFAULT_UNITS
from hpcthreads.errors import HPCThreadsError, message_of
from hpcthreads.shorthand import jobs_from, shorthand_options

# `campaign status` exit status when the campaign is not complete yet (0 when it is, 2 for bad input)
EXIT_INCOMPLETE = 1


def _fail(exc: HPCThreadsError) -> None:
    click.echo(f"hpcthreads: error: {message_of(exc)}", err=True)
    sys.exit(exc.exit_code)


@click.group()
def campaign() -> None:
    """A pool of work on a shared filesystem that any number of runs join and leave.

    \b
    hpcthreads campaign create DIR jobs.yaml --units 64    cut the jobs into units
    mpiexec -n 8 hpcthreads run --campaign DIR             join (any number, any time)
    hpcthreads campaign status DIR                         what is done, running, expired
    hpcthreads campaign merge DIR -o out.h5                one file, as one run would write

    A run claims a unit, runs it into DIR/parts, marks it done and claims the
    next. Its claim (lease) is renewed while it works; a unit whose lease is
    not renewed within the lease timeout (a killed job, a lost node) is taken
    over by another run, which resumes it from its ledger. DIR must be on a
    filesystem every run sees (NFS, Lustre, GPFS, a shared volume).
    """


@campaign.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("target")
@shorthand_options
@click.option(
    "--units",
    type=click.IntRange(min=1, max=1_000_000),
    default=DEFAULT_UNITS,
    show_default=True,
    help="Units per job (fewer where a job has fewer than this many batches).",
)
def create(directory: Path, target: str, units: int, name: str | None, **shorthand: Any) -> None:
    """Make the campaign DIRECTORY from TARGET: its jobs, validated as for `run`, cut into units.

    TARGET is a job file or a job type with the shorthand options, as for `run`:
    hpcthreads campaign create DIR verify --start 2**68 --count 1e12 --units 1000
    """
    from hpcthreads.campaign.store import create_campaign

    try:
        jobs, source = jobs_from(target, name, shorthand)
        made = create_campaign(directory, jobs, source, units)
    except HPCThreadsError as exc:
        _fail(exc)
    counts = [sum(u.job == i for u in made.units) for i in range(len(made.jobs))]
    per_job = ", ".join(f"{job.name}: {n}" for job, n in zip(made.jobs, counts))
    click.echo(f"campaign {directory}: {len(made.units)} unit(s) ({per_job})")


@campaign.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option(
    "--metrics-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write Prometheus metrics to DIR/hpcthreads_campaign.prom (units by state, active runs).",
)
def status(directory: Path, as_json: bool, metrics_dir: Path | None) -> None:
    """Units done / running / expired / free per job, who works now, recent rate and ETA.

    Exit status: 0 complete, 1 not complete yet, 2 not a campaign.
    """
    from hpcthreads.campaign.status import campaign_status, render_status, write_metrics

    try:
        report = campaign_status(directory)
        if metrics_dir is not None:
            write_metrics(report, metrics_dir)
    except HPCThreadsError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(HPCThreadsError(f"campaign {str(directory)!r}: {exc.strerror}: {exc.filename}"))
    click.echo(json.dumps(report, indent=1) if as_json else render_status(report))
    sys.exit(0 if report["complete"] else EXIT_INCOMPLETE)


@campaign.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The merged file."
)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def merge(directory: Path, output: Path, force: bool) -> None:
    """Join the parts of a complete campaign into OUTPUT, exactly as `hpcthreads merge` joins parts."""
    from hpcthreads.campaign.merge import merge_campaign

    try:
        jobs = merge_campaign(directory, output, force)
    except HPCThreadsError as exc:
        _fail(exc)
    click.echo(f"wrote {output} ({len(jobs)} job(s))", err=True)
