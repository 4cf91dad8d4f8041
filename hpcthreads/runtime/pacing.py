"""How long chunks, shares, heartbeats and batches last, and how much a steal takes: pure numbers.

Each is planned from the number of ranks a coordinator talks to, so that the
messages it handles per second stay bounded however large the run.
"""

from __future__ import annotations

# Aim for chunks of about this much work, and at least this much at the tail
TARGET_SECONDS = 0.5
MIN_STEAL_SECONDS = 0.05
# A group's share of a job (a Task to a sub-coordinator) is about this much of the group's work,
# and before its speed is known this part of an even split of the job among the groups
GROUP_TARGET_SECONDS = 2.0
FIRST_SHARE = 1 / 32
# Messages per second a coordinator is planned to handle: at about 50 us each, a quarter of a core
MESSAGE_BUDGET = 5000.0
# Heartbeats per second a coordinator is planned to receive, and the shortest interval
HEARTBEAT_BUDGET = 1000.0
HEARTBEAT_SECONDS = 1.0
# A sub-coordinator reports its results at least this often, and rank 0 is planned to take this many
# reports per second (each merges a summary and writes a ledger line: a few hundred us)
BATCH_SECONDS = 0.25
BATCH_BUDGET = 500.0


def steal_share(thief_speed: float | None, victim_speed: float | None) -> float:
    """The part of its remaining work a victim gives, so that thief and victim end together.

    A slow thief gets less than half of a fast victim's work, a GPU thief of a
    CPU victim nearly all of it; half while either speed is unknown.
    """
    if not thief_speed or not victim_speed:
        return 0.5
    return thief_speed / (thief_speed + victim_speed)


def target_seconds(children: int, groups: bool) -> float:
    """Seconds of work per chunk for a coordinator of `children` (sub-coordinators when `groups`).

    Each chunk costs its coordinator about two messages (task and result), so
    the chunk time grows with the number of children once they would send
    more than MESSAGE_BUDGET messages per second.
    """
    base = GROUP_TARGET_SECONDS if groups else TARGET_SECONDS
    return max(base, 2.0 * children / MESSAGE_BUDGET)


def heartbeat_seconds(siblings: int, timeout: float) -> float:
    """How often a rank with `siblings` (its parent's children) says it is alive while it computes."""
    return min(max(HEARTBEAT_SECONDS, siblings / HEARTBEAT_BUDGET), timeout / 4)


def batch_seconds(siblings: int) -> float:
    """How often a sub-coordinator with `siblings` reports its results to its parent."""
    return max(BATCH_SECONDS, siblings / BATCH_BUDGET)
