"""`python -m hpcthreads` and the `hpcthreads` command."""

import signal
import sys

from hpcthreads.errors import Interrupted, raise_for_signal, stopped_line


def entry() -> None:
    """Run the command line; a signal while Python still imports it ends in one line too."""
    # Before the imports, which take a while: SIGTERM's default would end the process with no word
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, raise_for_signal)
    try:
        from hpcthreads.cli import main
    except (KeyboardInterrupt, Interrupted):
        signum = signal.SIGINT if sys.exc_info()[0] is KeyboardInterrupt else sys.exc_info()[1].signum
        sys.stderr.write(stopped_line(signum) + "\n")
        sys.exit(128 + signum)
    main()


if __name__ == "__main__":
    entry()
