"""Writing a results file: created up front, filled chunk by chunk, summarised at the end."""

from __future__ import annotations

import getpass
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hpcthreads import __version__
from hpcthreads.config import Job
from hpcthreads.errors import OutputError
from hpcthreads.io import schema
from hpcthreads.io.summaries import write_summary
from hpcthreads.workloads.base import BaseWorkload, ChunkOutput


def check_output_path(path: Path, force: bool) -> None:
    """Refuse an output that exists (unless forced) or whose directory is missing."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output {str(path)!r}: directory {str(parent)!r} does not exist")
    if path.is_dir():
        raise OutputError(f"output {str(path)!r} is a directory")
    if path.exists() and not force:
        raise OutputError(f"output {str(path)!r} exists; use --force to overwrite it")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output {str(path)!r}: directory {str(parent)!r} is not writable")


class H5Writer:
    """The serial writer: one process opens the file and writes everything."""

    def __init__(self, path: Path, run_attrs: dict[str, Any]) -> None:
        import h5py

        self.path = Path(path)
        try:
            self.file = h5py.File(self.path, "w")
        except OSError as exc:
            raise OutputError(f"output {str(path)!r}: cannot create it ({exc})") from None
        self._extra: dict[str, dict[str, list[tuple[int, ...]]]] = {}
        self._t0 = time.time()
        attrs = self.file.attrs
        attrs["format"] = schema.FORMAT_NAME
        attrs["format_version"] = schema.FORMAT_VERSION
        attrs["software"] = f"hpcthreads {__version__}"
        attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        attrs["conventions"] = schema.CONVENTIONS
        attrs["integer_encoding"] = schema.INT_ENCODING
        attrs["host"] = socket.gethostname()
        attrs["user"] = _user()
        attrs["state"] = schema.STATE_RUNNING
        for key, value in run_attrs.items():
            attrs[key] = value
        self.file.require_group("jobs")
        self.file.flush()

    def begin_job(self, job: Job, workload: BaseWorkload) -> None:
        group = self.file.create_group(schema.job_path(job.name))
        attrs = group.attrs
        attrs["type"] = job.type
        attrs["priority"] = job.priority
        attrs["gpu_preferred"] = job.gpu_preferred
        attrs["parameters"] = schema.to_json(job.params)
        attrs["start"] = schema.encode_int(job.start)
        attrs["size"] = schema.encode_int(job.size)
        attrs["high_word"] = workload.wide
        attrs["state"] = schema.STATE_RUNNING
        for key, value in job.params.items():
            if key not in ("start",) and isinstance(value, int):
                attrs[key] = schema.encode_int(value)
        for name, (shape, dtype) in workload.datasets().items():
            itemsize = np.dtype(dtype).itemsize
            group.create_dataset(name, shape=shape, dtype=dtype, chunks=schema.chunk_shape(shape, itemsize))
        self._extra[job.name] = {}

    def write_chunk(self, job: Job, out: ChunkOutput) -> None:
        group = self.file[schema.job_path(job.name)]
        for name, data in out.arrays.items():
            group[name][out.offset : out.offset + out.count] = data
        for name, rows in out.extra.items():
            self._extra[job.name].setdefault(name, []).extend(rows)

    def end_job(self, job: Job, summary: Any, wall_seconds: float) -> None:
        group = self.file[schema.job_path(job.name)]
        write_summary(group, summary)
        extra = self._extra.pop(job.name, {})
        for name, width in (("peak_overflow", 2), ("overflow", 3)):
            if name in extra or (name == "peak_overflow" and "peak" in group):
                rows = sorted(extra.get(name, []))
                data = schema.encode_table(rows, width) if rows else np.zeros((0, width), np.int64)
                group.create_dataset(name, data=data)
        group.attrs["wall_seconds"] = wall_seconds
        group.attrs["state"] = schema.STATE_COMPLETE
        self.file.flush()

    def fail_job(self, job: Job, message: str) -> None:
        group = self.file[schema.job_path(job.name)]
        group.attrs["state"] = schema.STATE_FAILED
        group.attrs["error"] = message
        self.file.flush()

    def write_accounting(self, ranks: dict[int, dict[str, Any]], chunks: list[Any]) -> None:
        """Per-rank totals and the per-chunk timeline, under /run."""
        run = self.file.require_group("run")
        table = run.require_group("ranks")
        order = sorted(ranks)
        table.create_dataset("rank", data=np.array(order, np.int32))
        for key, kind in schema.RANK_COLUMNS.items():
            values = [ranks[r].get(key, "" if kind == "text" else 0) for r in order]
            data = np.array([str(v).encode() for v in values]) if kind == "text" else np.array(values, kind)
            table.create_dataset(key, data=data)
        timeline = run.require_group("chunks")
        for key, kind in schema.CHUNK_COLUMNS.items():
            timeline.create_dataset(key, data=np.array([getattr(c, key) for c in chunks], kind).reshape(-1))

    def close(self, state: str, attrs: dict[str, Any] | None = None) -> None:
        if self.file.id.valid:
            for key, value in (attrs or {}).items():
                self.file.attrs[key] = value
            self.file.attrs["wall_seconds"] = time.time() - self._t0
            self.file.attrs["state"] = state
            self.file.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return str(os.getuid())
