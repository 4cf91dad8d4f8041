"""`hpcthreads status`: progress of a run from its file or, while it runs, its ledger."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hpcthreads.errors import OutputError
from hpcthreads.runtime import ledger
from hpcthreads.runtime.outputlock import holder


def run_status(output: Path) -> dict[str, Any]:
    """Per job done/total and whether the run is complete, running or stopped."""
    output = Path(output)
    _, checkpoint = ledger.paths(output)
    if checkpoint.exists():
        return _from_ledger(output)
    if output.exists():
        return _from_file(output)
    raise OutputError(f"no run of {output}: neither the file nor its ledger ({checkpoint.name}) exists")


def _from_ledger(output: Path) -> dict[str, Any]:
    try:
        # Summaries are not needed here: keep the newest instead of merging
        state = ledger.load(output, lambda _name, _a, b: b)
        jobs = {}
        for job in json.loads(state.config)["jobs"]:
            params = job["parameters"]
            total = params.get("count", params.get("thread_count"))
            ranges = state.done.get(job["name"])
            done = ranges.covered() if ranges else 0
            jobs[job["name"]] = {"type": job["type"], "done": done, "total": total, "complete": done >= total}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        _, checkpoint = ledger.paths(output)
        raise OutputError(
            f"cannot read the ledger of {output} ({checkpoint.name} and {output.name}.ledger): "
            f"{exc.__class__.__name__}: {str(exc)[:200]}"
        ) from None
    age = time.time() - state.updated if state.updated else None
    # Every chunk done is not a finished run: its results are in the file only once it is renamed
    work_done = all(job["complete"] for job in jobs.values())
    complete = work_done and output.exists() and not output.with_name(output.name + ".partial").exists()
    running = holder(output)
    if running:
        state_text = f"running ({running})"
    elif state.stopped:
        state_text = f"stopped: {state.stopped}"
    else:
        state_text = "stopped (killed, or its node lost): the same command with --resume finishes it"
    return {
        "file": str(output),
        "state": state_text,
        "complete": complete,
        "work_done": work_done,
        "seconds_since_progress": age,
        "jobs": jobs,
    }


def _from_file(output: Path) -> dict[str, Any]:
    from hpcthreads.io.reader import read_results

    results = read_results(output)
    jobs = {}
    for name, job in results["jobs"].items():
        total = job.get("count", job.get("thread_count"))
        complete = job["state"] == "complete"
        jobs[name] = {
            "type": job["type"],
            "done": total if complete else None,
            "total": total,
            "complete": complete,
            "state": job["state"],
        }
    state = results["run"].get("state", "unknown")
    return {"file": str(output), "state": state, "complete": state == "complete", "jobs": jobs}


def format_status(status: dict[str, Any]) -> str:
    done = ""
    if status["complete"] and status["state"] != "complete":
        done = " (all work done)"
    elif status.get("work_done") and not status["complete"]:
        done = " (every chunk is done, the results file is not written yet)"
    lines = [f"{status['file']}: {status['state']}{done}"]
    age = status.get("seconds_since_progress")
    if age is not None:
        lines[0] += f", last chunk {age:.0f} s ago"
    for name, job in status["jobs"].items():
        if job["done"] is None:
            lines.append(f"  {name} [{job['type']}]: {job.get('state', '?')}")
            continue
        share = 100.0 * job["done"] / job["total"] if job["total"] else 100.0
        lines.append(f"  {name} [{job['type']}]: {job['done']:,} / {job['total']:,} ({share:.1f}%)")
    return "\n".join(lines)
