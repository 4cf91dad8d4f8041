"""A run under MPI: start-up (start.py), the coordinator and worker loops, scheduling, the ledger.

Nothing here is imported by `import hpcthreads`; `hpcthreads run` imports
`hpcthreads.runtime.start`, which starts MPI inside `run()`.
"""
