"""`hpcthreads merge`: the results of adjacent ranges combined as if one run had covered them.

A job-array campaign splits one range into parts, one results file each.
Merging checks that every part holds the same jobs with the same
result-relevant parameters over ranges that tile the union without gaps or
overlaps, then combines summaries with the workloads' own `merge` (exact
records, histograms and maxima) and copies per-item data into place.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from hpcthreads import __version__
from hpcthreads.config import PARAMETERS, SPEED_ONLY_PARAMETERS, Job, make_job
from hpcthreads.errors import ConfigError, OutputError
from hpcthreads.io import schema
from hpcthreads.io.digest import data_digest
from hpcthreads.io.parts import ResultsPart
from hpcthreads.io.paths import PARTIAL_SUFFIX, check_output_path, replace_output
from hpcthreads.io.safewrite import refuse_link, temporary_beside
from hpcthreads.io.space import check_room, dataset_bytes, full_error, is_disk_full, reserve_size
from hpcthreads.io.writer import Finish, JobEnd, SerialWriter, layout_attrs
from hpcthreads.tools.check import check_file
from hpcthreads.workloads import make_workload
from hpcthreads.workloads.base import ChunkOutput

# Parameters that only shape the work, not its results: parts may differ in them. A verify part
# cut by residue takes what lies below its own start as verified (verified_below): merged, a value it
# skipped for that is beaten by its predecessor in an earlier part
# What a merge that met a full disk tells its user
MERGE_HINT = "nothing was written: make room, then merge again"
WORK_SHAPE = {"start", "count", "thread_count", "batch_size", "sieve_slice_bits", "verified_below"}
WORK_SHAPE |= SPEED_ONLY_PARAMETERS

Piece = tuple[str, Job]
# A merged job and its (part, job) pieces in order of start
Plan = tuple[Job, list[tuple[ResultsPart, Job]]]


def merged_job(pieces: Sequence[Piece]) -> tuple[Job, list[Piece]]:
    """The job over the union of the pieces' ranges, and the pieces in order of start.

    Refuses pieces of different types or result-relevant parameters, and
    ranges that overlap or leave a gap.
    """
    first_label, first = pieces[0]
    for label, job in pieces[1:]:
        if job.type != first.type:
            raise ConfigError(
                f"job {job.name!r}: {label} is a {job.type} job but {first_label} is a {first.type} job; "
                "only parts of the same job type merge"
            )
        for key in sorted(set(PARAMETERS[job.type]) - WORK_SHAPE):
            if job.params[key] != first.params[key]:
                raise ConfigError(
                    f"job {job.name!r}: {key} is {job.params[key]!r} in {label} but "
                    f"{first.params[key]!r} in {first_label}; parts must compute the same thing"
                )
    ordered = sorted(pieces, key=lambda piece: piece[1].start)
    for (label_a, a), (label_b, b) in zip(ordered, ordered[1:]):
        end = a.start + a.size
        if b.start < end:
            raise ConfigError(
                f"job {a.name!r}: ranges overlap: {label_a} covers {a.start}..{end - 1} and "
                f"{label_b} starts at {b.start}"
            )
        if b.start > end:
            raise ConfigError(
                f"job {a.name!r}: ranges are not adjacent: nothing covers {end}..{b.start - 1} "
                f"(between {label_a} and {label_b})"
            )
    start = ordered[0][1]
    params = {**start.params, "start": start.start}
    params["thread_count" if start.type == "thread" else "count"] = sum(job.size for _, job in ordered)
    if start.type == "verify":
        # The union's assumption is its first part's; its cut, what a run of the union would take
        params["verified_below"] = min(job.params["verified_below"] for _, job in ordered)
        params["sieve_slice_bits"] = "auto"
    entry = {"name": start.name, "type": start.type, "priority": start.priority}
    entry.update(gpu_preferred=start.gpu_preferred, parameters=params)
    return make_job(entry, 0), ordered


def plan_merge(parts: Sequence[ResultsPart]) -> list[Plan]:
    """Check the parts and pair each merged job with its (part, job) pieces in order."""
    names = [job.name for job in parts[0].jobs]
    plans = []
    for part in parts:
        theirs = [job.name for job in part.jobs]
        if sorted(theirs) != sorted(names):
            raise ConfigError(
                f"{part.path} holds jobs {', '.join(theirs)} but {parts[0].path} holds {', '.join(names)}; "
                "parts must hold the same jobs"
            )
        for job in part.jobs:
            state = part.job_state(job)
            if state != schema.STATE_COMPLETE:
                raise ConfigError(
                    f"{part.path}: job {job.name!r} is {state}, not complete; "
                    "finish it (hpcthreads run ... --resume) before merging"
                )
    for name in names:
        found = [(part, next(job for job in part.jobs if job.name == name)) for part in parts]
        job, ordered = merged_job([(str(part.path), job) for part, job in found])
        # Back from (label, job) to (part, job): jobs are distinct objects per part
        by_job = {id(job): part for part, job in found}
        plans.append((job, [(by_job[id(piece)], piece) for _, piece in ordered]))
    return plans


def merge_files(output: Path, inputs: Sequence[Path], force: bool = False) -> list[Job]:
    """Write OUTPUT from the results files INPUTS; returns the merged jobs."""
    if not inputs:
        raise ConfigError("merge: give at least one input file")
    with claim_output(Path(output), force, inputs), ExitStack() as stack:
        parts = [stack.enter_context(ResultsPart(path)) for path in inputs]
        check_parts(parts)
        plans = plan_merge(parts)
        write_merged(Path(output), plans, parts)
    return [job for job, _ in plans]


@contextmanager
def claim_output(output: Path, force: bool, inputs: Sequence[Path]) -> Iterator[None]:
    """Hold OUTPUT as `run` would before anything is written: its lock, and no stopped run under it.

    Refused, as by `run`: a path that is not a regular file (a link, a device,
    one of `inputs`), an existing file without `force`, a run that is writing
    OUTPUT (its lock), and a stopped run of OUTPUT without `force` (with it,
    the stopped run's files are removed, as `run --force` does).
    """
    from hpcthreads.runtime import ledger
    from hpcthreads.runtime.outputlock import OutputLock

    check_output_path(output, force, inputs)
    partial = output.with_name(output.name + PARTIAL_SUFFIX)
    for path, what in zip((partial, *ledger.paths(output)), ("partial file", "ledger", "checkpoint")):
        refuse_link(path, what)
    lock = OutputLock(output)
    lock.acquire()
    try:
        if partial.exists() or ledger.exists(output):
            if not force:
                raise OutputError(
                    f"a stopped run of {output} exists ({partial.name}); finish it with run --resume, "
                    "or merge with --force to discard it"
                )
            partial.unlink(missing_ok=True)
            ledger.remove(output)
        yield
    finally:
        lock.release()


def check_parts(parts: Sequence[ResultsPart]) -> None:
    """Refuse parts that hold no results or whose data or checksums do not match."""
    for part in parts:
        if "simulated" in part.run:
            raise ConfigError(f"merge: {str(part.path)!r} holds no results (a run of --backend simulated)")
        report = check_file(part.path)
        if not report.ok:
            problem = report.problems[0]
            raise ConfigError(f"merge: {str(part.path)!r} is damaged: {problem} (hpcthreads check)")


def write_merged(output: Path, plans: Sequence[Plan], parts: Sequence[ResultsPart]) -> None:
    """Write the planned jobs into OUTPUT (through a temporary file beside it, renamed when complete).

    The temporary name is unpredictable and made exclusively: HDF5 would write
    through a link planted at a fixed one, and OUTPUT.partial may be a run's.
    """
    workloads = [make_workload(job) for job, _ in plans]
    data = dataset_bytes(workloads)
    check_room(output, data + reserve_size(len(workloads)), "the merged file")
    fd, partial = temporary_beside(output)
    os.close(fd)
    try:
        writer = SerialWriter(partial, workloads, create=True)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OutputError) and is_disk_full(exc):
            raise full_error(output, data, MERGE_HINT) from None
        raise
    try:
        writer.create_layout(layout_attrs(_run_attrs([job for job, _ in plans], parts)))
        digests: dict[str, list] = {job.name: [] for job, _ in plans}
        ends = {
            job.name: _write_job(writer, i, workloads[i], pieces, digests[job.name])
            for i, (job, pieces) in enumerate(plans)
        }
        done = {job.name: [[0, job.size]] for job, _ in plans}
        written = {name: rows for name, rows in digests.items() if rows}
        writer.finish(Finish(schema.STATE_COMPLETE, ends, {}, {}, [], done, written))
        writer.close()
    except BaseException as exc:
        writer.abandon()
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise full_error(output, data, MERGE_HINT) from None
        raise
    # Refused (OUTPUT became a link or a device meanwhile), the message names where the results are
    replace_output(partial, output)


def _write_job(
    writer: SerialWriter, index: int, workload: Any, pieces: list[tuple[ResultsPart, Job]], digests: list
) -> JobEnd:
    job = workload.job
    datasets = workload.datasets()
    names = list(datasets)
    dtypes = {name: dtype for name, (_, dtype) in datasets.items()}
    summary = workload.empty()
    extra: dict[str, list[tuple[int, ...]]] = {}
    for part, piece in pieces:
        shift = piece.start - job.start
        for offset, count, arrays in part.blocks(piece, names):
            writer.write_chunk(index, ChunkOutput(shift + offset, count, None, arrays))
            digests.append([shift + offset, count, data_digest(arrays, dtypes)])
        for name, rows in part.extra(piece).items():
            # Thread overflow rows count threads from their own job's start
            shifted = [(row[0] + shift, *row[1:]) for row in rows] if name == "overflow" else rows
            extra.setdefault(name, []).extend(shifted)
        summary = workload.merge(summary, part.summary(piece))
    return JobEnd(schema.STATE_COMPLETE, summary, extra=extra)


def _run_attrs(jobs: list[Job], parts: Sequence[ResultsPart]) -> dict[str, Any]:
    config = schema.to_json({"jobs": [job.to_dict() for job in jobs]})
    sources = [{"file": str(part.path), **part.run} for part in parts]
    backends = {name for part in parts for name in str(part.run.get("backend", "")).split(",") if name}
    return {
        "job_file": config,
        "config": config,
        "backend": ",".join(sorted(backends)),
        "ranks": max(int(part.run.get("ranks", 1)) for part in parts),
        "python": sys.version.split()[0],
        "hpcthreads_version": __version__,
        "io": "gather",
        "merged_from": schema.to_json(sources),
    }
