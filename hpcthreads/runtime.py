"""Running a set of jobs on one rank: chunks in, merged summaries and a file out."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hpcthreads import __version__
from hpcthreads.backends import make_backend
from hpcthreads.config import PRIORITIES, Job, RunConfig
from hpcthreads.io import schema
from hpcthreads.io.writer import H5Writer, check_output_path
from hpcthreads.workloads import make_workload

log = logging.getLogger("hpcthreads")

# Largest number of path values one thread chunk holds in memory
MAX_CHUNK_VALUES = 1 << 21


@dataclass
class RunResult:
    summaries: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0


def ordered_jobs(jobs: tuple[Job, ...]) -> list[Job]:
    """High priority first, then normal, then low; file order within a level."""
    return sorted(jobs, key=lambda job: PRIORITIES.index(job.priority))


def chunk_limit(job: Job) -> int:
    """Most items per chunk: the batch size, and a memory bound for thread paths."""
    if job.type == "thread":
        return max(1, min(job.batch_size, MAX_CHUNK_VALUES // (job.params["max_depth"] + 1)))
    return job.batch_size


def run_attrs(config: RunConfig, backend_name: str) -> dict[str, Any]:
    return {
        "job_file": config.source,
        "config": schema.to_json({"jobs": [job.to_dict() for job in config.jobs]}),
        "backend": backend_name,
        "ranks": 1,
        "python": sys.version.split()[0],
        "hpcthreads_version": __version__,
    }


def run(config: RunConfig) -> RunResult:
    """Run every job of `config` in this process and write the results file."""
    check_output_path(config.output, config.force)
    backend = make_backend(config.backend)
    writer = H5Writer(config.output, run_attrs(config, backend.name))
    result = RunResult()
    t0 = time.perf_counter()
    try:
        for job in ordered_jobs(config.jobs):
            result.summaries[job.name] = _run_job(job, backend, writer)
    except BaseException:
        writer.close(schema.STATE_FAILED)
        raise
    result.wall_seconds = time.perf_counter() - t0
    writer.close(schema.STATE_COMPLETE)
    return result


def _run_job(job: Job, backend: Any, writer: H5Writer) -> Any:
    workload = make_workload(job)
    writer.begin_job(job, workload)
    t0 = time.perf_counter()
    summary = workload.empty()
    step = chunk_limit(job)
    for offset in range(0, job.size, step):
        out = workload.compute(backend, offset, min(step, job.size - offset))
        writer.write_chunk(job, out)
        summary = workload.merge(summary, out.summary)
    wall = time.perf_counter() - t0
    writer.end_job(job, summary, wall)
    log.info("job %s (%s): %d items in %.2f s", job.name, job.type, job.size, wall)
    return summary
