"""Leaving MPI at the end of a run: a last barrier, a finalize that cannot deadlock, and a guard.

MPICH 4.0 and 4.1 with the UCX netmod (Debian 12's MPICH 4.0.2, which the parallel-HDF5
environment and the image use) can deadlock in MPI_Finalize. Its UCX finalize hook closes the
endpoint to every rank in flush mode (`ucp_disconnect_nb`), spins `ucp_worker_progress` until
every close completes, then waits in a PMI barrier that makes no UCX progress. Over UCX's TCP
transport, closing an endpoint that has sent anything sends the peer a zero-length PUT and
waits for its acknowledgement: a rank whose own closes are done sits in the PMI barrier and
never acknowledges a peer's PUT that arrives later, so that peer spins forever and everyone
else waits for it in the barrier. (On the test cluster: one rank in `ucp_worker_progress`
inside the hook, the others in `read` on the PMI socket; the unacknowledged 25-byte PUT request
in their sockets' receive queues.) MPICH removed that barrier after 4.1 (pmodels/mpich#6596).
A barrier of our own before MPI_Finalize cannot help: its messages need flushing again.

For those versions `leave_mpi` makes the hook skip the per-endpoint closes: `ucp_disconnect_nb`,
which libmpich calls through its PLT, is pointed at UCX's own no-op that returns UCS_OK, so
every rank goes straight to the PMI barrier and `ucp_worker_destroy` then tears the endpoints
down without waiting on any peer. That is safe once the run's last barrier has completed:
every message was matched and every file closed (nothing here uses MPI's one-sided calls,
whose remote completion the flush would guarantee). MPI_Finalize itself still runs, so the
launchers see every rank finalize. The C-level guard stays for any hang elsewhere.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

from hpcthreads.runtime.mpiutil import Poller

log = logging.getLogger("hpcthreads")

# Seconds a rank whose run has finished may spend leaving before it just exits; tests and the
# cluster loop (benchmarks/cluster_finalize.sh) shorten it with HPCTHREADS_FINALIZE_GRACE
FINALIZE_GRACE_SECONDS = 60
FINALIZE_GRACE_ENV = "HPCTHREADS_FINALIZE_GRACE"
# Seconds a rank leaving with an error waits for the others in the last barrier
ERROR_WAIT_SECONDS = 30.0
# In the line a rank that the guard ends writes to stderr (benchmarks/cluster_finalize.sh counts it)
GUARD_FIRED = "finalize guard fired"
# What the UCX finalize hook of MPICH 4.0 and 4.1 calls per endpoint, and UCX's no-op that returns
# a 64-bit 0 (UCS_OK as a status pointer), which replaces it
UCX_CLOSE = "ucp_disconnect_nb"
UCX_CLOSED = "ucs_empty_function_return_zero_int64"
# Relocation types of a PLT slot: x86-64 and AArch64
JUMP_SLOTS = {62: 7, 183: 1026}

# The guard's compiled handler and buffer, which must live until the process ends
_kept: dict[str, Any] = {}


def finalize_can_hang(library_version: str) -> bool:
    """Whether this MPI (MPI_Get_library_version's text) is one whose MPI_Finalize can deadlock.

    MPICH 4.0 and 4.1 on the ch4:ucx device: their UCX finalize hook waits in a PMI barrier,
    without UCX progress, after closing its endpoints (see the module's docstring).
    """
    version = re.search(r"MPICH Version:\s*(\d+)\.(\d+)", library_version)
    device = re.search(r"MPICH Device:\s*(\S+)", library_version)
    if version is None or device is None:
        return False
    return (int(version[1]), int(version[2])) in {(4, 0), (4, 1)} and device[1].startswith("ch4:ucx")


def leave_mpi(rank: int, size: int, wait: float | None = None) -> None:
    """Every rank of a multi-rank run that ended, its results in place: the way out of MPI.

    A polled MPI_Ibarrier (a blocking one spins a core while rank 0 writes the file) until every
    rank is done, then the finalize guard, then, where MPI_Finalize can hang, the endpoint closes
    taken out of it. mpi4py calls MPI_Finalize at exit. With `wait`, the barrier is given up
    after that many seconds (a rank leaving with an error, when the others may not be leaving
    at all: the launcher then ends them, as it always did), and MPI_Finalize is left as it is.
    """
    from mpi4py import MPI

    request = MPI.COMM_WORLD.Ibarrier()
    poller = Poller(ceiling=0.05)
    deadline = None if wait is None else time.monotonic() + wait
    while not request.Test():
        if deadline is not None and time.monotonic() > deadline:
            return
        poller.wait()
    guard_finalize(rank, size)
    if finalize_can_hang(MPI.Get_library_version()):
        problem = skip_endpoint_closes()
        if problem:
            log.warning("MPI_Finalize may hang (MPICH's UCX finalize, pmodels/mpich#6596): %s", problem)


def skip_endpoint_closes() -> str | None:
    """Point libmpich's PLT slot for ucp_disconnect_nb at UCX's own function that returns 0
    (UCS_OK: closed, nothing pending); None when done, else why not."""
    import ctypes

    path, ucs = _loaded_library(r"/libmpi(ch)?\.so[.\d]*$"), _loaded_library(r"/libucs\.so[.\d]*$")
    if path is None or ucs is None:
        return "libmpich or libucs is not among this process's mappings"
    slot = plt_slot(path.read_bytes(), UCX_CLOSE)
    if slot is None:
        return f"{path} has no writable PLT slot for {UCX_CLOSE}"
    base = _load_base(ctypes.cast(ctypes.CDLL(str(path)).MPI_Finalize, ctypes.c_void_p).value)
    closed = getattr(ctypes.CDLL(str(ucs)), UCX_CLOSED, None)
    if base is None or closed is None:
        return f"cannot find where {path} is loaded, or {UCX_CLOSED} in {ucs}"
    ctypes.c_void_p.from_address(base + slot).value = ctypes.cast(closed, ctypes.c_void_p).value
    log.debug("MPI_Finalize will not flush-close its UCX endpoints (pmodels/mpich#6596)")
    return None


def plt_slot(elf: bytes, symbol: str) -> int | None:
    """The address (from the load base) of the PLT slot through which a 64-bit little-endian
    shared object calls `symbol`; None without one, or when the slot lies in its read-only
    (RELRO) part: a library linked with -z now, whose slots cannot be written."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return None
    machine, phoff, shoff = struct.unpack_from("<18xH12xQQ", elf)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<54xHHHH", elf)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    relro = [
        (vaddr, vaddr + memsz)
        for kind, _, _, vaddr, _, _, memsz, _ in (
            struct.unpack_from("<IIQQQQQQ", elf, phoff + i * phentsize) for i in range(phnum)
        )
        if kind == 0x6474E552  # PT_GNU_RELRO
    ]
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != 4 or entsize != 24:  # SHT_RELA
            continue
        symbols, strings = sections[link], sections[sections[link][6]]
        for at in range(offset, offset + size, 24):
            where, info = struct.unpack_from("<QQ", elf, at)
            if info & 0xFFFFFFFF != JUMP_SLOTS.get(machine):
                continue
            name_at = strings[4] + struct.unpack_from("<I", elf, symbols[4] + (info >> 32) * 24)[0]
            if elf[name_at : elf.index(b"\0", name_at)].decode() == symbol:
                return None if any(lo <= where < hi for lo, hi in relro) else where
    return None


def _loaded_library(pattern: str) -> Path | None:
    """The first file mapped into this process whose path matches `pattern`."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and re.search(pattern, fields[5]):
            return Path(fields[5])
    return None


def _load_base(address: int | None) -> int | None:
    """Where the shared object holding `address` is loaded (dladdr)."""
    import ctypes

    class Info(ctypes.Structure):
        _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p)] + [
            ("sname", ctypes.c_char_p),
            ("saddr", ctypes.c_void_p),
        ]

    info = Info()
    if not address or not ctypes.CDLL(None).dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
        return None
    return info.fbase


def leave_mpi_after_error() -> None:
    """`leave_mpi` for a rank that leaves with an error, if MPI runs with several ranks.

    After a run every rank has finished (a failed job or a signal: rank 0 alone raises), the
    others already wait in the barrier; an error every rank reaches (a bad option) brings them
    all. Any other error leaves after ERROR_WAIT_SECONDS, as it did before there was a barrier.
    """
    import sys

    if "mpi4py.MPI" not in sys.modules:
        return
    from mpi4py import MPI

    if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        leave_mpi(MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size(), wait=ERROR_WAIT_SECONDS)


def finalize_grace() -> int:
    """The guard's seconds: HPCTHREADS_FINALIZE_GRACE when it is a positive whole number, else 60."""
    value = os.environ.get(FINALIZE_GRACE_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else FINALIZE_GRACE_SECONDS


def guard_finalize(rank: int, size: int, seconds: int | None = None) -> None:
    """Exit with status 0 if this rank, its run finished, is still alive `seconds` from now.

    Finalize (or whatever else holds a rank on its way out) runs after Python's own signal
    handlers have stopped, so the alarm's handler is a compiled C function: it writes one line
    to stderr, prepared here with rank and host, then calls _exit(0). Nothing is lost: the
    results file was complete before the alarm was set.
    """
    seconds = finalize_grace() if seconds is None else seconds
    line = (
        f"hpcthreads: rank {rank}/{size} on {socket.gethostname()} (pid {os.getpid()}): {GUARD_FIRED}, "
        f"still leaving MPI {seconds} s after its run ended; exiting with status 0\n"
    ).encode()
    try:
        import ctypes

        from numba import cfunc, types

        libc = ctypes.CDLL(None)
        leave, write = libc._exit, libc.write
        leave.argtypes, leave.restype = [ctypes.c_int], None
        # The buffer's address goes in as a plain integer: the handler cannot build Python objects
        write.argtypes, write.restype = [ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t], ctypes.c_ssize_t
        buffer = ctypes.create_string_buffer(line, len(line))
        address, length = ctypes.addressof(buffer), len(line)

        @cfunc(types.void(types.int32))
        def handler(_signum: int) -> None:
            write(2, address, length)
            leave(0)

        libc.signal.argtypes, libc.signal.restype = [ctypes.c_int, ctypes.c_void_p], ctypes.c_void_p
        libc.signal(signal.SIGALRM, handler.address)
        libc.alarm(int(seconds))
        _kept["guard"] = (handler, leave, write, buffer)
    except Exception as exc:  # noqa: BLE001 - without the guard the rank leaves as it always did
        log.debug("no finalize guard: %s", exc)
