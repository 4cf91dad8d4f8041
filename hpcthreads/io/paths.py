"""The one place that decides whether a path may be written, and how a finished file takes its place.

hpcthreads only ever creates files, or replaces regular files (with
`--force`): never a directory, a device, a socket or a pipe, never one of a
command's own inputs. Containers often run as root, where nothing else
would stop a write to /dev/null or over the job file.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from collections.abc import Iterable
from pathlib import Path

from hpcthreads.errors import OutputError

LOCK_SUFFIX = ".lock"
PARTIAL_SUFFIX = ".partial"


def lock_path(output: Path) -> Path:
    """Where the run writing `output` keeps its lock (runtime/outputlock.py)."""
    output = Path(output)
    return output.with_name(output.name + LOCK_SUFFIX)


def holder(output: Path) -> str | None:
    """Who holds the lock of `output` ('pid P on HOST, since ...'), or None when no run does."""
    try:
        fd = os.open(lock_path(output), os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            # This very process (a run reading its own partial file) is not "another run"
            if text.startswith(f"pid {os.getpid()} on {socket.gethostname()},"):
                return None
            return text or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def run_output(path: Path) -> Path:
    """The output a run's file belongs to: OUT for OUT.partial, else the path itself."""
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        return path.with_name(path.name[: -len(PARTIAL_SUFFIX)])
    return path


def kind_of(path: Path) -> str | None:
    """None when nothing is at `path`, 'file' for a regular file, else what is there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"{str(path)!r}: cannot look at it ({exc.strerror})") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "file" if os.path.isfile(path) else "link to something that is not a regular file"
    return "device, socket or pipe"


def check_output_path(
    path: Path | str, force: bool, inputs: Iterable[Path | str] = (), what: str = "output"
) -> Path:
    """Refuse an output that may not be written; returns it as a Path.

    Refused: an empty path, a path naming a directory (or ending in '/'), a
    missing or read-only directory, anything but a regular file where the
    output would go (even with `force`), an existing file without `force`,
    and any of `inputs`.
    """
    text = str(path)
    if not text.strip():
        raise OutputError(f"{what}: the path is empty")
    if text.endswith(os.sep):
        raise OutputError(f"{what} {text!r} names a directory; give a file name")
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{what} {text!r}: directory {str(parent)!r} does not exist")
    kind = kind_of(path)
    if kind is not None and kind != "file":
        raise OutputError(f"{what} {text!r} is a {kind}; hpcthreads only replaces regular files")
    if path.is_symlink():
        # Planted or not, a link is not the regular file an output replaces
        raise OutputError(f"{what} {text!r} is a symbolic link; hpcthreads only replaces regular files")
    for source in inputs:
        if kind is not None and Path(source).exists() and os.path.samefile(path, source):
            raise OutputError(f"{what} {text!r} is also an input ({str(source)!r}); write elsewhere")
    if kind is not None and not force:
        raise OutputError(f"{what} {text!r} exists; use --force to overwrite it")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{what} {text!r}: directory {str(parent)!r} is not writable")
    return path


def replace_output(finished: Path, output: Path) -> None:
    """Rename a finished file over `output`, checking again that only a regular file is replaced."""
    kind = kind_of(output)
    if kind is not None and (kind != "file" or output.is_symlink()):
        kind = "symbolic link" if output.is_symlink() else kind
        raise OutputError(
            f"{str(output)!r} became a {kind} during the run; the results stay in {str(finished)!r}"
        )
    try:
        finished.replace(output)
    except OSError as exc:
        raise OutputError(f"cannot rename {str(finished)!r} to {str(output)!r} ({exc.strerror})") from None
