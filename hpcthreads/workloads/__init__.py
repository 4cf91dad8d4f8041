"""Job types: what each computes per chunk and how partial results merge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hpcthreads.config import Job
from hpcthreads.workloads.base import BaseWorkload, ChunkOutput, to_plain
from hpcthreads.workloads.collatz import CollatzWorkload
from hpcthreads.workloads.thread import ThreadWorkload
from hpcthreads.workloads.verify import VerifyWorkload

WORKLOADS: dict[str, type[BaseWorkload]] = {
    cls.type: cls for cls in (CollatzWorkload, VerifyWorkload, ThreadWorkload)
}


def make_workload(job: Job) -> BaseWorkload:
    return WORKLOADS[job.type](job)


def plain_merger(workloads: list[BaseWorkload]) -> Callable[[str, dict, dict], dict[str, Any]]:
    """`merge(job_name, plain_a, plain_b)` on JSON-ready summaries (the ledger's form)."""
    by_name = {w.job.name: w for w in workloads}

    def merge(name: str, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        workload = by_name[name]
        return to_plain(workload.merge(workload.summary_from_plain(a), workload.summary_from_plain(b)))

    return merge


__all__ = ["BaseWorkload", "ChunkOutput", "make_workload", "plain_merger", "WORKLOADS"]
