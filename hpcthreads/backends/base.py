"""The interface every compute backend implements, and the raw results it returns.

Backends compute; workloads (hpcthreads.workloads) turn raw results into
exact, mergeable ones, finishing on the exact path every start value that a
kernel reports as leaving 128 bits. Record tables are uint64 rows
(offset, hi, lo): offset from the chunk's first value, value in two words.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from hpcthreads.config import DEFAULT_SIEVE_BITS, DEFAULT_SIEVE_EXTRA_BITS, JOB_TYPES


class CollatzRaw(NamedTuple):
    sum_delay: int
    histogram: np.ndarray
    delay_records: np.ndarray
    path_records: np.ndarray
    glide_records: np.ndarray
    overflows: np.ndarray
    delay: np.ndarray | None = None
    glide: np.ndarray | None = None
    peak_lo: np.ndarray | None = None
    peak_hi: np.ndarray | None = None


class VerifyRaw(NamedTuple):
    glide_records: np.ndarray
    too_long: np.ndarray
    overflows: np.ndarray
    # Start values followed past the sieve (all of them without one): the work, the same on every backend
    walked: int


class SliceRaw(NamedTuple):
    """A residue slice's verify results, as exact start values (see backends.slicesieve)."""

    # (n, glide) of the values that beat the best glide of their A in the slice: record candidates
    candidates: list[tuple[int, int]]
    too_long: list[int]
    overflows: list[int]
    walked: int


class ThreadRaw(NamedTuple):
    paths_lo: np.ndarray
    paths_hi: np.ndarray
    depth: np.ndarray
    final_lo: np.ndarray
    final_hi: np.ndarray
    overflows: np.ndarray


class SlicePlan(NamedTuple):
    """What every chunk of a job cut by residue shares (workloads.verify builds it)."""

    K: int
    # The body's ends 2^K a0 + b0 and 2^K a1 + b1 (workloads.slices.SliceLayout.body)
    body: tuple[int, int, int, int]
    max_steps: int
    # The glide every body value must beat to be a record: the witness's
    floor: int
    # Bits the sieve goes further per value
    extra: int
    # The 3^2 sieve skips n = 3m + 2 and n = 9m + 4 where n >= skip_from or n < skip_below
    mod9: bool
    skip_from: int
    skip_below: int
    # deltaN = 1: skip odd residues that join B - 1 after K steps
    join: bool


def split_words(value: int) -> tuple[int, int]:
    """(hi, lo) 64-bit words of a value below 2**128."""
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


class BaseBackend:
    """A compute backend; subclasses set `name` and import heavy modules in __init__."""

    name = "base"
    is_gpu = False
    # Fewest items worth one call: a GPU needs millions per launch to fill the device
    min_batch = 1

    def collatz_range(self, start: int, count: int, store: bool) -> CollatzRaw:
        raise NotImplementedError

    def verify_range(
        self,
        start: int,
        count: int,
        max_steps: int,
        sieve_bits: int = DEFAULT_SIEVE_BITS,
        sieve_extra_bits: int = DEFAULT_SIEVE_EXTRA_BITS,
        skip_from: int = 0,
    ) -> VerifyRaw:
        """Verify [start, start+count); `skip_from` > 0 lets the 3^2 sieve skip n = 3m+2 and n = 9m+4
        from there on (workloads.verify says when that is exact). The sieve settings change no result.
        """
        raise NotImplementedError

    def verify_slice(self, plan: SlicePlan, bfirst: int, ifirst: int, blast: int, iend: int) -> SliceRaw:
        """Verify a run of residues of a job cut by residue (workloads.slices): from the `ifirst`-th
        value of residue `bfirst` to the `iend`-th (exclusive) of `blast`."""
        raise NotImplementedError

    def thread_paths(self, start: int, count: int, max_depth: int) -> ThreadRaw:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def warm_up(self, types: Iterable[str] = JOB_TYPES) -> None:
        """Compile or load the kernels of these job types now, so that no chunk pays for it.

        The verify kernel is compiled with a small sieve; each verify job then
        loads the tables of its own (BaseWorkload.prepare).
        """
        types = set(types)
        if "collatz" in types:
            self.collatz_range(1, 2, True)
        if "verify" in types:
            self.verify_range(2**20, 2, 10, 4, 2)
            # The slice kernel with a 2^9 sieve (the same compiled code as for any K)
            plan = SlicePlan(9, (2**20, 0, 2**20 + 4, 0), 1000, 0, 2, True, 0, 0, True)
            self.verify_slice(plan, 256, 0, 300, 4)
        if "thread" in types:
            self.thread_paths(1, 2, 2)
