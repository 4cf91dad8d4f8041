"""`hpcthreads export`: records, histograms and per-item arrays as CSV or Parquet files.

Per-item arrays are streamed block by block, so a file larger than memory
exports in bounded memory. Integers stay exact: values beyond 64 bits are
written as decimal text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hpcthreads.errors import ConfigError, OutputError
from hpcthreads.io.paths import check_output_path
from hpcthreads.io.results import BLOCK_ROWS, JobResults, Results
from hpcthreads.io.safewrite import Staged, staged
from hpcthreads.io.space import full_error, is_disk_full
from hpcthreads.io.validate import reading

Table = tuple[list[str], Iterator[list[list[Any]]]]


def _column(values: np.ndarray) -> list[Any]:
    return [str(v) for v in values] if values.dtype == object else values.tolist()


def job_tables(job: JobResults, rows: int = BLOCK_ROWS) -> dict[str, Table]:
    """name -> (header, blocks of rows) for everything a job holds."""
    tables: dict[str, Table] = {}
    for kind in ("delay", "path", "glide"):
        pairs = job.records(kind)
        if pairs:
            tables[f"records-{kind}"] = (["n", "value"], iter([[[str(n), str(v)] for n, v in pairs]]))
    hist = job.histogram
    if hist.any():
        tables["histogram"] = (["delay", "count"], iter([[[d, int(c)] for d, c in enumerate(hist) if c]]))
    overflows = job.overflows() if job.type in ("collatz", "thread") else []
    if overflows and job.type == "collatz":
        tables["peak-overflow"] = (["n", "peak"], iter([[[str(v) for v in row] for row in overflows]]))
    elif overflows:
        tables["overflow"] = (
            ["thread", "step", "value"],
            iter([[[str(v) for v in row] for row in overflows]]),
        )
    names = [n for n in job.datasets() if not n.endswith("_hi")]
    if job.type == "collatz" and names:
        columns = [n for n in ("delay", "glide", "peak") if n in names]
        tables["numbers"] = (["n", *columns], _numbers(job, columns, rows))
    elif job.type == "thread" and "paths" in names:
        tables["threads"] = (["thread", "start", "depth", "final", "path"], _threads(job, rows))
    return tables


def _numbers(job: JobResults, columns: list[str], rows: int) -> Iterator[list[list[Any]]]:
    size = job.group[columns[0]].shape[0]
    for offset in range(0, size, rows):
        stop = min(size, offset + rows)
        data = [_column(job.array(name, offset, stop)) for name in columns]
        yield [[str(job.start + offset + i), *(col[i] for col in data)] for i in range(stop - offset)]


def _threads(job: JobResults, rows: int) -> Iterator[list[list[Any]]]:
    size = job.group["depth"].shape[0]
    rows = max(1, rows // job.group["paths"].shape[1])
    for offset in range(0, size, rows):
        stop = min(size, offset + rows)
        depth, final = job.array("depth", offset, stop), _column(job.array("final", offset, stop))
        paths = job.array("paths", offset, stop)
        yield [
            [
                offset + i,
                str(job.start + offset + i),
                int(depth[i]),
                final[i],
                " ".join(str(v) for v in paths[i, : int(depth[i]) + 1]),
            ]
            for i in range(stop - offset)
        ]


def export(
    output: Path, folder: Path, fmt: str, jobs: list[str] | None = None, force: bool = False
) -> list[Path]:
    """Write every table of the chosen jobs as FOLDER/JOB-TABLE.csv or .parquet.

    Only complete jobs are exported (an unfinished job's unwritten rows would
    read as data), and existing files are replaced only with `force`. A job
    named twice is exported once.
    """
    written = []
    with Results(output) as results, reading(output):
        if "simulated" in results.attrs:
            # Its workers computed nothing: the tables would be empty, and empty is not a result
            raise ConfigError(
                f"export: {str(output)!r} holds no results, so nothing is written: it is a run of "
                "--backend simulated, whose workers compute nothing"
            )
        chosen = [results[name] for name in dict.fromkeys(jobs or results.names)]
        for job in chosen:
            state = job.summary["state"]
            if state != "complete":
                raise OutputError(
                    f"job {job.name!r} of {output} is {state}, not complete: its unfinished rows would read "
                    "as data; finish the run (--resume) first"
                )
        _make_folder(folder)
        plans = [
            (job, table, folder / f"{job.name}-{table}.{fmt}") for job in chosen for table in job_tables(job)
        ]
        for _, _, path in plans:
            check_output_path(path, force, [output])
        # Every table under a temporary name first, all renamed at the end: an export that is
        # interrupted, or meets a full disk, leaves the tables it was to replace as they were
        with staged() as stage:
            for job, table, path in plans:
                header, blocks = job_tables(job)[table]
                try:
                    (_write_csv if fmt == "csv" else _write_parquet)(stage, path, header, blocks)
                except OSError as exc:
                    if is_disk_full(exc):
                        hint = "nothing was exported: make room, then export again"
                        raise full_error(path, then=hint) from None
                    raise OutputError(f"cannot write {path} ({exc.strerror})") from None
                written.append(path)
    return written


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make the folder {str(folder)!r} ({exc.strerror})") from None


def _write_csv(stage: Staged, path: Path, header: list[str], blocks: Iterator[list[list[Any]]]) -> None:
    # Written beside it under a temporary name, then renamed: never through a link at PATH
    with stage.replacing(path, "exported table") as raw:
        handle = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = csv.writer(handle)
        writer.writerow(header)
        for block in blocks:
            writer.writerows(block)
        handle.flush()
        handle.detach()


def _write_parquet(stage: Staged, path: Path, header: list[str], blocks: Iterator[list[list[Any]]]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("--parquet needs pyarrow: pip install pyarrow (or 'hpcthreads[export]')") from None
    writer = None
    with stage.replacing(path, "exported table") as handle:
        try:
            for block in blocks:
                columns = list(zip(*block)) if block else [[] for _ in header]
                batch = pa.table({name: pa.array(list(col)) for name, col in zip(header, columns)})
                if writer is None:
                    writer = pq.ParquetWriter(handle, batch.schema)
                writer.write_table(batch)
        finally:
            if writer is not None:
                writer.close()
