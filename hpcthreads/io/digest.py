"""Checksums: of each chunk's per-item data, of each job's summary, of each ledger line.

CRC-32 (zlib, about 4 GB/s here): it catches any flipped bit or byte, which
is what disks, networks and parallel filesystems do to long runs; it is not
a defence against someone who wants to forge results.

- A chunk's data digest covers, for each of its per-item datasets in name
  order, the name and the rows it wrote, in the dataset's type. It is taken
  where the chunk is computed, before the data travels or is written, and
  recorded in the ledger and, at the end, in /run/digests/JOB as rows
  (offset, count, digest).
- A job's summary digest covers its merged summary as plain JSON (the form
  the ledger holds) and its overflow tables; it is the job attribute
  `summary_digest`.
- A job's attribute digest covers the attributes that say where its data
  lies and how to read it (MEANING_ATTRS: its type, start, size, parameters,
  ...) and the file's integer encoding; it is the job attribute
  `attrs_digest`. Data and summary may be intact while a changed `start`
  makes every n read from them wrong.
- A ledger line, and the checkpoint, carry their own digest as a last key,
  `check`.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

from hpcthreads.io.schema import decode_int

# Job attributes that locate or interpret its data and summary (those a job type has)
MEANING_ATTRS = (
    "type",
    "start",
    "size",
    "count",
    "thread_count",
    "max_depth",
    "max_steps",
    "store",
    "high_word",
    "parameters",
)


def attrs_digest(attrs: Any, integer_encoding: Any) -> int:
    """The digest of a job group's MEANING_ATTRS as stored (read back: `attrs` is the group's)."""
    values = {name: str(attrs[name]) for name in MEANING_ATTRS if name in attrs}
    text = json.dumps({"attrs": values, "integer_encoding": str(integer_encoding)}, sort_keys=True)
    return zlib.crc32(text.encode())


def data_digest(arrays: dict[str, np.ndarray], dtypes: dict[str, str]) -> int:
    """The digest of a chunk's per-item arrays, as they are stored (`dtypes`: name -> dataset type)."""
    crc = 0
    for name in sorted(arrays):
        crc = zlib.crc32(name.encode(), crc)
        data = np.ascontiguousarray(arrays[name], dtype=dtypes.get(name, arrays[name].dtype))
        crc = zlib.crc32(data.view(np.uint8).reshape(-1), crc)
    return crc


def summary_digest(plain: dict[str, Any], extra: dict[str, list] | None = None) -> int:
    """The digest of a job's merged summary (plain, exact integers) and its overflow tables."""
    tables = {name: sorted(list(row) for row in rows) for name, rows in (extra or {}).items() if rows}
    text = json.dumps({"summary": plain, "extra": tables}, sort_keys=True, separators=(",", ":"))
    return zlib.crc32(text.encode())


def with_check(entry: dict[str, Any]) -> str:
    """A JSON line (no newline) of `entry` with its digest as the last key, `check`."""
    text = json.dumps(entry, separators=(",", ":"))
    return text[:-1] + f',"check":{zlib.crc32(text.encode())}}}' if entry else text


def checked(entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` without its `check`; ValueError when the digest does not match (entries written before
    digests existed have none and pass)."""
    if "check" not in entry:
        return entry
    body = dict(entry)
    check = body.pop("check")
    if zlib.crc32(json.dumps(body, separators=(",", ":")).encode()) != check:
        raise ValueError("its checksum does not match: it was changed after it was written")
    return body


def verify_rows(group: Any, rows: list[list[int]]) -> tuple[list[tuple[int, int]], int]:
    """Check the recorded chunks (offset, count, digest) of a job group against its datasets.

    Returns the (offset, count) of every chunk whose data does not match, and the bytes read.
    """
    size = decode_int(group.attrs["size"])
    names = sorted(n for n, item in group.items() if hasattr(item, "shape") and item.shape[:1] == (size,))
    bad, read = [], 0
    for offset, count, digest in rows:
        arrays = {name: group[name][offset : offset + count] for name in names}
        read += sum(a.nbytes for a in arrays.values())
        if data_digest(arrays, {name: group[name].dtype for name in names}) != digest:
            bad.append((offset, count))
    return bad, read
