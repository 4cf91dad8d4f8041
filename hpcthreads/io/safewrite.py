"""Creating and replacing files in directories other users can write to, never through a planted link.

On a shared scratch or campaign directory anyone may create a symbolic link
at a name hpcthreads is about to write (OUT.lock, a ledger's temporary file,
an exported table) and point it at a file of the user's own. So:

- a file is created with O_EXCL | O_NOFOLLOW, or opened with O_NOFOLLOW;
- a file that is replaced is written under an unpredictable temporary name in
  its own directory (`mkstemp`, itself O_EXCL), then renamed over the final
  name; rename replaces a link at that name and never writes through it;
- a symbolic link where hpcthreads expects its own regular file is refused.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from hpcthreads.errors import OutputError

# Files are made with the permissions the user's umask gives (mkstemp alone gives 0600, which a
# metrics collector running as another user could not read); read once, while nothing else runs
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def refuse_link(path: Path | str, what: str = "file") -> None:
    """OutputError when a symbolic link is at PATH: hpcthreads writes its own regular files only."""
    if os.path.islink(path):
        raise OutputError(
            f"{what} {str(path)!r} is a symbolic link; hpcthreads never writes through one "
            "(remove it, or write elsewhere)"
        )


def open_nofollow(path: Path | str, flags: int, what: str = "file") -> int:
    """`os.open` that refuses a symbolic link at PATH (O_NOFOLLOW) with a one-line OutputError."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path, what)
        raise


def create_new(path: Path | str, what: str = "file") -> int:
    """A new empty file at PATH for writing: OutputError if anything, a link included, is there."""
    try:
        return open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, what)
    except FileExistsError:
        refuse_link(path, what)
        raise OutputError(f"{what} {str(path)!r} exists already; another process made it") from None


def temporary_beside(path: Path | str) -> tuple[int, Path]:
    """A new file of an unpredictable name in PATH's directory, for writing: (descriptor, its path)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.fchmod(fd, FILE_MODE)
    return fd, Path(name)


class Staged:
    """Files written under temporary names, renamed over their final names together at the end.

    Several files that make one result (an export's tables) appear all at
    once or not at all: an interrupt or an error before `commit` leaves every
    final name as it was.
    """

    def __init__(self, sync: bool = False) -> None:
        self.sync = sync
        self.pairs: list[tuple[Path, Path]] = []

    @contextmanager
    def replacing(self, path: Path | str, what: str = "file") -> Iterator[IO[bytes]]:
        """Write the new content of PATH into the file this yields (renamed over PATH at `commit`)."""
        path = Path(path)
        refuse_link(path, what)
        fd, tmp = temporary_beside(path)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                if self.sync:
                    os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.pairs.append((tmp, path))

    def commit(self) -> None:
        for tmp, path in self.pairs:
            os.replace(tmp, path)
        self.pairs = []

    def discard(self) -> None:
        for tmp, _ in self.pairs:
            tmp.unlink(missing_ok=True)
        self.pairs = []


@contextmanager
def staged(sync: bool = False) -> Iterator[Staged]:
    """A `Staged` set of files, committed when the block ends and discarded if it raises."""
    stage = Staged(sync)
    try:
        yield stage
        stage.commit()
    except BaseException:
        stage.discard()
        raise


@contextmanager
def replacing(path: Path | str, what: str = "file", sync: bool = False) -> Iterator[IO[bytes]]:
    """Write the new content of PATH into the file this yields; it replaces PATH when the block ends.

    The content goes to a temporary file beside PATH, renamed over it at the
    end (fsync'd first with `sync`), so PATH holds the old or the new
    content, never part of it; on an error the temporary file is removed.
    """
    with staged(sync) as stage, stage.replacing(path, what) as handle:
        yield handle


def write_replacing(path: Path | str, data: bytes | str, what: str = "file", sync: bool = False) -> None:
    """Replace PATH's content with DATA (text is written as UTF-8), as `replacing` does."""
    with replacing(path, what, sync) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
