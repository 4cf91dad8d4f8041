"""hpcthreads: MPI batch computations of Collatz (3n+1) ranges and thread trajectories.

Importing this package starts no MPI and imports neither Numba nor CuPy.
"""

__version__ = "0.1.0"
