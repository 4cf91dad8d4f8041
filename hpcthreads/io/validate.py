"""The one gate between a results file and the code that reads it.

A results file may come from anywhere: a damaged disk, a copy cut short, a
colleague's script, someone who wants to see what a shared tool does with a
crafted file. `open_results` passes every file through `check_results`
before any reader sees it, and readers take attributes through `attr`:

- every link is a hard link: an external link (to another file, or to
  /etc/passwd) is never followed, a soft link (a cycle among them) never
  resolved, and raw data stored in other files (external or virtual
  datasets) never read;
- a dataset may declare no more bytes than the file stores for it (times
  what compression can give): reading one allocates memory in proportion to
  the data that is there, never the 16 GiB a 110 KB file declares;
- every attribute and dataset a reader uses has the type and shape the
  layout gives it, and agrees with its job (a per-item dataset has one row
  per item); integers written as decimal text hold at most MAX_DIGITS
  digits.

Anything else is refused with one line naming the file and the object.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hpcthreads.config import JOB_TYPES, MAX_DEPTH, MAX_DIGITS, MAX_START, NAME_PATTERN
from hpcthreads.errors import OutputError, shown
from hpcthreads.io import schema

# A dataset may declare this many bytes more than it stores (fill values of a small table)
STORED_SLACK = 1 << 16
# Deflate, the strongest filter HDF5 ships, packs at most 1032 bytes into one
MAX_COMPRESSION = 1100
# Rows of a decimal-text table checked at a time
CHECK_ROWS = 1 << 18
# The widest text column of /run/ranks (a host name, a list of device UUIDs)
MAX_TEXT_COLUMN = 4096

DECIMAL = re.compile(rf"-?[0-9]{{1,{MAX_DIGITS}}}")
SUFFIX = "the file is damaged, or was not written by hpcthreads"

KIND_WORDS = {"int": "an integer", "text": "text", "float": "a finite number", "bool": "true or false"}


def refusal(path: Path | str, where: str, problem: str) -> OutputError:
    """The one-line error for a file that cannot be trusted: the file, the object, what is wrong."""
    return OutputError(f"{str(path)!r}: {where} {problem}; {SUFFIX}")


def _where(obj: Any) -> str:
    return obj.name if obj.name != "/" else "the root group"


def attr(obj: Any, key: str, kind: str) -> Any:
    """Attribute KEY of the group or dataset OBJ as KIND ('int', 'text', 'float' or 'bool'); None
    when it is absent. Refused: any other type or shape, and integers of more than MAX_DIGITS digits."""
    path = obj.file.filename
    where = f"{_where(obj)} attribute {key!r}"
    try:
        if key not in obj.attrs:
            return None
        info = obj.attrs.get_id(key)
        shape, dtype = info.shape, info.dtype
        if shape != ():
            raise refusal(path, where, f"holds {shape} values, not one")
        if dtype.kind == "S" and kind in ("int", "float") and dtype.itemsize > MAX_DIGITS + 1:
            raise refusal(path, where, f"is {dtype.itemsize:,} characters long, not a number")
        value = obj.attrs[key]
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise refusal(path, where, f"cannot be read ({_first_line(exc)})") from None
    return _as_kind(value, kind, path, where)


def _as_kind(value: Any, kind: str, path: str, where: str) -> Any:
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", "replace")
    if kind == "text" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, (bool, np.bool_)):
        return bool(value)
    if kind in ("int", "bool") and isinstance(value, (int, np.integer, bool, np.bool_)):
        return int(value) if kind == "int" else bool(value)
    if kind == "int" and isinstance(value, str):
        if DECIMAL.fullmatch(value):
            return int(value)
        what = f"{len(value):,} characters" if len(value) > MAX_DIGITS else shown(value)
        raise refusal(path, where, f"is {what}, not an integer of at most {MAX_DIGITS} digits")
    if kind == "float" and isinstance(value, (float, int, np.floating, np.integer)):
        if np.isfinite(value):
            return float(value)
    plain = value.item() if isinstance(value, np.generic) else value
    raise refusal(path, where, f"is {shown(plain)}, not {KIND_WORDS[kind]}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


def root_attrs(handle: Any) -> dict[str, Any]:
    """The root attributes: those in schema.ROOT_ATTRS as their kind, the others as plain values."""
    values = {}
    for key in _names(handle.attrs, handle, "attribute"):
        kind = schema.ROOT_ATTRS.get(key)
        values[key] = attr(handle, key, kind) if kind else _plain_attr(handle, key)
    return values


def _plain_attr(obj: Any, key: str) -> Any:
    try:
        value = obj.attrs[key]
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise refusal(
            obj.file.filename, f"{_where(obj)} attribute {key!r}", f"cannot be read ({exc})"
        ) from None
    return value.item() if hasattr(value, "item") and getattr(value, "size", 1) == 1 else value


def _names(container: Any, obj: Any, what: str) -> list[str]:
    try:
        return list(container.keys())
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise refusal(
            obj.file.filename, _where(obj), f"{what}s cannot be listed ({_first_line(exc)})"
        ) from None


@contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Turn what HDF5 raises while data is read (a damaged block, a failing filter) into one line.

    KeyError passes: after `check_results` it means a name the user gave (`results["no-such-job"]`).
    """
    try:
        yield
    except (OSError, RuntimeError) as exc:
        raise OutputError(f"{str(path)!r} cannot be read ({_first_line(exc)}); {SUFFIX}") from None


class ResultsCheck:
    """The checks of one open results file, in the order `check_results` runs them."""

    def __init__(self, handle: Any, path: Path) -> None:
        self.handle, self.path = handle, path
        self.file_size = os.path.getsize(path)
        self.seen: set[Any] = set()

    def fail(self, obj: Any | str, problem: str) -> OutputError:
        return refusal(self.path, obj if isinstance(obj, str) else _where(obj), problem)

    def walk(self, group: Any) -> None:
        """Every object under GROUP, reached through hard links only; each dataset's storage."""
        if group.id in self.seen:
            return
        self.seen.add(group.id)
        for name in _names(group, group, "member"):
            where = f"{group.name.rstrip('/')}/{name}"
            try:
                link = group.get(name, getclass=True, getlink=True)
            except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise self.fail(where, f"is a link that cannot be read ({_first_line(exc)})") from None
            if link is not _h5py().HardLink:
                kind = "an external link" if "External" in link.__name__ else "a soft link"
                raise self.fail(where, f"is {kind}: a results file holds its data itself")
            try:
                item = group[name]
            except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise self.fail(where, f"cannot be opened ({_first_line(exc)})") from None
            if isinstance(item, _h5py().Dataset):
                self.storage(item)
            elif isinstance(item, _h5py().Group):
                self.walk(item)

    def storage(self, dset: Any) -> None:
        """Refuse a dataset whose data lies elsewhere, or that declares more than the file holds."""
        try:
            plist = dset.id.get_create_plist()
            external, virtual = plist.get_external_count(), dset.is_virtual
            filters, available = plist.get_nfilters(), plist.all_filters_avail()
            stored = dset.id.get_storage_size()
            declared = int(np.prod(dset.shape, dtype=object)) * dset.dtype.itemsize
            chunk = dset.chunks
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise self.fail(dset, f"cannot be examined ({_first_line(exc)})") from None
        if external or virtual:
            raise self.fail(dset, "keeps its data in other files: a results file holds its data itself")
        if filters and not available:
            raise self.fail(dset, "needs a compression filter this HDF5 does not have")
        if stored > self.file_size:
            raise self.fail(dset, f"claims {stored:,} bytes of storage in a file of {self.file_size:,}")
        limit = stored * (MAX_COMPRESSION if filters else 1) + STORED_SLACK
        if declared > limit:
            raise self.fail(
                dset,
                f"declares {declared:,} bytes but the file stores {stored:,} for it: it would read as "
                "data that is not there",
            )
        if chunk is not None and int(np.prod(chunk, dtype=object)) * dset.dtype.itemsize > limit:
            raise self.fail(dset, f"has chunks of {chunk} items, larger than the data it stores")

    def member(self, group: Any, name: str, kind: str) -> Any:
        """GROUP's member NAME if it is a KIND ('group' or 'dataset'); None when absent."""
        if name not in _names(group, group, "member"):
            return None
        item = group[name]
        h5py = _h5py()
        if not isinstance(item, h5py.Dataset if kind == "dataset" else h5py.Group):
            raise self.fail(item, f"is not a {kind}")
        return item

    def table(self, dset: Any, columns: int) -> None:
        """A table of exact integers: int64 (or narrower), or decimal text of at most MAX_DIGITS digits."""
        shape, dtype = dset.shape, dset.dtype
        rank_ok = len(shape) == 1 if columns == 0 else len(shape) == 2 and shape[1] == columns
        if not rank_ok:
            wanted = "one column" if columns == 0 else f"rows of {columns}"
            raise self.fail(dset, f"has shape {shape}, not {wanted}")
        if dtype.kind in "iu" and dtype.itemsize <= 8:
            return
        if dtype.kind != "S" or dtype.itemsize > MAX_DIGITS + 1:
            raise self.fail(dset, f"holds {dtype}, not integers of at most {MAX_DIGITS} digits")
        for offset in range(0, shape[0], CHECK_ROWS):
            if not _decimal(dset[offset : offset + CHECK_ROWS]):
                raise self.fail(dset, f"holds text that is not a decimal integer (in rows from {offset:,})")

    def column(self, dset: Any, length: int | None, text: bool) -> int:
        """One column of a /run table: its length, refused if not LENGTH, of the wrong kind, or not finite."""
        if len(dset.shape) != 1 or (length is not None and dset.shape[0] != length):
            raise self.fail(dset, f"has shape {dset.shape}; the other columns have {length} rows")
        kinds = "S" if text else "iubf"
        # An empty column has whatever type (a merged file's rank table is empty: float64)
        wrong = dset.dtype.kind not in kinds or dset.dtype.itemsize > (MAX_TEXT_COLUMN if text else 8)
        if wrong and dset.shape[0]:
            raise self.fail(dset, f"holds {dset.dtype}, not {'text' if text else 'numbers'}")
        if dset.dtype.kind == "f" and not np.isfinite(dset[()]).all():
            raise self.fail(dset, "holds values that are not finite")
        return dset.shape[0]


def _h5py() -> Any:
    import h5py

    return h5py


def _decimal(block: np.ndarray) -> bool:
    """Whether every cell of a fixed-width text block is a decimal integer, NUL-padded."""
    raw = np.ascontiguousarray(block).view(np.uint8).reshape(-1, block.dtype.itemsize)
    nul = raw == 0
    digit = (raw >= ord("0")) & (raw <= ord("9"))
    body = digit | nul
    body[:, 0] |= raw[:, 0] == ord("-")
    # NUL only as padding after the number
    padded = (nul[:, 1:] >= nul[:, :-1]).all(axis=1)
    return bool((body.all(axis=1) & padded & digit.any(axis=1) & ~nul[:, 0]).all())


def check_results(handle: Any, path: Path) -> None:
    """Refuse a results file that cannot be trusted (see the module's docstring); one line, naming it."""
    check = ResultsCheck(handle, Path(path))
    if attr(handle, "format", "text") != schema.FORMAT_NAME:
        raise OutputError(f"{str(path)!r} is not an hpcthreads results file")
    version = attr(handle, "format_version", "int")
    if version is None or version > schema.FORMAT_VERSION:
        raise OutputError(
            f"{str(path)!r} has format_version {version}; this hpcthreads reads up to "
            f"{schema.FORMAT_VERSION}: update hpcthreads to read it"
        )
    if "jobs" not in _names(handle, handle, "member") or "config" not in handle.attrs:
        raise OutputError(
            f"{str(path)!r} has no /jobs or no job configuration: it is not a complete results file"
        )
    check.walk(handle)
    attrs = root_attrs(handle)
    jobs = check.member(handle, "jobs", "group")
    sizes = {}
    for name in _names(jobs, jobs, "member"):
        sizes[name] = _check_job(check, name, check.member(jobs, name, "group"))
    _check_config(check, attrs["config"], jobs)
    run = check.member(handle, "run", "group")
    if run is not None:
        _check_run(check, run, sizes, finished=attrs.get("state") != schema.STATE_RUNNING)


def _check_job(check: ResultsCheck, name: str, group: Any) -> int:
    """A job group's attributes, per-item datasets and summary; returns the rows of its per-item data
    (its size without any)."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise check.fail(group, "is not a job name hpcthreads writes")
    values = {key: attr(group, key, kind) for key, kind in schema.JOB_ATTRS.items()}
    kind = values["type"]
    if kind not in JOB_TYPES:
        raise check.fail(group, f"has type {shown(kind)}, not one of {', '.join(JOB_TYPES)}")
    needed = ["start", "size", "state"] + {"thread": ["max_depth"], "verify": ["max_steps"]}.get(kind, [])
    if values["state"] == schema.STATE_COMPLETE:
        needed += schema.COMPLETE_ATTRS[kind]
    needed += [f"{key}_n" for key in schema.MAXIMA if values[key] is not None]
    for key in needed:
        if values[key] is None:
            raise check.fail(group, f"has no attribute {key!r}")
    start, size = values["start"], values["size"]
    if not (0 <= start and 1 <= size < 2**62 and start + size <= MAX_START):
        raise check.fail(group, f"covers {size:,} items from {start:,}, outside what a job can cover")
    depth = values["max_depth"]
    if kind == "thread" and not 0 <= depth <= MAX_DEPTH:
        raise check.fail(group, f"has max_depth {depth:,}, not 0 to {MAX_DEPTH:,}")
    rows = _check_datasets(check, group, kind)
    if values["state"] == schema.STATE_COMPLETE:
        for item in schema.COMPLETE_OBJECTS[kind]:
            if item not in group:
                raise check.fail(group, f"is complete but has no {item}")
    return size if rows is None else rows


def _check_datasets(check: ResultsCheck, group: Any, kind: str) -> int | None:
    """The members of a job group; returns the rows of its per-item data (None without any).

    Whether those rows match the job's `size` (or their width its `max_depth`) is for `check`
    to say: those attributes are covered by the job's attribute digest.
    """
    per_item = schema.PER_ITEM[kind]
    known = {**per_item, **{f"{name}_hi": per_item[name] for name in schema.HIGH_WORDS[kind]}}
    shapes: dict[bool, tuple[int, ...]] = {}
    for name in _names(group, group, "member"):
        if name in known:
            dset = check.member(group, name, "dataset")
            dtype, wide = known[name]
            shape = shapes.setdefault(wide, dset.shape)
            rank = 2 if wide else 1
            if len(dset.shape) != rank or dset.dtype != np.dtype(dtype) or (wide and not dset.shape[1]):
                raise check.fail(dset, f"is {dset.dtype} {dset.shape}, not {dtype} of {rank} dimension(s)")
            if dset.shape != shape or shapes.get(not wide, shape)[:1] != shape[:1]:
                raise check.fail(dset, f"has shape {dset.shape}; the job's other per-item data, {shape}")
        elif name in schema.SUMMARY_TABLES[kind]:
            check.table(check.member(group, name, "dataset"), schema.TABLES[name])
        elif name == "delay_histogram" and kind == "collatz":
            dset = check.member(group, name, "dataset")
            if len(dset.shape) != 1 or dset.dtype.kind not in "iu" or dset.dtype.itemsize > 8:
                raise check.fail(dset, f"is {dset.dtype} {dset.shape}, not one column of counts")
        elif name == "records" and schema.RECORDS[kind]:
            _check_records(check, check.member(group, name, "group"), kind)
        else:
            raise check.fail(f"{group.name}/{name}", f"is not part of a {kind} job")
    names = set(_names(group, group, "member"))
    low = names & set(per_item)
    if low and low != set(per_item):
        raise check.fail(
            group, f"has {', '.join(sorted(low))} without {', '.join(sorted(set(per_item) - low))}"
        )
    for name in schema.HIGH_WORDS[kind]:
        if f"{name}_hi" in names and name not in names:
            raise check.fail(group, f"has {name}_hi without {name}")
    return next(iter(shapes.values()))[0] if shapes else None


def _check_records(check: ResultsCheck, records: Any, kind: str) -> None:
    for name in _names(records, records, "member"):
        if name not in schema.RECORDS[kind]:
            raise check.fail(f"{records.name}/{name}", f"is not a record table of a {kind} job")
        check.table(check.member(records, name, "dataset"), 2)


def _check_config(check: ResultsCheck, config: str, jobs: Any) -> None:
    """The job configuration: JSON that lists jobs, each with its group under /jobs.

    Whether a job's type and range agree with its group is for the readers that take jobs from the
    configuration (`merge`: `check_job`); `check` names a changed range as damage (exit status 1).
    """
    try:
        names = [job["name"] for job in json.loads(config)["jobs"]]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        problem = f"is not a job configuration ({exc.__class__.__name__}: {shown(str(exc))})"
        raise check.fail("the root group attribute 'config'", problem) from None
    groups = _names(jobs, jobs, "member")
    for name in names:
        if not isinstance(name, str) or name not in groups:
            raise check.fail(f"job {shown(name)} of the configuration", "has no group under /jobs")


def check_job(group: Any, kind: str, start: int, size: int) -> None:
    """Refuse a job group whose type, start or size is not the configuration's (KIND, START, SIZE)."""
    recorded = (attr(group, "type", "text"), attr(group, "start", "int"), attr(group, "size", "int"))
    if recorded != (kind, start, size):
        raise refusal(
            group.file.filename, group.name, "disagrees with the job configuration on its type, start or size"
        )


def _check_run(check: ResultsCheck, run: Any, sizes: dict[str, int], finished: bool) -> None:
    """/run: the rank and chunk tables (columns of equal length), the chunks done and their digests."""
    for table, columns, required in (
        ("ranks", {"rank": "int32", **schema.RANK_COLUMNS}, schema.REPORTED_RANK_COLUMNS),
        ("chunks", schema.CHUNK_COLUMNS, tuple(schema.CHUNK_COLUMNS)),
    ):
        group = check.member(run, table, "group")
        if group is None:
            continue
        length = None
        names = _names(group, group, "member")
        for name in names:
            dset = check.member(group, name, "dataset")
            length = check.column(dset, length, columns.get(name) == "text")
        missing = [name for name in required if name not in names]
        if finished and missing:
            raise check.fail(group, f"has no column {missing[0]!r}")
    for table, width in (("done", 2), ("digests", 3)):
        group = check.member(run, table, "group")
        for name in _names(group, group, "member") if group is not None else []:
            dset = check.member(group, name, "dataset")
            if name not in sizes:
                raise check.fail(dset, "belongs to no job of the file")
            check.table(dset, width)
            if table == "digests":
                _check_digest_rows(check, dset, sizes[name])


def _check_digest_rows(check: ResultsCheck, dset: Any, size: int) -> None:
    """Chunks (offset, count, digest) within the job, none overlapping: `check` reads each once."""
    rows = sorted((int(row[0]), int(row[1])) for row in dset[()])
    end = 0
    for offset, count in rows:
        if offset < end or count < 0 or offset + count > size:
            raise check.fail(
                dset, f"lists a chunk of {count:,} items at {offset:,} outside its job or overlapping"
            )
        end = offset + count
