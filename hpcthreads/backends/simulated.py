"""`simulated`: workers that sleep for the time their chunks would take, and compute nothing.

This backend exists to measure the coordination of large runs on a small
machine: a sleeping rank costs no CPU, so hundreds of oversubscribed ranks
exchange real messages through the real coordinator, ledger and writer while
two cores are enough. Every value it returns is zero. A results file written
with it says so in its root attribute `simulated`, and `inspect` repeats it.
"""

from __future__ import annotations

import math
import time

import numpy as np

from hpcthreads.backends.base import BaseBackend, CollatzRaw, SlicePlan, SliceRaw, ThreadRaw, VerifyRaw
from hpcthreads.config import DEFAULT_SIEVE_BITS, DEFAULT_SIEVE_EXTRA_BITS
from hpcthreads.errors import ConfigError

SIMULATED_NOTE = (
    "simulated run (--backend simulated): workers slept for the time their chunks would take; "
    "this file holds no results"
)
# Spreads the slowed ranks evenly over the run: rank r is slowed when frac(r * PHI) < FRACTION
PHI = (math.sqrt(5) - 1) / 2


def parse_slow(text: str) -> tuple[float, float]:
    """`FRACTION:FACTOR` -> (fraction of workers slowed, factor they are slowed by); '' -> (0, 1)."""
    if not text:
        return 0.0, 1.0
    fraction, sep, factor = str(text).partition(":")
    try:
        values = float(fraction), float(factor)
    except ValueError:
        values = (-1.0, 0.0)
    if not sep or not 0 <= values[0] <= 1 or not 1 <= values[1] <= 1e6:
        raise ConfigError(
            f"--simulated-slow: {text!r} is not FRACTION:FACTOR with 0 <= FRACTION <= 1 and FACTOR >= 1 "
            "(0.2:4 slows a fifth of the workers four times)"
        )
    return values


def is_slowed(rank: int, fraction: float) -> bool:
    return (rank * PHI) % 1.0 < fraction


class SimulatedBackend(BaseBackend):
    """Sleeps count / rate seconds per call; a rank chosen by `slow` sleeps FACTOR times longer."""

    name = "simulated"

    def __init__(self, rate: float = 1e9, slow: str = "", rank: int = 0) -> None:
        if not 0 < rate < math.inf:
            raise ConfigError(f"--simulated-rate: {rate!r} is not a positive number of items per second")
        fraction, factor = parse_slow(slow)
        self.slowed = is_slowed(rank, fraction)
        self.rate = rate / factor if self.slowed else rate

    def describe(self) -> str:
        speed = f"{self.rate:.3g} items/s" + (" (slowed)" if self.slowed else "")
        return f"simulated, {speed}"

    def warm_up(self, types: object = ()) -> None:
        """Nothing to compile."""

    def _sleep(self, count: int) -> None:
        time.sleep(count / self.rate)

    def collatz_range(self, start: int, count: int, store: bool) -> CollatzRaw:
        self._sleep(count)
        table = np.zeros((0, 3), np.uint64)
        arrays = {}
        if store:
            arrays = {
                "delay": np.zeros(count, np.uint32),
                "glide": np.zeros(count, np.uint32),
                "peak_lo": np.zeros(count, np.uint64),
                "peak_hi": np.zeros(count, np.uint64),
            }
        return CollatzRaw(0, np.zeros(0, np.int64), table, table, table, np.zeros(0, np.int64), **arrays)

    def verify_range(
        self,
        start: int,
        count: int,
        max_steps: int,
        sieve_bits: int = DEFAULT_SIEVE_BITS,
        sieve_extra_bits: int = DEFAULT_SIEVE_EXTRA_BITS,
        skip_from: int = 0,
    ) -> VerifyRaw:
        self._sleep(count)
        empty = np.zeros(0, np.int64)
        return VerifyRaw(np.zeros((0, 3), np.uint64), empty, empty, 0)  # nothing walked

    def verify_slice(self, plan: SlicePlan, bfirst: int, ifirst: int, blast: int, iend: int) -> SliceRaw:
        a0, b0, a1, b1 = plan.body

        def before(residue: int) -> int:
            return (a1 - a0) * residue + min(residue, b1) - min(residue, b0)

        self._sleep(before(blast) + iend - before(bfirst) - ifirst)
        return SliceRaw([], [], [], 0)  # nothing walked

    def thread_paths(self, start: int, count: int, max_depth: int) -> ThreadRaw:
        self._sleep(count)
        paths = np.zeros((count, max_depth + 1), np.uint64)
        words = np.zeros(count, np.uint64)
        return ThreadRaw(
            paths, np.zeros_like(paths), np.zeros(count, np.uint32), words, words.copy(), np.zeros(0)
        )
