"""Who coordinates whom: the tree of a run's ranks.

Rank 0 is the root. With no grouping its children are all other ranks, the
workers. With grouping, ranks are cut into blocks (per node, or every K
ranks); the first rank of a block is its sub-coordinator and computes
nothing, the others are its children. Several levels nest: `--groups 8,64`
makes blocks of 64 ranks, each led by its first rank, whose other ranks form
blocks of 8 with their own sub-coordinators. A block of one rank is a plain
worker. Every rank builds the same tree from the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hpcthreads.errors import ConfigError

# `--groups auto` groups per node from this many ranks on, when the run spans several nodes:
# below it rank 0 alone keeps up (benchmarks/bench_scale.py) and a coordinating rank per node
# would only take a core from the computation
AUTO_MIN_RANKS = 256

Level = str | int


def parse_groups(text: str) -> tuple[Level, ...]:
    """`auto`, `none`, or comma-separated levels from the bottom: `node` or a block size >= 2."""
    text = str(text).strip().lower()
    if text in ("auto", "none"):
        return (text,) if text == "auto" else ()
    levels: list[Level] = []
    for item in text.split(","):
        item = item.strip()
        if item == "node":
            levels.append(item)
        elif item.isdigit() and int(item) >= 2:
            levels.append(int(item))
        else:
            raise ConfigError(
                f"--groups: {item!r} is not 'node' or a group size of at least 2 "
                "(use auto, none, node, K, or levels such as 8,64 from the bottom up)"
            )
    return tuple(levels)


def needs_nodes(levels: Sequence[Level]) -> bool:
    return any(level in ("auto", "node") for level in levels)


def resolve(levels: Sequence[Level], size: int, nodes: Sequence[int] | None) -> tuple[Level, ...]:
    """The levels `auto` stands for on this run: one per node on a large run over several nodes.

    One rank has no levels whatever was asked: it computes its chunks itself.
    """
    if size == 1:
        return ()
    if tuple(levels) != ("auto",):
        return tuple(levels)
    several = nodes is not None and len(set(nodes)) > 1
    return ("node",) if several and size >= AUTO_MIN_RANKS else ()


@dataclass
class Topology:
    parent: list[int]
    children: dict[int, list[int]]

    def role(self, rank: int) -> str:
        if rank == 0:
            return "coordinator"
        return "sub-coordinator" if self.children.get(rank) else "worker"

    def capacity(self, rank: int) -> int:
        """Workers at or below `rank`."""
        below = self.children.get(rank)
        return sum(self.capacity(child) for child in below) if below else 1

    def height(self, rank: int) -> int:
        """Levels of coordination at and below `rank`: 1 for a coordinator of workers, 0 for a worker."""
        below = self.children.get(rank)
        return 1 + max(self.height(child) for child in below) if below else 0

    @property
    def depth(self) -> int:
        """Levels of coordination: 1 when rank 0 feeds the workers directly."""
        return max(1, self.height(0))

    def workers_on_node(self, rank: int, nodes: Sequence[int]) -> list[int]:
        """The computing ranks that share `rank`'s node, in rank order."""
        return [r for r in range(len(self.parent)) if nodes[r] == nodes[rank] and self.role(r) == "worker"]


def build(size: int, levels: Sequence[Level], nodes: Sequence[int] | None = None) -> Topology:
    """The tree of `size` ranks for resolved `levels` (bottom first); `nodes[r]` names rank r's node."""
    if any(level == "node" for level in levels) and nodes is None:
        raise ValueError("grouping by node needs the node of every rank")
    topology = Topology([-1] * size, {})

    def attach(leader: int, members: list[int], levels: Sequence[Level]) -> None:
        if not levels:
            blocks = [[rank] for rank in members]
        else:
            blocks = _partition(members, levels[-1], nodes)
        for block in blocks:
            head = block[0]
            topology.parent[head] = leader
            topology.children.setdefault(leader, []).append(head)
            if len(block) > 1:
                attach(head, block[1:], levels[:-1])

    attach(0, list(range(1, size)), list(levels))
    return topology


def _partition(members: list[int], level: Level, nodes: Sequence[int] | None) -> list[list[int]]:
    if level == "node":
        by_node: dict[int, list[int]] = {}
        for rank in members:
            by_node.setdefault(nodes[rank], []).append(rank)  # type: ignore[index]
        return list(by_node.values())
    size = int(level)
    return [members[i : i + size] for i in range(0, len(members), size)]
