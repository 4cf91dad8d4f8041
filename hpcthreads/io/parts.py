"""Reading finished results files as parts of a larger run, for `hpcthreads merge`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hpcthreads.config import Job, make_jobs
from hpcthreads.io import schema
from hpcthreads.io.reader import RUN_ATTRS, open_results
from hpcthreads.io.summaries import load_summary
from hpcthreads.io.validate import attr, check_job, root_attrs

# Rows of per-item datasets copied at once (bounded memory for any range)
BLOCK_ROWS = 1 << 20

# Side tables of exact overflow values and their widths
EXTRA_TABLES = {"peak_overflow": 2, "overflow": 3}


class ResultsPart:
    """One finished results file: its jobs, their summaries and their per-item data."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.handle = open_results(self.path)
        try:
            attrs = root_attrs(self.handle)
            self.run = {key: attrs[key] for key in RUN_ATTRS if key in attrs}
            self.jobs: tuple[Job, ...] = make_jobs(json.loads(attrs["config"]))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ResultsPart:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.handle.id.valid:
            self.handle.close()

    def _group(self, job: Job) -> Any:
        group = self.handle[schema.job_path(job.name)]
        # Data is read by the configuration's ranges: they must be the group's
        check_job(group, job.type, job.start, job.size)
        return group

    def job_state(self, job: Job) -> str:
        return attr(self._group(job), "state", "text") or "unknown"

    def wall_seconds(self, job: Job) -> float:
        return attr(self._group(job), "wall_seconds", "float") or 0.0

    def summary(self, job: Job) -> Any:
        return load_summary(self._group(job))

    def blocks(self, job: Job, names: list[str]) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """(offset, count, arrays) blocks of the per-item datasets `names`; absent ones read as zeros."""
        group = self._group(job)
        for offset in range(0, job.size, BLOCK_ROWS):
            stop = min(job.size, offset + BLOCK_ROWS)
            arrays = {}
            for name in names:
                if name in group:
                    arrays[name] = group[name][offset:stop]
                else:
                    # A high-word dataset of a part that needed none: its values fit one word
                    shape = (stop - offset, *group[name.removesuffix("_hi")].shape[1:])
                    arrays[name] = np.zeros(shape, np.uint64)
            yield offset, stop - offset, arrays

    def extra(self, job: Job) -> dict[str, list[tuple[int, ...]]]:
        """Rows of the exact overflow tables, as written."""
        group = self._group(job)
        return {
            name: [tuple(row) for row in schema.decode_table(group[name][()])]
            for name in EXTRA_TABLES
            if name in group
        }
