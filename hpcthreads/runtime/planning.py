"""Deciding, on rank 0 before any work, what a run does with its output.

A fresh run, the resumption of a stopped one, or nothing (already complete);
gather or mpio writing. Every refusal is a one-line error naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpcthreads.config import RunConfig, comparable
from hpcthreads.errors import ConfigError, OutputError
from hpcthreads.io import schema
from hpcthreads.runtime import ledger

IO_MODES = ("auto", "mpio", "gather")


@dataclass
class Plan:
    output: Path
    partial: Path
    io: str
    fresh: bool = True
    complete: bool = False
    state: ledger.LedgerState | None = None


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def choose_io(requested: str, size: int) -> str:
    from hpcthreads.io.writer import mpi_available

    if requested not in IO_MODES:
        raise ConfigError(f"--io: {requested!r} is not one of {', '.join(IO_MODES)}")
    has_mpi = mpi_available()
    if requested == "mpio" and not has_mpi:
        raise ConfigError(
            "--io mpio: this h5py was built without MPI; build one with scripts/install-parallel-h5py.sh "
            "or use --io gather"
        )
    if requested == "auto":
        return "mpio" if has_mpi and size > 1 else "gather"
    return requested


def make_plan(config: RunConfig, size: int) -> Plan:
    from hpcthreads.backends import backend_class
    from hpcthreads.io.paths import check_output_path
    from hpcthreads.io.safewrite import refuse_link

    if config.backend != "auto":
        backend_class(config.backend)  # an unknown name is refused before any file is made
    output = Path(config.output)
    plan = Plan(output, partial_path(output), choose_io(config.io, size))
    # A link at one of the run's own files is someone else's doing: neither read as a stopped run,
    # nor removed by --force, nor written through
    for path, what in zip((plan.partial, *ledger.paths(output)), ("partial file", "ledger", "checkpoint")):
        refuse_link(path, what)
    if output.exists() and ledger.exists(output) and not plan.partial.exists():
        # A run that was killed between renaming its file and removing its ledger is complete
        ledger.remove(output)
    stopped = plan.partial.exists() or ledger.exists(output)
    if stopped and not ledger.records_work(output):
        # A run stopped (or killed) before its first chunk ended left nothing to resume: no
        # "stopped run" blocks this one (the output's lock, held here, says no run writes them)
        plan.partial.unlink(missing_ok=True)
        ledger.remove(output)
        stopped = False
    if config.resume and stopped:
        plan.state = _resumable_state(config, plan)
        plan.fresh = plan.state is None
        if plan.fresh:
            plan.partial.unlink(missing_ok=True)
        return plan
    if config.resume and output.exists():
        _check_same_jobs(config, _file_config(output), output)
        plan.complete = True
        return plan
    if stopped:
        if not config.force:
            raise OutputError(
                f"a stopped run of {output} exists ({plan.partial.name}); "
                "use --resume to finish it or --force to start again"
            )
        plan.partial.unlink(missing_ok=True)
        ledger.remove(output)
    check_output_path(output, config.force, [config.job_path] if config.job_path else [])
    check_space(config, output)
    return plan


def check_space(config: RunConfig, output: Path) -> None:
    """Refuse a run whose per-item datasets (allocated when the file is made) and reserve cannot fit."""
    from hpcthreads.io.space import check_room, dataset_bytes, reserve_size
    from hpcthreads.workloads import make_workload

    data = dataset_bytes(make_workload(job) for job in config.jobs)
    what = "the per-item data of its jobs, with room to finish," if data else "room to finish the run"
    check_room(output, data + reserve_size(len(config.jobs)), what)


def _resumable_state(config: RunConfig, plan: Plan) -> ledger.LedgerState | None:
    """The ledger of a stopped run, checked against the jobs and the partial file."""
    _, checkpoint = ledger.paths(plan.output)
    if not checkpoint.exists():
        # Stopped before its first checkpoint: nothing was done, start again
        return None
    if not plan.partial.exists():
        raise OutputError(
            f"cannot resume {plan.output}: its ledger exists but {plan.partial.name} is missing"
        )
    from hpcthreads.workloads import make_workload, plain_merger

    workloads = [make_workload(job) for job in config.jobs]
    try:
        state = ledger.load(plan.output, plain_merger(workloads))
        _check_same_jobs(config, state.config, plan.output)
        _check_consistent(state, workloads)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OutputError(
            f"cannot resume {plan.output}: its ledger is unreadable or inconsistent "
            f"({exc.__class__.__name__}: {str(exc)[:200]}); the files are left as they are"
        ) from None
    _check_same_jobs(config, _file_config(plan.partial), plan.partial)
    _verify_data(state, plan.partial)
    if bool(_file_attr(plan.partial, "simulated")) != (config.backend == "simulated"):
        raise ConfigError(
            f"cannot resume {plan.partial}: a run of --backend simulated (which computes nothing) and "
            "a computing run cannot finish each other; use --force to start again"
        )
    return state


def _check_consistent(state: ledger.LedgerState, workloads: list) -> None:
    """ValueError unless every recorded range lies in its job and every summary reads and counts it."""
    by_name = {w.job.name: w for w in workloads}
    for name, ranges in state.done.items():
        if name not in by_name:
            raise ValueError(f"it records work of job {name!r}, which the job file does not have")
        size = by_name[name].job.size
        spans = ranges.spans
        if spans and (spans[0][0] < 0 or spans[-1][1] > size):
            raise ValueError(f"job {name!r} has {size} items, but the ledger records {spans[0]}..{spans[-1]}")
        summary = by_name[name].summary_from_plain(state.summaries[name])
        if summary.count != ranges.covered():
            raise ValueError(
                f"job {name!r}: the summary counts {summary.count} items, the ranges {ranges.covered()}"
            )
    for name, tables in state.extra.items():
        for table, rows in tables.items():
            if not all(isinstance(v, int) for row in rows for v in row):
                raise ValueError(f"job {name!r}: its {table} rows are not integers")


def _verify_data(state: ledger.LedgerState, partial: Path) -> None:
    """The finished chunks' data in the partial file must be what was computed: it is reused as it is."""
    from hpcthreads.io.digest import verify_rows
    from hpcthreads.io.reader import open_results

    with open_results(partial) as handle:
        for name, rows in state.digests.items():
            bad, _ = verify_rows(handle[schema.job_path(name)], rows)
            if bad:
                offset, count = bad[0]
                where = f"job {name!r}, items {offset}..{offset + count - 1} from the job's start"
                raise OutputError(
                    f"cannot resume {partial}: the data of {where} was changed after it was written "
                    f"({len(bad)} chunk(s) in all); the files are left as they are: start again with --force"
                )


def _file_config(path: Path) -> str:
    return str(_file_attr(path, "config") or "")


def _file_attr(path: Path, name: str) -> object:
    from hpcthreads.io.reader import open_results

    try:
        with open_results(path) as handle:
            value = handle.attrs.get(name)
            return value.item() if hasattr(value, "item") else value
    except OutputError as exc:
        raise OutputError(f"cannot resume: {exc}; the file is left as it is") from None


def _check_same_jobs(config: RunConfig, recorded: str, path: Path) -> None:
    """Refuse a file written for other jobs, naming the first job that differs."""
    if recorded == config.jobs_json():
        return
    try:
        theirs = {job["name"]: job for job in json.loads(recorded)["jobs"]}
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"cannot resume {path}: it records no job configuration") from None
    ours = {job.name: job.to_dict() for job in config.jobs}
    names = list(ours) + [n for n in theirs if n not in ours]

    def key(job: dict | None) -> str:
        return json.dumps(comparable(job) if job is not None else None, sort_keys=True)

    for name in names:
        if key(ours.get(name)) != key(theirs.get(name)):
            raise ConfigError(
                f"cannot resume {path}: it was started with a different job file (job {name!r} differs); "
                "use --force to start again"
            )
    if list(theirs) == list(ours):
        return  # the same jobs, in the same order, but for settings that change no result
    raise ConfigError(f"cannot resume {path}: it was started with a different job file (job order differs)")
