"""The one-job shorthand: `hpcthreads run collatz --start 2**40 --count 1e9` without a job file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hpcthreads.config import JOB_TYPES, STORE_MODES, load_job_file, make_jobs
from hpcthreads.errors import ConfigError

OPTIONS = [
    click.option("--start", help="Shorthand: first start value (1e8, 2**64 and 2^64 are accepted)."),
    click.option("--count", help="Shorthand: how many start values (or threads, for `thread`)."),
    click.option("--batch-size", help="Shorthand: items per chunk (a granularity hint)."),
    click.option(
        "--store", type=click.Choice(STORE_MODES), help="Shorthand (collatz): also store per-number arrays."
    ),
    click.option(
        "--max-steps", help="Shorthand (verify): step bound; values past it are listed as unresolved."
    ),
    click.option(
        "--sieve-bits", help="Shorthand (verify): the sieve's table, residues mod 2^k (0-30, default 28)."
    ),
    click.option(
        "--sieve-extra-bits",
        help="Shorthand (verify): bits the sieve goes further per value (0-16, default 14).",
    ),
    click.option(
        "--verified-below",
        help="Shorthand (verify): every n below this is taken as verified (default: --start).",
    ),
    click.option(
        "--sieve-slice-bits",
        help="Shorthand (verify): cut a large job by residue mod 2^K (auto, 0 for ranges, or 8-51).",
    ),
    click.option(
        "--sieve-join",
        help="Shorthand (verify): 1 skips values whose path joins that of n - 1 (no glide for them).",
    ),
    click.option("--max-depth", help="Shorthand (thread): steps per thread."),
    click.option("--name", default=None, help="Shorthand: job name (default: the job type)."),
]


def shorthand_options(command: Callable) -> Callable:
    """The shorthand options (--start, --count, ... and --name), for `run` and `campaign create`."""
    for option in reversed(OPTIONS):
        command = option(command)
    return command


def jobs_from(target: str, name: str | None, shorthand: dict[str, Any]) -> tuple[tuple, str]:
    """The jobs of TARGET (a job type with the shorthand's values, or a job file) and their source."""
    given = {key: value for key, value in shorthand.items() if value is not None}
    if target in JOB_TYPES:
        params = dict(given)
        if target == "thread" and "count" in params:
            params["thread_count"] = params.pop("count")
        entry = {"name": name or target, "type": target, "parameters": params}
        return make_jobs({"jobs": [entry]}), json.dumps({"jobs": [entry]})
    if given or name:
        option = "--" + (next(iter(given)) if given else "name").replace("_", "-")
        raise ConfigError(f"{option} is for the one-job shorthand (hpcthreads run collatz|verify|thread ...)")
    path = Path(target)
    if not path.exists():
        raise ConfigError(
            f"{target!r} is neither a job type ({', '.join(JOB_TYPES)}) nor an existing job file"
        )
    return load_job_file(path)
