"""The exact path: trajectories in Python's arbitrary-precision integers.

Kernels hand over every start value whose trajectory would leave 128 bits;
this module finishes it exactly. It is slow and only used for those values.
"""

from __future__ import annotations


def trajectory_stats(n: int, max_steps: int | None = None) -> tuple[int, int, int]:
    """Return (delay, peak, glide) of `n` under the standard map.

    With `max_steps`, stop after that many steps and return delay -1 if 1
    was not reached (glide is then the glide if found, else -1).
    """
    value, steps, peak, glide = n, 0, n, 0 if n == 1 else -1
    while value != 1:
        if max_steps is not None and steps >= max_steps:
            return -1, peak, glide
        value = value >> 1 if value % 2 == 0 else 3 * value + 1
        steps += 1
        peak = max(peak, value)
        if glide < 0 and value < n:
            glide = steps
    return steps, peak, glide


def glide_of(n: int, max_steps: int) -> int:
    """Steps until the trajectory of `n` drops below `n`; -1 past `max_steps`."""
    if n == 1:
        return 0
    value, steps = n, 0
    while value >= n:
        if steps >= max_steps:
            return -1
        value = value >> 1 if value % 2 == 0 else 3 * value + 1
        steps += 1
    return steps


def path(n: int, max_depth: int) -> list[int]:
    """The first values of the trajectory of `n`, at most `max_depth` steps, stopping at 1."""
    values = [n]
    while values[-1] != 1 and len(values) <= max_depth:
        value = values[-1]
        values.append(value >> 1 if value % 2 == 0 else 3 * value + 1)
    return values
