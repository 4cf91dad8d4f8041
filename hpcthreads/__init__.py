"""hpcthreads: MPI batch computations of Collatz (3n+1) ranges and thread trajectories.

Importing this package starts no MPI and imports neither Numba nor CuPy.
"""

__version__ = "0.1.0"


def open(path):  # noqa: A001 - the analysis entry point reads like the builtin
    """Open a results file for analysis: see hpcthreads.io.results.Results."""
    from hpcthreads.io.results import Results

    return Results(path)
