"""Writing a results file: the layout up front, chunk slices as they come, results at the end.

Two strategies share one layout. `SerialWriter` (gather mode): rank 0 opens
the file and writes everything it is sent. `MPIOWriter` (parallel mode): every
rank opens the file with h5py's mpio driver; the layout and the final results
are written collectively, each worker writes its own chunks' slices
independently. Per-item datasets are contiguous and allocated at creation, so
writing a slice never changes the file's metadata: a process killed in the
middle of a run leaves a file whose structure is intact.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hpcthreads import __version__
from hpcthreads.errors import OutputError
from hpcthreads.io import schema
from hpcthreads.io.digest import attrs_digest, summary_digest
from hpcthreads.io.safewrite import create_new, refuse_link
from hpcthreads.io.space import full_error, is_disk_full
from hpcthreads.io.summaries import write_summary
from hpcthreads.workloads.base import BaseWorkload, ChunkOutput, to_plain


@dataclass
class JobEnd:
    """How one job ended: its summary when complete, its error when failed."""

    state: str
    summary: Any = None
    error: str = ""
    extra: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)


@dataclass
class Finish:
    """Everything written at the end of a run, identical on every writing rank."""

    state: str
    jobs: dict[str, JobEnd]
    run_attrs: dict[str, Any]
    ranks: dict[int, dict[str, Any]]
    chunks: list[Any]
    done: dict[str, list[list[int]]]
    # Per job: (offset, count, data digest) of every chunk with per-item data
    digests: dict[str, list[list[int]]] = field(default_factory=dict)


def layout_attrs(run_attrs: dict[str, Any]) -> dict[str, Any]:
    """The root attributes of a new file, computed once (on rank 0) and shared."""
    attrs = {
        "format": schema.FORMAT_NAME,
        "format_version": schema.FORMAT_VERSION,
        "software": f"hpcthreads {__version__}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "conventions": schema.CONVENTIONS,
        "integer_encoding": schema.INT_ENCODING,
        "host": socket.gethostname(),
        "user": _user(),
        "state": schema.STATE_RUNNING,
    }
    attrs.update(run_attrs)
    return attrs


def claim_partial(path: Path, fresh: bool) -> None:
    """Make a fresh partial file exclusively (never through a link), or refuse a link at a resumed one.

    HDF5 opens a file by name and follows a symbolic link planted there.
    """
    if fresh:
        os.close(create_new(path, "partial file"))
    else:
        refuse_link(path, "partial file")


def mpi_available() -> bool:
    import h5py

    return bool(h5py.get_config().mpi)


class BaseWriter:
    """The layout and the end of a run; subclasses decide how the file is opened."""

    writes_on_workers = False

    def __init__(self, path: Path, workloads: list[BaseWorkload], create: bool) -> None:
        self.path = Path(path)
        self.workloads = workloads
        try:
            self.file = self._open("w" if create else "r+")
        except OSError as exc:
            verb = "create" if create else "reopen"
            raise OutputError(f"{str(path)!r}: cannot {verb} it ({exc})") from None

    def _open(self, mode: str) -> Any:
        raise NotImplementedError

    def create_layout(self, root_attrs: dict[str, Any]) -> None:
        """Root attributes (from `layout_attrs`, the same on every rank), job groups, datasets."""
        for key, value in root_attrs.items():
            self.file.attrs[key] = value
        jobs = self.file.create_group("jobs")
        for workload in self.workloads:
            self._create_job(jobs.create_group(workload.job.name), workload)
        self.file.flush()

    def _create_job(self, group: Any, workload: BaseWorkload) -> None:
        from h5py import h5d, h5p

        job = workload.job
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
            if key != "start" and isinstance(value, int):
                attrs[key] = schema.encode_int(value)
        for name, (shape, dtype) in workload.datasets().items():
            dcpl = h5p.create(h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5d.FILL_TIME_NEVER)
            group.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl)

    def write_chunk(self, job: int, out: ChunkOutput) -> None:
        """Write a chunk's per-item arrays at its offset (independent in mpio mode)."""
        group = self.file[schema.job_path(self.workloads[job].job.name)]
        rows = np.s_[out.offset : out.offset + out.count]
        try:
            for name, data in out.arrays.items():
                group[name].write_direct(np.ascontiguousarray(data), dest_sel=rows)
        except OSError as exc:
            if is_disk_full(exc):
                raise full_error(self.path) from None
            raise OutputError(
                f"writing {self.path} failed ({exc}); finished chunks are in the ledger: "
                "make room and run the same command with --resume"
            ) from None

    def finish(self, finish: Finish) -> None:
        """Write how the run ended; in mpio mode every rank calls this with the same `finish`."""
        for name, end in finish.jobs.items():
            group = self.file[schema.job_path(name)]
            # A job completed in an earlier session of a resumed run is written already
            if end.summary is not None and group.attrs["state"] != schema.STATE_COMPLETE:
                self._clear_summary(group)
                write_summary(group, end.summary)
                self._write_extra(group, end.extra)
                group.attrs["summary_digest"] = summary_digest(to_plain(end.summary), end.extra)
                encoding = self.file.attrs.get("integer_encoding", "")
                group.attrs["attrs_digest"] = attrs_digest(group.attrs, encoding)
            group.attrs["state"] = end.state
            if end.error:
                group.attrs["error"] = end.error
        if "run" in self.file:
            del self.file["run"]
        run = self.file.create_group("run")
        self._write_accounting(run, finish)
        for key, value in finish.run_attrs.items():
            self.file.attrs[key] = value
        self.file.attrs["state"] = finish.state

    def _clear_summary(self, group: Any) -> None:
        """Remove what an earlier session killed while finishing may have left half written."""
        for name in schema.SUMMARY_OBJECTS:
            if name in group:
                del group[name]

    def _write_extra(self, group: Any, extra: dict[str, list[tuple[int, ...]]]) -> None:
        for name, width in (("peak_overflow", 2), ("overflow", 3)):
            if (
                name in extra
                or (name == "peak_overflow" and "peak" in group)
                or (name == "overflow" and "paths" in group)
            ):
                rows = sorted(extra.get(name, []))
                data = schema.encode_table(rows, width) if rows else np.zeros((0, width), np.int64)
                group.create_dataset(name, data=data)

    def _write_accounting(self, run: Any, finish: Finish) -> None:
        table = run.create_group("ranks")
        order = sorted(finish.ranks)
        table.create_dataset("rank", data=np.array(order, np.int32))
        for key, kind in schema.RANK_COLUMNS.items():
            values = [finish.ranks[r].get(key, "" if kind == "text" else 0) for r in order]
            data = np.array([str(v).encode() for v in values]) if kind == "text" else np.array(values, kind)
            table.create_dataset(key, data=data)
        timeline = run.create_group("chunks")
        for key, kind in schema.CHUNK_COLUMNS.items():
            timeline.create_dataset(
                key, data=np.array([getattr(c, key) for c in finish.chunks], kind).reshape(-1)
            )
        done = run.create_group("done")
        for name, spans in finish.done.items():
            data = schema.encode_table([tuple(s) for s in spans], 2) if spans else np.zeros((0, 2), np.int64)
            done.create_dataset(name, data=data)
        digests = run.create_group("digests")
        for name, rows in finish.digests.items():
            rows = sorted(tuple(row) for row in rows)
            data = schema.encode_table(rows, 3) if rows else np.zeros((0, 3), np.int64)
            digests.create_dataset(name, data=data)

    def read_config(self) -> str:
        return str(self.file.attrs.get("config", ""))

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def abandon(self) -> None:
        """Close a file whose creation failed, and remove it: it holds no work."""
        try:
            self.close()
        except (OSError, RuntimeError):
            pass
        self.path.unlink(missing_ok=True)


class SerialWriter(BaseWriter):
    """Gather mode: only rank 0 opens the file."""

    def _open(self, mode: str) -> Any:
        import h5py

        return h5py.File(self.path, mode)


class MPIOWriter(BaseWriter):
    """Parallel mode: every rank opens the file with the mpio driver."""

    writes_on_workers = True

    def __init__(self, path: Path, workloads: list[BaseWorkload], create: bool, comm: Any) -> None:
        self.comm = comm
        super().__init__(path, workloads, create)

    def _open(self, mode: str) -> Any:
        import h5py

        if not h5py.get_config().mpi:
            raise OutputError("--io mpio needs h5py built with MPI (see scripts/install-parallel-h5py.sh)")
        return h5py.File(self.path, mode, driver="mpio", comm=self.comm)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return str(os.getuid())
