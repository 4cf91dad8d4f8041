"""Command-line interface: parse, build the configuration, call the runtime."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from hpcthreads import __version__
from hpcthreads.campaign.cli import campaign as campaign_group
from hpcthreads.campaign.lease import DEFAULT_LEASE_SECONDS, MAX_LEASE_SECONDS, MIN_LEASE_SECONDS
from hpcthreads.config import JOB_TYPES, RunConfig
from hpcthreads.errors import (
    ConfigError,
    HPCThreadsError,
    Interrupted,
    OutputError,
    message_of,
    restore_signals,
    shown,
    stop_on_signals,
    stopped_line,
)
from hpcthreads.io.space import full_error, is_disk_full
from hpcthreads.runtime.topology import AUTO_MIN_RANKS
from hpcthreads.shorthand import jobs_from, shorthand_options


class SecondsType(click.ParamType):
    """A positive, finite number of seconds (or of items per second) within [low, high]."""

    name = "seconds"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{shown(value)} is not a number", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            self.fail(f"{shown(value)} is not a number from {self.low:g} to {self.high:g}", param, ctx)
        return number


class OutputFileType(click.ParamType):
    """A file to write: refused at once when empty or ending in '/' (a Path would drop the '/')."""

    name = "file"

    def convert(self, value: Any, param: Any, ctx: Any) -> Path:
        text = str(value)
        if not text.strip():
            self.fail("the path is empty", param, ctx)
        if text.endswith(os.sep):
            self.fail(f"{text!r} names a directory; give a file name", param, ctx)
        return Path(text)


OUTPUT_FILE = OutputFileType()


def _fail(exc: HPCThreadsError) -> None:
    from hpcthreads.runtime.finalize import leave_mpi_after_error
    from hpcthreads.runtime.mpiutil import launcher_rank

    # Every rank reaches the same verdict; one of them says it
    if launcher_rank() == 0:
        click.echo(f"hpcthreads: error: {message_of(exc)}", err=True)
    leave_mpi_after_error()
    sys.exit(exc.exit_code)


def _interrupted(signum: int) -> None:
    """End the command for a signal that came before it had anything to save: one line, 128 + signum.

    A run that has finished chunks stops through its own handlers instead, and
    exits 75 (resumable). Under mpiexec every rank got the signal: the run ends
    on all of them.
    """
    code = 128 + signum
    mpi = sys.modules.get("mpi4py.MPI")
    world = mpi.COMM_WORLD if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized() else None
    if world is None or world.Get_rank() == 0:
        click.echo(stopped_line(signum), err=True)
    if world is not None and world.Get_size() > 1:
        from hpcthreads.runtime.mpiutil import abort_world

        abort_world(world, code)
    sys.exit(code)


class _Main(click.Group):
    """The command group, which also turns signals and full disks met anywhere into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        # SIGTERM (a scheduler's stop, `kill`) unwinds as Ctrl-C does: temporary files are removed
        # (`python -m hpcthreads` has set them already; a caller in Python gets them here)
        previous = stop_on_signals()
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _interrupted(signal.SIGINT)
        except Interrupted as exc:
            _interrupted(exc.signum)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            if exc.filename:
                _fail(full_error(exc.filename))
            _fail(OutputError(f"no space left on the disk ({exc.strerror})"))
        finally:
            restore_signals(previous)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpcthreads")
def main() -> None:
    """Collatz (3n+1) range analysis, verification and thread trajectories, on one
    process or under mpiexec/srun, with results in one HDF5 file.

    \b
    Examples:
      hpcthreads run collatz --start 1 --count 1e6 -o out.h5
      hpcthreads run jobs.yaml -o out.h5
      hpcthreads inspect out.h5 --json
    """


main.add_command(campaign_group)


@main.command()
@click.argument("target", required=False)
@click.option(
    "-o",
    "--output",
    type=OUTPUT_FILE,
    default="hpcthreads.h5",
    show_default=True,
    help="HDF5 results file to write.",
)
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@shorthand_options
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    help="Compute backend: auto (a GPU backend on ranks with a device, else numba-cpu), numba-cpu, "
    "numba-cuda or cupy; or simulated (workers sleep for the time a chunk would take and compute "
    "nothing: for measuring coordination at scale).",
)
@click.option(
    "--device",
    default="local-rank",
    show_default=True,
    help="GPU per rank: local-rank (the node's workers take devices in order, the rest compute on CPUs), "
    "round-robin (workers share the devices), or N (every rank uses visible device N).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level (default: INFO on rank 0, WARNING on other ranks).",
)
@click.option(
    "--log-file",
    help="Log to this file instead of stderr; {rank}, {size} and {host} are replaced (a format spec "
    "such as {rank:04d} is allowed; {{ and }} stand for braces).",
)
@click.option(
    "--heartbeat-timeout",
    type=SecondsType(0.001, 1e7),
    default=120.0,
    show_default=True,
    help="Seconds of silence after which a worker holding work is declared dead.",
)
@click.option(
    "--startup-timeout",
    type=SecondsType(0.001, 1e7),
    default=600.0,
    show_default=True,
    help="Seconds a worker may take to start (loading MPI, compiling kernels on a cold cache).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Finish a stopped run of OUTPUT from its ledger (or start it if there is none).",
)
@click.option(
    "--io",
    "io_mode",
    type=click.Choice(["auto", "mpio", "gather"]),
    default="auto",
    show_default=True,
    help="HDF5 writing: mpio (every rank writes; needs h5py with MPI), gather (rank 0 writes), or auto.",
)
@click.option(
    "--checkpoint-interval",
    type=SecondsType(0.01, 1e7),
    default=30.0,
    show_default=True,
    help="Seconds between checkpoint snapshots of the ledger.",
)
@click.option(
    "--groups",
    default="auto",
    show_default=True,
    help="Sub-coordinators between rank 0 and the workers: none; node (one per node); K (one per K "
    "ranks); levels from the bottom such as node,4096 or 8,64; auto (one per node from "
    f"{AUTO_MIN_RANKS} ranks over several nodes, else none). A sub-coordinator computes nothing.",
)
@click.option(
    "--chunk-seconds",
    type=SecondsType(0.001, 3600),
    help="Seconds of work per chunk (default: 0.5, longer from about 1,000 workers per coordinator).",
)
@click.option(
    "--heartbeat-interval",
    type=SecondsType(0.01, 3600),
    help="Seconds between a busy worker's heartbeats (default: 1, longer on very large runs; "
    "at most a quarter of --heartbeat-timeout).",
)
@click.option(
    "--simulated-rate",
    type=SecondsType(1e-6, 1e18),
    default=1e9,
    show_default=True,
    help="With --backend simulated: items per second of one worker.",
)
@click.option(
    "--simulated-slow",
    default="",
    metavar="FRACTION:FACTOR",
    help="With --backend simulated: slow this fraction of the workers by this factor (0.2:4).",
)
@click.option("--quiet", is_flag=True, help="No progress display (errors are still reported).")
@click.option(
    "--progress-interval",
    type=SecondsType(0.01, 1e7),
    default=30.0,
    show_default=True,
    help="Seconds between progress lines when stderr is not a terminal (batch logs).",
)
@click.option(
    "--metrics-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write Prometheus metrics to DIR/hpcthreads-OUTPUT-ID.prom (node_exporter textfile collector).",
)
@click.option(
    "--campaign",
    "campaign_dir",
    type=click.Path(path_type=Path),
    help="Join the campaign in this directory (hpcthreads campaign create) instead of running TARGET: "
    "claim a unit, run it, repeat until none is left.",
)
@click.option(
    "--lease-timeout",
    type=SecondsType(MIN_LEASE_SECONDS, MAX_LEASE_SECONDS),
    default=DEFAULT_LEASE_SECONDS,
    show_default=True,
    help="With --campaign: seconds without renewal after which another run may take this run's unit.",
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="With --campaign: leave when no unit is free, instead of waiting for units held by other runs "
    "(to take them over should their holders stop renewing).",
)
@click.pass_context
def run(
    ctx: click.Context,
    target: str | None,
    output: Path,
    force: bool,
    name: str | None,
    backend: str,
    device: str,
    log_level: str | None,
    log_file: str | None,
    heartbeat_timeout: float,
    startup_timeout: float,
    resume: bool,
    io_mode: str,
    checkpoint_interval: float,
    quiet: bool,
    progress_interval: float,
    metrics_dir: Path | None,
    groups: str,
    chunk_seconds: float | None,
    heartbeat_interval: float | None,
    simulated_rate: float,
    simulated_slow: str,
    campaign_dir: Path | None,
    lease_timeout: float,
    no_wait: bool,
    **shorthand: Any,
) -> None:
    """Run the jobs of TARGET and write OUTPUT.

    TARGET is a job file (YAML or JSON, see docs/jobs.md) or a job type
    (collatz, verify, thread) for a one-job shorthand configured by the
    options marked "Shorthand".

    \b
    Under mpiexec or srun, rank 0 coordinates and the other ranks compute:
      mpiexec -n 8 hpcthreads run jobs.yaml -o out.h5
    While it runs, results go to OUTPUT.partial with a ledger beside it
    (OUTPUT.ledger, OUTPUT.checkpoint); the file is renamed to OUTPUT when no
    work is left. After a stop, a time limit or a crash, the same command with
    --resume computes only what is missing.

    \b
    With --campaign DIR instead of TARGET, the run joins a campaign (see
    `hpcthreads campaign --help`): any number of runs may work on one at once.

    \b
    Exit status: 0 done, 1 a job failed (the others completed), 2 bad input
    or an output problem (a full disk included), 75 stopped by
    SIGTERM/SIGINT/SIGUSR1 with finished chunks saved: resume me; 130/143
    stopped by SIGINT/SIGTERM before any chunk was saved (nothing left behind).
    """
    from hpcthreads.runtime.start import run as run_jobs

    try:
        _check_target(ctx, target, campaign_dir, name, shorthand)
        _check_combinations(ctx, backend)
        from hpcthreads.backends.simulated import parse_slow
        from hpcthreads.runtime.devices import parse_policy
        from hpcthreads.runtime.mpiutil import parse_log_file
        from hpcthreads.runtime.topology import parse_groups

        parse_policy(device)
        parse_groups(groups)
        if log_file:
            parse_log_file(log_file)
        if backend == "simulated":
            parse_slow(simulated_slow)
        jobs, source = jobs_from(target, name, shorthand) if target is not None else ((), "")
        config = RunConfig(
            jobs=jobs,
            output=output,
            source=source,
            job_path=None if target is None or target in JOB_TYPES else Path(target),
            force=force,
            backend=backend,
            device=device,
            log_level=log_level,
            log_file=log_file,
            heartbeat_timeout=heartbeat_timeout,
            startup_timeout=startup_timeout,
            io=io_mode,
            resume=resume,
            checkpoint_interval=checkpoint_interval,
            quiet=quiet,
            progress_interval=progress_interval,
            metrics_dir=metrics_dir,
            groups=groups,
            chunk_seconds=chunk_seconds,
            heartbeat_interval=heartbeat_interval,
            simulated_rate=simulated_rate,
            simulated_slow=simulated_slow,
        )
        if campaign_dir is not None:
            from hpcthreads.campaign.runner import run_campaign

            result = run_campaign(campaign_dir, config, lease_timeout, wait=not no_wait)
        else:
            result = run_jobs(config)
    except HPCThreadsError as exc:
        _fail(exc)
    if result.rank == 0 and result.message:
        click.echo(result.message, err=True)
    elif result.rank == 0:
        click.echo(
            f"wrote {output} ({len(result.summaries)} job(s), {result.size} rank(s), "
            f"{result.wall_seconds:.2f} s)",
            err=True,
        )
    if result.size > 1:
        from hpcthreads.runtime.finalize import leave_mpi

        leave_mpi(result.rank, result.size)


def _check_target(
    ctx: click.Context, target: str | None, campaign: Path | None, name: str | None, shorthand: dict[str, Any]
) -> None:
    """TARGET or --campaign, not both; the options that only one of them takes."""
    from click.core import ParameterSource

    if campaign is None:
        if target is None:
            raise ConfigError("give a job file or a job type (collatz, verify, thread), or --campaign DIR")
        for option in ("lease_timeout", "no_wait"):
            if ctx.get_parameter_source(option) == ParameterSource.COMMANDLINE:
                raise ConfigError(f"--{option.replace('_', '-')} is for --campaign")
        return
    if target is not None:
        raise ConfigError("give either TARGET or --campaign DIR: a campaign holds its own jobs")
    if name or any(value is not None for value in shorthand.values()):
        raise ConfigError("the one-job shorthand options do not apply to --campaign: its jobs are in DIR")
    for option in ("output", "resume", "force"):
        if ctx.get_parameter_source(option) == ParameterSource.COMMANDLINE:
            raise ConfigError(f"--{option} does not apply to --campaign: each unit's part is in DIR/parts")


def _check_combinations(ctx: click.Context, backend: str) -> None:
    """Options given with another that makes them do nothing (RunConfig checks the values that clash)."""
    from click.core import ParameterSource

    def given(option: str) -> bool:
        return ctx.get_parameter_source(option) == ParameterSource.COMMANDLINE

    for option in ("simulated_rate", "simulated_slow"):
        if given(option) and backend != "simulated":
            raise ConfigError(f"--{option.replace('_', '-')} is for --backend simulated (not {backend})")


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON with exact integers.")
def inspect(path: Path, as_json: bool) -> None:
    """Summarise a results file: jobs, counts, maxima and records."""
    from hpcthreads.io.reader import read_results
    from hpcthreads.tools.inspection import format_summary

    try:
        results = read_results(path)
    except HPCThreadsError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(results, indent=1))
    else:
        click.echo(format_summary(results))


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
def check(path: Path) -> None:
    """Verify a results file's checksums: every chunk's per-item data and every job's summary.

    \b
    Exit status: 0 intact, 1 damaged (the job and the range of items are
    named), 2 not a readable results file.
    """
    from hpcthreads.tools.check import check_file

    try:
        report = check_file(path)
    except HPCThreadsError as exc:
        _fail(exc)
    click.echo(report.text())
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(output: Path, as_json: bool) -> None:
    """Progress of a run of OUTPUT, running, stopped or done: per job done/total.

    Reads OUTPUT's ledger (OUTPUT.checkpoint and OUTPUT.ledger) while a run is
    running (OUTPUT.lock is held) or stopped, and OUTPUT itself once it is complete. Exit status
    0 when the run is complete, 3 when work remains.
    """
    from hpcthreads.tools.status import format_status, run_status

    try:
        report = run_status(output)
    except HPCThreadsError as exc:
        _fail(exc)
    click.echo(json.dumps(report, indent=1) if as_json else format_status(report))
    sys.exit(0 if report["complete"] else 3)


@main.command()
@click.argument("output", type=OUTPUT_FILE)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def merge(output: Path, inputs: tuple[Path, ...], force: bool) -> None:
    """Merge results files of adjacent ranges (a job-array campaign) into OUTPUT.

    \b
    Every input must be complete and hold the same jobs with the same
    parameters except start and count; their ranges must tile one range
    without gaps or overlaps. Records, histograms and maxima combine exactly
    as if one run had covered the union:
      hpcthreads merge all.h5 part-0.h5 part-1.h5 part-2.h5
    """
    from hpcthreads.tools.merge import merge_files

    try:
        jobs = merge_files(output, list(inputs), force)
    except HPCThreadsError as exc:
        _fail(exc)
    ranges = ", ".join(f"{job.name} {job.start}..{job.start + job.size - 1}" for job in jobs)
    click.echo(f"wrote {output} from {len(inputs)} file(s): {ranges}", err=True)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the figures (default: PATH's name with _report).",
)
@click.option("--html", "with_html", is_flag=True, help="Also write one self-contained HTML page.")
@click.option("--force", is_flag=True, help="Overwrite files of the same names in the folder.")
def report(path: Path, folder: Path | None, with_html: bool, force: bool) -> None:
    """Summary, records and per-rank load of a results file, with PNG figures.

    Figures: delay histogram and records (collatz jobs), the merged tree of
    thread paths (thread jobs), the per-rank timeline of chunks (steals
    outlined in red) and per-rank throughput.
    """
    from hpcthreads.tools.report import build_report

    folder = folder or path.with_name(path.stem + "_report")
    try:
        result = build_report(path, folder, with_html, force)
    except HPCThreadsError as exc:
        _fail(exc)
    click.echo(result.text)
    for figure in result.figures + ([result.html] if result.html else []):
        click.echo(f"wrote {figure}")


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--csv", "csv_dir", type=click.Path(file_okay=False, path_type=Path), help="Write CSV files here."
)
@click.option(
    "--parquet",
    "parquet_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write Parquet files here (needs pyarrow).",
)
@click.option("--job", "jobs", multiple=True, help="Export only this job (repeatable).")
@click.option("--force", is_flag=True, help="Overwrite files of the same names in the folder.")
def export(
    path: Path, csv_dir: Path | None, parquet_dir: Path | None, jobs: tuple[str, ...], force: bool
) -> None:
    """Records, histograms, per-item arrays and exact overflow values of a results file as CSV or
    Parquet (one file per table: DIR/JOB-TABLE.csv). Values beyond 64 bits are decimal text.
    Only complete jobs are exported."""
    from hpcthreads.tools.export import export as export_tables

    if (csv_dir is None) == (parquet_dir is None):
        _fail(ConfigError("give exactly one of --csv DIR or --parquet DIR"))
    try:
        written = export_tables(
            path, csv_dir or parquet_dir, "csv" if csv_dir else "parquet", list(jobs) or None, force
        )
    except KeyError as exc:
        _fail(ConfigError(str(exc.args[0])))
    except HPCThreadsError as exc:
        _fail(exc)
    for item in written:
        click.echo(f"wrote {item}")


@main.command()
@click.option("--device", default="local-rank", show_default=True, help="Device policy, as for `run`.")
@click.option(
    "--ranks",
    type=click.IntRange(min=1, max=1 << 20),
    help="Ranks on this node to place (default: the launcher's, else one per GPU + 1).",
)
@click.option(
    "--warm-up",
    is_flag=True,
    help="Also compile the CPU kernels into the cache and build the default tables, as a first run "
    "would on every rank (about 30 s once; for container images and shared installs).",
)
@click.option(
    "--arch",
    "arches",
    metavar="LIST",
    help="Also compile the cupy backend's kernels into CuPy's kernel cache (CUPY_CACHE_DIR) for these "
    "GPU architectures, e.g. sm_80,sm_90; needs CuPy and NVRTC, not a GPU.",
)
def info(device: str, ranks: int | None, warm_up: bool, arches: str | None) -> None:
    """Print the versions of Python, MPI, h5py and Numba, the backends available here, and the
    device and backend each rank on this node would use."""
    from hpcthreads.runtime.placement import placement_report
    from hpcthreads.tools.inspection import environment_report, warm_up_caches, warm_up_cupy

    try:
        targets = None
        if arches is not None:
            from hpcthreads.backends.cupycache import checked_arches

            # Refused before anything slow runs: a bad list, or no CuPy and NVRTC to compile with
            targets = checked_arches(arches)
        click.echo(environment_report())
        click.echo(placement_report(device, ranks))
        if warm_up:
            click.echo(warm_up_caches())
        if targets:
            click.echo(warm_up_cupy(targets))
    except HPCThreadsError as exc:
        _fail(exc)
