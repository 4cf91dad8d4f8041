"""Job types: what each computes per chunk and how partial results merge."""

from __future__ import annotations

from hpcthreads.config import Job
from hpcthreads.workloads.base import BaseWorkload, ChunkOutput
from hpcthreads.workloads.collatz import CollatzWorkload
from hpcthreads.workloads.thread import ThreadWorkload
from hpcthreads.workloads.verify import VerifyWorkload

WORKLOADS: dict[str, type[BaseWorkload]] = {
    cls.type: cls for cls in (CollatzWorkload, VerifyWorkload, ThreadWorkload)
}


def make_workload(job: Job) -> BaseWorkload:
    return WORKLOADS[job.type](job)


__all__ = ["BaseWorkload", "ChunkOutput", "make_workload", "WORKLOADS"]
