"""The residue-slice verify on a GPU: the host side of the kernels slice_build and slice_walk.

The device builds the slice (the residues B that the extension tables and
the join rule keep, with c and T^K(B)); the host sorts them by B; the
device walks every value n = 2^K A + B that the 3^2 sieve and the
per-value sieve leave, k2 steps per lookup, counts them (`walked`) and
reports those whose walk stopped short (the step bound, a value near 2^128)
or whose step bound beats its task's best glide so far (a task: one A and a
group of residues in order of B; its best starts at the job's floor). The
host takes the reports in the order numba-cpu takes values (residues
increasing; per A that is all that matters) and settles them with
slicesieve.settle under numba-cpu's rule, so the candidates, the lists and
`walked` are numba-cpu's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from hpcthreads.backends import kernelcache
from hpcthreads.backends.base import SlicePlan, SliceRaw, split_words
from hpcthreads.backends.slicesieve import NC, NL, NO, fit_rows, settle, walk_limit_hi, walk_table
from hpcthreads.backends.slicetables import SliceTables

kernelcache.configure()

# The kernels' shared walk table has 2^WALK_BITS entries (cudaslice.WALK_BITS, WALK_BITS in collatz.cuh)
WALK_BITS = 11
STOPPED = np.uint64(1 << 63)


def walk_entries(k2: int) -> np.ndarray:
    """slicesieve.walk_table in one word per entry: 3^c | T^k2(r) << 20 | (k2 + c) << 40."""
    table = walk_table(k2)
    mul, ds = table[0::2], table[1::2]
    d, steps = ds & np.uint64(0xFFFFFFFF), ds >> np.uint64(32)
    if mul.max() >> 20 or d.max() >> 20 or steps.max() >> 8:
        raise ValueError(f"a walk table of {k2} bits does not pack into one word per entry")
    return mul | (d << np.uint64(20)) | (steps << np.uint64(40))


class Items(NamedTuple):
    """The slice's (h, stored survivor j) pairs in order of B: item L is entry jfirst + L of h = hfirst."""

    hfirst: int
    jfirst: int
    count: int


def residue_items(t: SliceTables, bfirst: int, blast: int) -> Items:
    """The stored survivors b and high parts h with bfirst <= 2^k1 h + b <= blast."""
    mask = (1 << t.k1) - 1
    nsurv = len(t.res)
    hfirst, hlast = bfirst >> t.k1, blast >> t.k1
    jfirst = int(np.searchsorted(t.res, np.uint64(bfirst & mask)))
    jend = int(np.searchsorted(t.res, np.uint64(blast & mask), side="right"))
    return Items(hfirst, jfirst, max(0, (hlast - hfirst) * nsurv + jend - jfirst))


def build_args(
    plan: SlicePlan, t: SliceTables, items: Items, dev: tuple, count: object, kept: object
) -> tuple:
    """slice_build's arguments after nthreads (dev: the device tables, BaseGPUBackend._slice_tables)."""
    scalars = (items.hfirst, items.jfirst, len(t.res), plan.K, t.k1, t.e1, t.e2, int(plan.join))
    return (*scalars, *dev[:9], count, kept)


def walk_args(plan: SlicePlan, t: SliceTables, piece: tuple, dev: tuple, kept: object) -> tuple:
    """slice_walk's arguments from K to below_lo; piece: (bfirst, ifirst, blast, iend)."""
    a0, b0, a1, b1 = plan.body
    head = (plan.K, a0, a1, b0, b1, *piece, kept, plan.max_steps, plan.floor)
    tables = (dev[9], int(walk_limit_hi(t.k2)), dev[10], plan.extra, dev[11], dev[8])
    two_k9 = (1 << (plan.K % 6)) % 9  # 2^K mod 9: 2 has order 6 mod 9
    skip_from = split_words(min(plan.skip_from, (1 << 128) - 1))
    return (*head, *tables, two_k9, int(plan.mod9), *skip_from, *split_words(plan.skip_below))


def settle_reports(
    plan: SlicePlan, t: SliceTables, kept: np.ndarray, report: np.ndarray, walked: int
) -> SliceRaw:
    """The values the device reported, settled as numba-cpu settles them: rows of `report` are
    (index into `kept`, A, steps | stopped << 63), rows of `kept` (B, c, T^K(B) hi, lo)."""
    residues = kept[report[:, 0].astype(np.int64)] if len(report) else np.zeros((0, 4), np.uint64)
    order = np.lexsort((report[:, 1], residues[:, 0]))
    a0, _, a1, _ = plan.body
    cand, long_, over = settle_in_order(
        report[order], residues[order], np.uint64(a0), np.uint64(a1), plan.K, plan.max_steps, plan.floor,
        t.p3hi, t.p3lo,
    )  # fmt: skip

    def value(row: np.ndarray) -> int:
        return (int(row[0]) << 64) | int(row[1])

    candidates = [(value(r), int(r[2])) for r in cand]
    return SliceRaw(candidates, [value(r) for r in long_], [value(r) for r in over], walked)


@njit(cache=True)
def settle_in_order(report, residues, a0, a1, K, max_steps, floor_glide, p3hi, p3lo):
    """slicesieve.lanes' rule on the reported values, in order of (B, A): a value whose walk stopped
    short, or whose bound beats its A's best glide so far, is settled exactly (slicesieve.settle)."""
    n = report.shape[0]
    abest = np.full(np.int64(a1 - a0) + 1, np.int64(floor_glide), np.int64)
    state = np.zeros(4, np.int64)
    cand = fit_rows(np.zeros((1, 3), np.uint64), n)
    long_ = fit_rows(np.zeros((1, 3), np.uint64), n)
    over = fit_rows(np.zeros((1, 3), np.uint64), n)
    kshift = np.uint64(K)
    for row in range(n):
        a, word = report[row, 1], report[row, 2]
        b, c = residues[row, 0], np.int64(residues[row, 1])
        stopped = (word >> np.uint64(63)) != np.uint64(0)
        steps = np.int64(word & ~STOPPED)
        if not stopped and steps <= abest[np.int64(a - a0)]:
            continue
        nhi, nlo = a >> (np.uint64(64) - kshift), (a << kshift) | b
        steps0 = np.int64(K) + c
        settle(
            a, nhi, nlo, p3hi[c], p3lo[c], residues[row, 2], residues[row, 3], steps0, max_steps, abest, a0,
            cand, long_, over, state,
        )  # fmt: skip
    return cand[: state[NC]].copy(), long_[: state[NL]].copy(), over[: state[NO]].copy()
