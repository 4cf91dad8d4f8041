"""MPI start-up, rank-aware logging, abort-on-exception, and polling without spinning."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

LAUNCHER_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "SLURM_STEP_ID",
    "MPI_LOCALRANKID",
)


def under_launcher() -> bool:
    """True when mpiexec, srun or a PMI launcher started this process."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def init_mpi() -> Any | None:
    """COMM_WORLD, or None when MPI is unavailable and no launcher started us."""
    try:
        import mpi4py

        mpi4py.rc.threads = False
        from mpi4py import MPI
    except Exception as exc:  # noqa: BLE001 - any failure to load MPI
        if under_launcher():
            raise RuntimeError(f"started by an MPI launcher but mpi4py cannot load MPI: {exc}") from exc
        return None
    return MPI.COMM_WORLD


def rank0_answer(comm: Any, compute: Callable[[], T]) -> T:
    """What `compute()` returns on rank 0, on every rank; its HPCThreadsError raised on every rank.

    For questions only rank 0 should ask (the filesystem's, most often): every rank then
    reaches the same verdict and no rank is left waiting for another.
    """
    from hpcthreads.errors import HPCThreadsError

    answer: Any = None
    if comm is None or comm.Get_rank() == 0:
        try:
            answer = compute()
        except HPCThreadsError as exc:
            answer = exc
    if comm is not None and comm.Get_size() > 1:
        answer = comm.bcast(answer, root=0)
    if isinstance(answer, HPCThreadsError):
        raise answer
    return answer


def abort_on_exception(comm: Any) -> None:
    """An uncaught exception on any rank aborts every rank: no hung allocation."""
    if comm is None or comm.Get_size() == 1:
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        previous(kind, value, tb)
        abort_world(comm, 1)

    sys.excepthook = hook


# Seconds between the last words of an aborting rank and MPI_Abort
ABORT_GRACE_SECONDS = 2.0


def abort_world(comm: Any, code: int) -> None:
    """Flush this rank's output, give the launcher time to forward it, then abort every rank.

    The launcher kills all processes as soon as it hears of the abort; lines
    still in a pipe at that moment are lost (seen with MPICH's Hydra under
    load), and with them the reason for the abort.
    """
    for handler in logging.getLogger("hpcthreads").handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    time.sleep(ABORT_GRACE_SECONDS)
    comm.Abort(code)


class Poller:
    """Wait between empty polls: spin briefly after activity, then sleep with backoff.

    A rank blocked in MPI's recv spins a whole core. Polling with a sleep that
    backs off from 50 us to `ceiling` costs about 1% of a core when idle; the
    short spin (`spin` seconds after the last message) keeps the latency of a
    busy exchange in microseconds.
    """

    def __init__(self, floor: float = 5e-5, ceiling: float = 0.005, spin: float = 0.001) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.spin = spin
        self.delay = floor
        self.active_at = time.perf_counter()

    def reset(self) -> None:
        self.delay = self.floor
        self.active_at = time.perf_counter()

    def wait(self) -> None:
        if time.perf_counter() - self.active_at < self.spin:
            return
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, self.ceiling)


class RankFilter(logging.Filter):
    def __init__(self, rank: int, size: int) -> None:
        super().__init__()
        self.tag = f"{rank}/{size} {socket.gethostname()}"

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.tag
        return True


# What a --log-file pattern may name, with the kind of value each stands for
LOG_FILE_FIELDS = {"rank": 0, "size": 1, "host": "host"}
_LOG_FILE_HELP = "the placeholders are {rank}, {size} and {host}; write {{ or }} for a brace"


def parse_log_file(pattern: str) -> None:
    """Refuse a --log-file pattern that could not be filled in on every rank, naming the placeholders.

    A field may carry a format spec (`{rank:04d}`); positional fields, other
    names, attribute or index access, conversions and widths beyond two
    digits (a line of a gigabyte) are refused before any rank starts.
    """
    from string import Formatter

    from hpcthreads.errors import ConfigError, shown

    def refuse(problem: str) -> ConfigError:
        return ConfigError(f"--log-file {shown(pattern)}: {problem}; {_LOG_FILE_HELP}")

    try:
        fields = [
            (name, spec, conv) for _, name, spec, conv in Formatter().parse(pattern) if name is not None
        ]
    except ValueError:
        raise refuse("a brace without its pair") from None
    for name, spec, conversion in fields:
        if name == "" or name.isdigit():
            raise refuse(f"{{{name}}} is a positional field")
        if name not in LOG_FILE_FIELDS:
            raise refuse(f"unknown placeholder {shown('{' + name + '}')}")
        if conversion is not None or "{" in spec or any(len(w) > 2 for w in re.findall(r"\d+", spec)):
            raise refuse(f"the placeholder {{{name}}} takes a short format spec only, such as {{rank:04d}}")
        try:
            format(LOG_FILE_FIELDS[name], spec)
        except ValueError:
            raise refuse(f"{shown(spec)} is not a format spec for {{{name}}}") from None


def setup_logging(rank: int, size: int, level: str | None, log_file: str | None) -> None:
    """Every line carries rank/size and host; non-root ranks log warnings only by default."""
    logger = logging.getLogger("hpcthreads")
    logger.handlers.clear()
    logger.propagate = False
    default = "INFO" if rank == 0 else "WARNING"
    logger.setLevel((level or default).upper())
    if log_file:
        # The command line checked it already; a configuration built in Python gets the same verdict
        parse_log_file(log_file)
        path = log_file.format(rank=rank, size=size, host=socket.gethostname())
        from hpcthreads.errors import ConfigError
        from hpcthreads.io.safewrite import open_nofollow

        try:
            # Appended to, never through a symbolic link someone planted at the name
            fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, "log file")
        except OSError as exc:
            raise ConfigError(f"--log-file: cannot write {path!r} ({exc.strerror})") from None
        handler: logging.Handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RankFilter(rank, size))
    handler.setFormatter(logging.Formatter("%(asctime)s %(rank)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)


def launcher_rank() -> int:
    """This process's rank as the launcher set it, before MPI starts (0 without one)."""
    for name in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        value = os.environ.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return 0


class MPITransport:
    """Pickled point-to-point messages on a communicator, tagged by kind; receiving never blocks."""

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self.comm = comm
        self._status = MPI.Status()
        self._any_source, self._any_tag = MPI.ANY_SOURCE, MPI.ANY_TAG

    def send(self, message: Any, dest: int) -> None:
        from hpcthreads.runtime.protocol import tag_of

        self.comm.send(message, dest=dest, tag=tag_of(message))

    def receive(self, source: int | None = None, tag: int | None = None) -> tuple[Any, int]:
        """(message, source), or (None, -1) when nothing is waiting."""
        status = self._status
        source = self._any_source if source is None else source
        if not self.comm.Iprobe(source=source, tag=self._any_tag if tag is None else tag, status=status):
            return None, -1
        sender = status.Get_source()
        return self.comm.recv(source=sender, tag=status.Get_tag()), sender
