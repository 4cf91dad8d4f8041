"""The lock a run holds on its output for its whole life: OUT.lock.

Rank 0 takes an exclusive `flock` on OUT.lock before it looks at any of the
run's files, writes its pid and host into it, and keeps it until the run has
renamed its results into place (or stopped); then it removes the file. A
second run on the same output, with or without `--force` or `--resume`, is
refused while the lock is held, and `hpcthreads status` tells a running run
from a stopped one by it. A killed run's lock goes with its process.

Where `flock` does not work across nodes (some NFS mounts, Lustre without
the `flock` mount option), two runs started on different nodes are not kept
apart: don't start two runs of one output there.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from hpcthreads.errors import OutputError
from hpcthreads.io.paths import holder, kind_of, lock_path
from hpcthreads.io.safewrite import open_nofollow, refuse_link
from hpcthreads.io.space import full_error, is_disk_full

__all__ = ["OutputLock", "holder", "lock_path"]


class OutputLock:
    """An exclusive lock on OUT.lock, held from `acquire` to `release` (or the end of the process)."""

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path = lock_path(output)
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise OutputError naming the run that holds it."""
        refuse_link(self.path, "lock")
        kind = kind_of(self.path)
        if kind not in (None, "file"):
            raise OutputError(f"{str(self.path)!r} is a {kind}; it is where a run keeps its lock")
        while True:
            try:
                # Never through a link planted at the name: flock and the pid would go to its target
                fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT, "lock")
            except OSError as exc:
                raise OutputError(f"cannot create the lock {str(self.path)!r} ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise OutputError(
                    f"a run is writing {self.output} ({text}); wait for it, or stop it first "
                    f"(hpcthreads status {self.output})"
                ) from None
            # The file may have been removed by the run that held it: lock the one at the path
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode(), 0)
        except OSError as exc:
            self.release()
            if is_disk_full(exc):
                raise full_error(self.path, then="nothing was written: make room, then run again") from None
            raise OutputError(f"cannot write the lock {str(self.path)!r} ({exc.strerror})") from None

    def release(self) -> None:
        """Remove the lock file, then let go of the lock."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None
