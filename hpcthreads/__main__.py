"""`python -m hpcthreads` and the `hpcthreads` command."""

import signal
import sys

from hpcthreads.errors import Interrupted, stop_on_signals, stopped_line

_default_unraisable = sys.unraisablehook


def _unraisable(info: "sys.UnraisableHookArgs") -> None:
    """A signal's exception that Python had to drop (raised inside a callback from compiled code,
    as Numba's compiler makes) is not printed: it was remembered, and the command stops for it."""
    if isinstance(info.exc_value, (KeyboardInterrupt, Interrupted)):
        return
    _default_unraisable(info)


def entry() -> None:
    """Run the command line; a signal while Python still imports it ends in one line too."""
    # Before the imports, which take a while: SIGTERM's default would end the process with no word
    stop_on_signals()
    sys.unraisablehook = _unraisable
    try:
        from hpcthreads.cli import main
    except (KeyboardInterrupt, Interrupted):
        signum = signal.SIGINT if sys.exc_info()[0] is KeyboardInterrupt else sys.exc_info()[1].signum
        sys.stderr.write(stopped_line(signum) + "\n")
        sys.exit(128 + signum)
    main()


if __name__ == "__main__":
    entry()
