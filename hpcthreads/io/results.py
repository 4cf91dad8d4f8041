"""The analysis API: a results file as NumPy arrays (and xarray objects if installed).

import hpcthreads
with hpcthreads.open("out.h5") as results:
    job = results["records-low"]
    job.summary["max_delay"]          # [n, delay], exact integers
    job.histogram                     # int64 array, index = delay
    job.records("path")               # list of (n, peak)
    job.array("delay")                # per-number delays (store: per-number)
    job.to_xarray()                   # an xarray.Dataset, if xarray is installed
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hpcthreads.errors import OutputError
from hpcthreads.io import schema
from hpcthreads.io.reader import open_results
from hpcthreads.io.summaries import read_summary
from hpcthreads.io.validate import root_attrs

# Rows read at a time when streaming a per-item dataset
BLOCK_ROWS = 1 << 20


class JobResults:
    """One job of a results file."""

    def __init__(self, name: str, group: Any) -> None:
        self.name = name
        self.group = group
        self.summary = read_summary(group)
        self.type = self.summary["type"]
        self._overflows: list[list[int]] | None = None

    @property
    def start(self) -> int:
        return self.summary["start"]

    @property
    def histogram(self) -> np.ndarray:
        """Delay histogram (collatz): `[d]` is how many start values have delay d."""
        return self.group["delay_histogram"][()] if "delay_histogram" in self.group else np.zeros(0, np.int64)

    def records(self, kind: str) -> list[tuple[int, int]]:
        """Range-local records, `kind` in delay, path, glide: (n, value) in order of n."""
        if "records" not in self.group or kind not in self.group["records"]:
            return []
        return [(row[0], row[1]) for row in schema.decode_table(self.group["records"][kind][()])]

    def datasets(self) -> list[str]:
        """Names of the per-item datasets of this job (empty in summary mode)."""
        size = schema.decode_int(self.group.attrs["size"])
        return [
            name for name, item in self.group.items() if hasattr(item, "shape") and item.shape[:1] == (size,)
        ]

    def array(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A per-item dataset (or rows start:stop of it) as an array.

        `peak`, `paths` and `final` come back exact: uint64 when the job needs
        no high word, otherwise Python integers (object arrays) joining both
        words, with every value of 2^128 or more (stored as a placeholder) taken
        from the job's overflow table.
        """
        if name not in self.group:
            raise OutputError(
                f"job {self.name!r} has no dataset {name!r} (it has: {', '.join(self.datasets())})"
            )
        low = self.group[name][start:stop]
        high_name = f"{name}_hi"
        if high_name not in self.group:
            return low
        high = self.group[high_name][start:stop]
        values = (high.astype(object) << 64) | low.astype(object)
        self._fill_overflows(name, values, start)
        return values

    def overflows(self) -> list[list[int]]:
        """The exact values of 2^128 and more: rows (n, peak) of a collatz job, (thread, step, value)
        of a thread job (thread counted from the job's first)."""
        if self._overflows is None:
            table = "peak_overflow" if self.type == "collatz" else "overflow"
            data = self.group[table][()] if table in self.group else np.zeros((0, 2))
            self._overflows = schema.decode_table(data)
        return self._overflows

    def _fill_overflows(self, name: str, values: np.ndarray, start: int) -> None:
        rows = self.overflows() if name in ("peak", "paths", "final") else []
        if not rows:
            return
        if name == "peak":
            for n, peak in rows:
                if 0 <= n - self.start - start < len(values):
                    values[n - self.start - start] = peak
            return
        depth = self.group["depth"][start : start + len(values)] if name == "final" else None
        for thread, step, value in rows:
            i = thread - start
            if not 0 <= i < len(values):
                continue
            if name == "paths":
                values[i, step] = value
            elif step == depth[i]:
                values[i] = value

    def blocks(self, name: str, rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """(offset, block) pieces of a per-item dataset, for data larger than memory."""
        size = self.group[name].shape[0]
        for offset in range(0, size, rows):
            yield offset, self.array(name, offset, min(size, offset + rows))

    def to_xarray(self) -> Any:
        """An xarray.Dataset of the per-item arrays, the histogram and the summary as attributes."""
        import xarray as xr

        variables: dict[str, Any] = {}
        if "delay_histogram" in self.group:
            variables["delay_histogram"] = ("delay", self.histogram)
        size = schema.decode_int(self.group.attrs["size"])
        coordinate = "thread" if self.type == "thread" else "n"
        for name in self.datasets():
            if name.endswith("_hi"):
                continue
            data = self.array(name)
            dims = (coordinate,) if data.ndim == 1 else (coordinate, "step")
            variables[name] = (dims, data.astype(np.float64) if data.dtype == object else data)
        coords = {}
        if self.type != "thread" and size and self.start + size < 2**63:
            coords["n"] = np.arange(self.start, self.start + size, dtype=np.int64)
        attrs = {key: str(value) for key, value in self.summary.items() if not isinstance(value, list)}
        return xr.Dataset(variables, coords=coords, attrs=attrs)


class Results:
    """An open results file: `results[name]` is a JobResults; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.file = open_results(self.path)
        try:
            self.attrs = root_attrs(self.file)
        except BaseException:
            self.file.close()
            raise

    def __getitem__(self, name: str) -> JobResults:
        if name not in self.file["jobs"]:
            raise KeyError(f"no job {name!r} in {self.path} (jobs: {', '.join(self.names)})")
        return JobResults(name, self.file["jobs"][name])

    @property
    def names(self) -> list[str]:
        """The jobs in the order of the job file: the order of every job index (/run/chunks/job)."""
        present = list(self.file["jobs"])
        try:
            listed = [job["name"] for job in json.loads(str(self.attrs.get("config", "")))["jobs"]]
        except (ValueError, KeyError, TypeError):
            return present
        return [name for name in listed if name in present] + [n for n in present if n not in listed]

    def __iter__(self) -> Iterator[JobResults]:
        return (self[name] for name in self.names)

    def table(self, group: str) -> dict[str, np.ndarray]:
        """A column table under /run (`ranks` or `chunks`) as arrays."""
        if "run" not in self.file or group not in self.file["run"]:
            return {}
        return {key: value[()] for key, value in self.file["run"][group].items()}

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
