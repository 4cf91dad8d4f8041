"""Brute-force references, written plainly with Python integers.

Independent of the package on purpose: each function walks the whole
trajectory as a list and reads the answer off it.
"""

from __future__ import annotations


def orbit(n: int) -> list[int]:
    """Every value from n down to 1 under the standard map."""
    values = [n]
    while values[-1] != 1:
        x = values[-1]
        values.append(3 * x + 1 if x % 2 else x // 2)
    return values


def delay(n: int) -> int:
    return len(orbit(n)) - 1


def peak(n: int) -> int:
    return max(orbit(n))


def glide(n: int) -> int:
    if n == 1:
        return 0
    for steps, x in enumerate(orbit(n)):
        if x < n:
            return steps
    raise AssertionError("unreachable: every orbit ends at 1")


def range_records(values: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(n, value) pairs, in order of n, whose value beats every earlier one."""
    out: list[tuple[int, int]] = []
    for n, v in values:
        if all(v > w for _, w in out):
            out.append((n, v))
    return out


def collatz_summary(start: int, count: int) -> dict:
    ns = range(start, start + count)
    d = {n: delay(n) for n in ns}
    p = {n: peak(n) for n in ns}
    g = {n: glide(n) for n in ns}
    hist = [0] * (max(d.values()) + 1)
    for v in d.values():
        hist[v] += 1
    return {
        "delay": d,
        "peak": p,
        "glide": g,
        "sum_delay": sum(d.values()),
        "histogram": hist,
        "delay_records": range_records([(n, d[n]) for n in ns]),
        "path_records": range_records([(n, p[n]) for n in ns]),
        "glide_records": range_records([(n, g[n]) for n in ns]),
    }


def thread_path(n: int, max_depth: int) -> list[int]:
    return orbit(n)[: max_depth + 1]


def thread_steps(n: int, max_depth: int) -> tuple[list[int], bool]:
    """A `thread` kernel's values from n, and whether it stopped because 3x+1 would reach 2**128.

    Up to max_depth steps; a thread stops at 1, and before a 3x+1 that would
    not fit in 128 bits (the exact path takes over from there).
    """
    values = [n]
    while len(values) <= max_depth and values[-1] != 1:
        x = values[-1]
        if x % 2 and 3 * x + 1 >= 2**128:
            return values, True
        values.append(3 * x + 1 if x % 2 else x // 2)
    return values, False
