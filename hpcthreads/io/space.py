"""Full disks and quotas: telling them apart from other write errors, and keeping room to stop cleanly.

A run that meets a full disk must still leave files a later `--resume` can
use: its ledger's stop record and a results file whose HDF5 metadata was
flushed whole (HDF5 that fails half-way through a flush can leave a file no
one can open). So a run keeps a *reserve*: a file of preallocated blocks
beside its output (OUT.reserve), freed at the moment the disk fills, or just
before the results are written at the end. Its room lets the run record why
it stopped and close its file properly.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hpcthreads.errors import OutputError
from hpcthreads.io.safewrite import create_new

# The error numbers of a full disk and of an exhausted quota
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# HDF5's own messages carry the system's errno inside their text
_HDF5_ERRNO = re.compile(r"errno = (\d+)")
RESERVE_SUFFIX = ".reserve"
# Room kept for stopping cleanly and for writing the results at the end, per run and per job
RESERVE_BASE = 512 * 1024
RESERVE_PER_JOB = 64 * 1024


def is_disk_full(exc: BaseException) -> bool:
    """Whether EXC (an OSError, or an error HDF5 raised through h5py) comes from a full disk or quota."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    codes = {int(code) for code in _HDF5_ERRNO.findall(str(exc))}
    return bool(codes & set(FULL_ERRNOS)) or "No space left on device" in str(exc)


def folder_of(path: Path | str) -> Path:
    path = Path(path)
    return path.parent if str(path.parent) else Path(".")


def free_bytes(path: Path | str) -> int:
    """Bytes free to this user in the filesystem of PATH's folder (0 when it cannot be told)."""
    try:
        return shutil.disk_usage(folder_of(path)).free
    except OSError:
        return 0


def size_text(count: int) -> str:
    """A byte count for people: 512 bytes, 3.1 MiB, 2.0 GiB."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:,.1f} {unit}" if unit != "bytes" else f"{count:,} bytes"
        value /= 1024
    return f"{count} bytes"


class DiskFullError(OutputError):
    """A write that failed for want of space; what to do next is added by whoever knows (`then`)."""

    def then(self, hint: str) -> DiskFullError:
        return DiskFullError(f"{self}; {hint}")


def full_error(path: Path | str, needed: int | None = None, then: str = "") -> DiskFullError:
    """The one-line error for a disk that filled while writing PATH (NEEDED: bytes the step needs)."""
    folder = folder_of(path)
    need = f"; it needs about {size_text(needed)}" if needed else ""
    text = f"no space left on the disk of {folder} writing {path} ({size_text(free_bytes(path))} free{need})"
    return DiskFullError(f"{text}{'; ' + then if then else ''}")


def check_room(path: Path | str, needed: int, what: str) -> None:
    """OutputError naming PATH when its folder has less than NEEDED bytes free."""
    free = free_bytes(path)
    if needed > free:
        raise DiskFullError(
            f"{path}: {what} needs {size_text(needed)}, and {folder_of(path)} has {size_text(free)} free"
        )


def allocate(fd: int, size: int) -> None:
    """Give the first SIZE bytes of the open file FD real blocks (OSError ENOSPC when they don't fit).

    Writing into a block that exists never fails for want of space; HDF5's
    early allocation only reserves addresses, which may be holes. A
    filesystem that cannot preallocate is left as it is.
    """
    if size <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise
        # EOPNOTSUPP, EINVAL: this filesystem has no preallocation; writes will tell


def dataset_bytes(workloads: Iterable[Any]) -> int:
    """Bytes of the per-item datasets of WORKLOADS (allocated in full when a results file is made)."""
    import numpy as np

    return sum(
        math.prod(shape) * np.dtype(dtype).itemsize
        for workload in workloads
        for shape, dtype in workload.datasets().values()
    )


def allocate_file(path: Path) -> None:
    """Give every byte of the file at PATH a real block (a full_error when they don't fit)."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        allocate(fd, size)
    except OSError as exc:
        if is_disk_full(exc):
            raise full_error(path, size) from None
        raise
    finally:
        os.close(fd)


def reserve_path(output: Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + RESERVE_SUFFIX)


def reserve_size(jobs: int) -> int:
    return RESERVE_BASE + RESERVE_PER_JOB * jobs


class Reserve:
    """Preallocated room beside a run's output, freed when it is needed."""

    def __init__(self, output: Path, size: int) -> None:
        self.path = reserve_path(output)
        self.size = size
        self.held = False

    def take(self) -> None:
        """Make the reserve (replacing one a killed run left); OutputError when the disk has no room."""
        self.release()
        fd = create_new(self.path, "reserve")
        try:
            allocate(fd, self.size)
            if os.fstat(fd).st_blocks * 512 < self.size:
                # No preallocation here: written blocks hold the room instead
                os.pwrite(fd, bytes(self.size), 0)
                os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise full_error(self.path, self.size, "free some space first") from None
            raise OutputError(f"cannot make {self.path} ({exc.strerror})") from None
        os.close(fd)
        self.held = True

    def release(self) -> bool:
        """Free the room; True when there was some to free."""
        held, self.held = self.held, False
        try:
            self.path.unlink()
        except FileNotFoundError:
            return held
        except OSError:
            return False
        return True
