"""DIR/holders/: one record per run that joined a campaign, its heartbeat; who a run is.

A run writes its record when it joins and between units (its mtime is the
heartbeat `campaign status` reads). A run that leaves marks it left, as the
account of what it did; a run stopped by a signal removes it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from typing import Any

from hpcthreads.campaign.records import is_count, mapping, text
from hpcthreads.campaign.store import Campaign
from hpcthreads.errors import HPCThreadsError
from hpcthreads.io.safewrite import write_replacing

log = logging.getLogger("hpcthreads")


def job_id() -> str:
    """The batch job this process belongs to, as its scheduler names it (empty outside one)."""
    slurm = os.environ.get("SLURM_JOB_ID")
    if slurm:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        return f"slurm {array}_{task}" if array and task else f"slurm {slurm}"
    for name, label in (("OMPI_MCA_orte_job_id", "mpi"), ("KUBERNETES_SERVICE_HOST", "pod")):
        if os.environ.get(name):
            return f"{label} {os.environ.get('HOSTNAME', socket.gethostname())}"
    return ""


def identity() -> dict[str, Any]:
    host = socket.gethostname()
    return {
        "holder": f"{host}-{os.getpid()}-{secrets.token_hex(3)}",
        "host": host,
        "pid": os.getpid(),
        "job_id": job_id(),
    }


class HolderFile:
    """DIR/holders/ID.json: who this run is, what it holds, what it did; its mtime is its heartbeat."""

    def __init__(self, campaign: Campaign, info: dict[str, Any]) -> None:
        self.campaign = campaign
        self.path = campaign.folder("holders") / f"{info['holder']}.json"
        self.info = {**info, "joined": time.time(), "unit": None, "units_done": 0, "items_done": 0}

    def write(self, **changes: Any) -> float:
        """Record the changes; returns the server's time of the write."""
        self.info.update(changes, seen=time.time())
        try:
            write_replacing(self.path, json.dumps(self.info), "holder record")
        except FileNotFoundError:
            # holders/ was removed: made again, with this run's record
            self.campaign.make_folders()
            write_replacing(self.path, json.dumps(self.info), "holder record")
        return self.path.stat().st_mtime

    def leave(self, stopped: bool = False) -> None:
        """Mark the record left, as the account of what this run did; remove it when the run was
        `stopped` by a signal: its unit is released, and the job, requeued, joins again as a new run."""
        try:
            if stopped:
                self.path.unlink(missing_ok=True)
            else:
                self.write(unit=None, left=time.time())
        except (OSError, HPCThreadsError) as exc:
            log.warning("cannot update the holder record %s: %s", self.path, exc)


def holder_info(value: Any) -> dict[str, Any]:
    """A holder record's fields as status shows them, each of its type or None; DamagedRecord for a
    record that is not a mapping."""
    record = mapping(value, "it")
    out: dict[str, Any] = {key: text(record.get(key)) for key in ("holder", "host", "job_id", "unit")}
    for key in ("pid", "units_done", "items_done"):
        out[key] = record[key] if is_count(record.get(key)) else None
    out["left"] = "left" in record
    return out
