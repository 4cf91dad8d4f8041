"""One exception family: every error a user can cause or fix; and how inputs appear in its messages."""

from __future__ import annotations

import os
import reprlib
import signal
from typing import Any

# The longest quotation of an input in a message: job files and results files can hold anything,
# and a message is one line on a terminal
MAX_SHOWN = 80
# The longest message of a user error (exit status 2), whatever built it
MAX_MESSAGE = 2000
# Integers beyond this many bits are described, not written out (a 5000-digit number)
MAX_SHOWN_BITS = 256


class HPCThreadsError(Exception):
    """Base of every error hpcthreads reports to the user in one line."""

    exit_code = 2


class ConfigError(HPCThreadsError):
    """Bad input: a job file, a parameter or an option that cannot be used."""


class OutputError(HPCThreadsError):
    """The output file cannot be created, opened or trusted."""


class JobFailedError(HPCThreadsError):
    """A job failed on a worker; the message carries the worker's report."""

    exit_code = 1


class BackendError(HPCThreadsError):
    """A compute backend was asked for but cannot run here."""


class Interrupted(BaseException):  # noqa: N818 - a stop, like KeyboardInterrupt, not an error
    """A signal (SIGTERM) that ends a command which has nothing it could still save.

    A BaseException, as KeyboardInterrupt is: no `except Exception` stops it
    on its way out, and every `finally` and cleanup on the way runs.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# Signals received while the command could only stop by raising (see `raise_for_signal`)
_received: list[int] = []


# Seconds between tries to raise a signal's exception that had to wait (see `raise_for_signal`)
RETRY_SECONDS = 0.01
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def raise_for_signal(signum: int, frame: Any = None) -> None:
    """A signal handler: remember the signal, then unwind (KeyboardInterrupt for SIGINT).

    The exception is raised only in hpcthreads' own code. Raised in a library's
    Python code that compiled code called back (h5py's type conversions, Numba's
    compiler), it would be printed and dropped there: so while such code runs,
    it waits, and a timer tries again every RETRY_SECONDS. Whoever installs a
    graceful handler later asks `received_signal` and stops all the same.
    """
    if signum not in _received:
        _received.append(signum)
    if frame is not None and not frame.f_code.co_filename.startswith(_PACKAGE):
        signal.signal(signal.SIGALRM, _retry)
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
        return
    signal.setitimer(signal.ITIMER_REAL, 0)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def _retry(_signum: int, frame: Any) -> None:
    raise_for_signal(_received[0], frame)


def stop_on_signals() -> dict[int, Any]:
    """Make SIGINT and SIGTERM unwind through `raise_for_signal` where they have their defaults (an
    ignored one stays ignored); returns the handlers there were, for `restore_signals`."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, raise_for_signal)
    return previous


def restore_signals(previous: dict[int, Any]) -> None:
    """Put back the handlers `stop_on_signals` replaced."""
    for sig, handler in previous.items():
        if signal.getsignal(sig) is raise_for_signal:
            signal.signal(sig, handler)


def stopped_line(signum: int) -> str:
    """What a command that a signal ended before it could save anything says."""
    return f"hpcthreads: stopped by {signal.Signals(signum).name}; no file was left half written"


def received_signal() -> int | None:
    """The first signal `raise_for_signal` handled in this process, if any."""
    return _received[0] if _received else None


class _BoundedRepr(reprlib.Repr):
    """A repr whose work and length are bounded, however large or deeply nested the value.

    A value from a YAML file may share one list a billion times through
    aliases: the plain repr would build all of it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxdict = 4
        self.maxstring = MAX_SHOWN
        self.maxother = MAX_SHOWN

    def repr_int(self, x: int, level: int) -> str:
        # Writing out a huge integer costs time quadratic in its digits, and Python refuses
        # beyond 4300 of them
        if abs(x).bit_length() > MAX_SHOWN_BITS:
            return f"<an integer of {abs(x).bit_length():,} bits>"
        return super().repr_int(x, level)


_BOUNDED = _BoundedRepr()


def shown(value: Any) -> str:
    """VALUE as an error message quotes it: a repr of at most MAX_SHOWN characters, on one line."""
    text = _BOUNDED.repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def message_of(exc: HPCThreadsError) -> str:
    """The text printed for EXC: a user error is one line of at most MAX_MESSAGE characters.

    This bounds any message, including one that quotes an input without
    `shown`; a failed job's message (exit 1) keeps the worker's report whole.
    """
    text = str(exc)
    if exc.exit_code != 2:
        return text
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    if len(text) > MAX_MESSAGE:
        text = f"{text[: MAX_MESSAGE - 40]}... ({len(text) - MAX_MESSAGE + 40:,} characters cut)"
    return text
