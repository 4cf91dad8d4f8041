"""One exception family: every error a user can cause or fix."""


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
