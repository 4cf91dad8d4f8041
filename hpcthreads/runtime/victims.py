"""The workers worth stealing from, by remaining work: a heap with O(log N) updates."""

from __future__ import annotations

import heapq
from typing import Protocol


class Victim(Protocol):
    rank: int
    in_flight: dict
    steal_pending: bool
    refused: bool
    finish_at: float


class VictimHeap:
    """Workers by remaining work, most first (lowest rank on ties), with O(log N) updates.

    A change only marks the worker; marked workers get a new entry, making
    their older ones stale, when a victim is next looked for (steals are far
    rarer than the events that change a worker). Stale entries are dropped
    when they reach the top, and the heap is rebuilt when they outnumber the
    live ones.
    """

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int]] = []
        self.version: dict[int, int] = {}
        self.live: dict[int, float] = {}
        self.changed: dict[int, Victim] = {}

    def update(self, worker: Victim) -> None:
        self.changed[worker.rank] = worker

    def _refresh(self) -> None:
        for rank, worker in self.changed.items():
            version = self.version.get(rank, 0) + 1
            self.version[rank] = version
            if worker.in_flight and not worker.steal_pending and not worker.refused:
                key = -worker.finish_at
                self.live[rank] = key
                heapq.heappush(self.heap, (key, rank, version))
            else:
                self.live.pop(rank, None)
        self.changed.clear()
        if len(self.heap) > 2 * len(self.live) + 64:
            self.heap = [(key, rank, self.version[rank]) for rank, key in self.live.items()]
            heapq.heapify(self.heap)

    def _valid(self, entry: tuple[float, int, int]) -> bool:
        return self.version.get(entry[1]) == entry[2] and entry[1] in self.live

    def candidates(self) -> int:
        """How many workers could be asked now."""
        self._refresh()
        return len(self.live)

    def best(self, exclude: int) -> int | None:
        """The rank with the most remaining work, other than `exclude`."""
        self._refresh()
        heap = self.heap
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        if not heap:
            return None
        if heap[0][1] != exclude:
            return heap[0][1]
        top = heapq.heappop(heap)
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        found = heap[0][1] if heap else None
        heapq.heappush(heap, top)
        return found
