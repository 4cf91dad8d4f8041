"""Reading a campaign's small files: each read bounded, its shape checked before anything uses it.

Anyone who can write the campaign directory can leave anything in it: a torn
or empty file, `null`, a list, text where a number belongs, a link to a
device or a FIFO. Leases, done markers, holder records and the campaign file
are read with `read_record` (one regular file, never through a link, at most
`limit` bytes, JSON) and checked by the reader that knows their shape with the
field checks below; what fails is a `DamagedRecord`, never used.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

# The largest lease, done marker or holder record (they are a few hundred bytes)
MAX_RECORD_BYTES = 1 << 16
# The longest text field kept from a record (a host name, a batch job's id)
MAX_TEXT = 256


class DamagedRecord(ValueError):
    """A campaign file that is not what hpcthreads wrote there; the message says how."""


def read_record(path: Path | str, limit: int = MAX_RECORD_BYTES) -> Any:
    """The JSON value in the regular file PATH; DamagedRecord for anything else.

    FileNotFoundError passes through (a record that is not there yet is not a
    damaged one); so does any other OSError of the filesystem itself.
    """
    try:
        # Non-blocking: a FIFO planted at the name would otherwise hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DamagedRecord("a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DamagedRecord("not a regular file")
        if info.st_size > limit:
            raise DamagedRecord(f"{info.st_size:,} bytes, more than such a file ever holds")
        data = _read_at_most(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise DamagedRecord(f"more than {limit:,} bytes, more than such a file ever holds")
    if not data.strip():
        raise DamagedRecord("empty (torn)")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DamagedRecord("not JSON (torn or overwritten)") from None


def _read_at_most(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def is_count(value: Any, low: int = 0) -> bool:
    """An integer (not a boolean) of at least LOW."""
    return type(value) is int and value >= low


def number(value: Any) -> float | None:
    """VALUE as a finite float when it is an integer or a float (not a boolean), else None."""
    if type(value) not in (int, float):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def text(value: Any) -> str | None:
    """VALUE when it is text short enough to show on one line, else None."""
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        return None
    return value


def mapping(value: Any, what: str) -> dict[str, Any]:
    """VALUE when it is a JSON object; DamagedRecord naming what it is instead."""
    if not isinstance(value, dict):
        kind = "null" if value is None else type(value).__name__
        raise DamagedRecord(f"{what} is {kind}, not a record")
    return value
