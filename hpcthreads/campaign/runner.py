"""`hpcthreads run --campaign DIR`: claim a unit, run it as an ordinary run, mark it done, repeat.

Rank 0 claims and tells the other ranks which unit comes next (point to
point, polled with sleeps: a rank waiting for the next unit does not spin);
every rank then takes part in the unit's run exactly as in `hpcthreads run`.
A unit taken over from a holder that stopped renewing its lease starts from
a copy of that holder's part and ledger (a released one, from the files
themselves), so no finished chunk is computed twice and the old holder, if it
comes back, writes only to its own files.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hpcthreads.campaign.lease import (
    DEFAULT_LEASE_SECONDS,
    HolderFile,
    Lease,
    claim_next,
    identity,
    lease_path,
    renew_interval,
)
from hpcthreads.campaign.store import Campaign, Unit, publish
from hpcthreads.config import RunConfig
from hpcthreads.errors import HPCThreadsError, JobFailedError, OutputError
from hpcthreads.io.paths import LOCK_SUFFIX
from hpcthreads.runtime import ledger
from hpcthreads.runtime.monitor import metrics_path
from hpcthreads.runtime.mpiutil import Poller, abort_on_exception, init_mpi, rank0_answer, setup_logging
from hpcthreads.runtime.start import EXIT_INTERRUPTED, InterruptedRun, RunResult
from hpcthreads.runtime.start import run as run_unit

log = logging.getLogger("hpcthreads")

TAG_NEXT = 77
TAG_BYE = 78
# The files of one unit's part besides the results file itself
SIDE_SUFFIXES = (".partial", ledger.LEDGER_SUFFIX, ledger.CHECKPOINT_SUFFIX, LOCK_SUFFIX)


class CampaignStopped(HPCThreadsError):
    exit_code = EXIT_INTERRUPTED


@dataclass
class Next:
    """Rank 0's word to every rank: run this unit into this part, or stop (with an exit status)."""

    unit: Unit | None = None
    part: Path | None = None
    resume: bool = False
    exit_code: int = 0
    message: str = ""


def run_campaign(
    root: Path, base: RunConfig, lease_seconds: float = DEFAULT_LEASE_SECONDS, wait: bool = True
) -> RunResult:
    """Join the campaign in ROOT with this run's ranks until no unit is left (or none can be had)."""
    comm = init_mpi()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    setup_logging(rank, size, base.log_level, base.log_file)
    abort_on_exception(comm)
    campaign = rank0_answer(comm, lambda: Campaign.open(root))
    if rank == 0:
        return Holder(campaign, base, lease_seconds, wait, comm, size).serve()
    while True:
        word = _receive(comm, TAG_NEXT)
        if word.unit is None:
            # Said to rank 0 before leaving: no rank goes into MPI's finalize alone
            comm.send(None, dest=0, tag=TAG_BYE)
            return RunResult(rank, size)
        _run_unit(campaign, base, word, None)


def _receive(comm: Any, tag: int, source: int = 0) -> Any:
    """The next message of this tag, polled with sleeps (a blocking receive spins a core)."""
    poller = Poller(ceiling=0.05)
    while not comm.Iprobe(source=source, tag=tag):
        poller.wait()
    return comm.recv(source=source, tag=tag)


def _run_unit(campaign: Campaign, base: RunConfig, word: Next, lease: Lease | None) -> RunResult:
    assert word.unit is not None and word.part is not None
    job = campaign.unit_job(word.unit)
    config = replace(
        base,
        jobs=(job,),
        output=word.part,
        source=json.dumps({"jobs": [job.to_dict()]}),
        job_path=None,
        resume=word.resume,
        force=False,
    )
    stop = lease.lost if lease is not None else None
    try:
        return run_unit(config, stop)
    except OutputError as exc:
        if not word.resume or "cannot resume" not in str(exc):
            raise
        # Every rank sees the same refusal (the plan is shared): all start the unit afresh
        log.warning("unit %s: the part taken over cannot be resumed (%s); starting afresh", word.unit.id, exc)
        return run_unit(replace(config, resume=False, force=True), stop)


class Holder:
    """Rank 0 of a run in a campaign: claims, renews, runs and marks units; says so in holders/."""

    def __init__(
        self, campaign: Campaign, base: RunConfig, lease_seconds: float, wait: bool, comm: Any, size: int
    ) -> None:
        self.campaign = campaign
        self.base = base
        self.lease_seconds = lease_seconds
        self.wait = wait
        self.comm = comm
        self.size = size
        self.me = identity()
        self.file = HolderFile(campaign, self.me)
        self.signalled: str | None = None
        self.units = 0
        self.items = 0
        self.t0 = time.perf_counter()

    def serve(self) -> RunResult:
        self._install_signals()
        self.file.write()
        log.info(
            "joined campaign %s as %s (%d unit(s) in all, lease %.0f s)",
            self.campaign.root,
            self.me["holder"],
            len(self.campaign.units),
            self.lease_seconds,
        )
        try:
            word = self._loop()
        except BaseException:
            # Ranks still waiting for a unit leave too (those that failed with this rank are gone)
            self.file.leave()
            self._tell(Next())
            raise
        self.file.leave()
        self._tell(Next())
        # Every rank says it is leaving, and all leave together (then the command's last barrier
        # and MPI_Finalize, see runtime/finalize.py)
        for rank in range(1, self.size):
            _receive(self.comm, TAG_BYE, rank)
        result = RunResult(0, self.size, wall_seconds=time.perf_counter() - self.t0, message=word.message)
        if word.exit_code == EXIT_INTERRUPTED:
            raise CampaignStopped(word.message)
        if word.exit_code:
            raise JobFailedError(word.message)
        return result

    def _loop(self) -> Next:
        waiting_said = False
        while True:
            if self.signalled:
                return Next(exit_code=EXIT_INTERRUPTED, message=self._left(f"stopped by {self.signalled}"))
            now = self.file.write(unit=None)
            self._metrics()
            lease, remaining = claim_next(self.campaign, self.me, self.lease_seconds, now)
            if lease is None:
                if remaining == 0:
                    return Next(message=self._left("the campaign is complete"))
                if not self.wait:
                    return Next(message=self._left(f"no unit free; {remaining} held by other runs"))
                if not waiting_said:
                    log.info("waiting: %d unit(s) not done, all held by other runs", remaining)
                    waiting_said = True
                time.sleep(min(renew_interval(self.lease_seconds), 5.0))
                continue
            waiting_said = False
            outcome = self._hold(lease)
            if outcome is not None:
                return outcome

    def _hold(self, lease: Lease) -> Next | None:
        """Run one claimed unit to its end; a Next when the run must stop."""
        unit = lease.unit
        resume = self._take_part(lease)
        self.file.write(unit=unit.id, generation=lease.generation)
        job = self.campaign.jobs[unit.job]
        log.info(
            "unit %s: job %r items %s..%s (%s)%s",
            unit.id,
            job.name,
            f"{unit.offset:,}",
            f"{unit.offset + unit.count - 1:,}",
            f"{unit.count:,}",
            f", resuming generation {lease.generation}" if resume else "",
        )
        word = Next(unit, lease.part, resume)
        lease.start()
        self._tell(word)
        try:
            result = _run_unit(self.campaign, self.base, word, lease)
        except InterruptedRun:
            if lease.lost() is None:
                lease.release()
                return Next(
                    exit_code=EXIT_INTERRUPTED,
                    message=self._left(f"stopped by a signal; unit {unit.id} released with its part saved"),
                )
            lease.stop()
            self._discard(lease)
            return None
        except JobFailedError as exc:
            lease.release()
            return Next(exit_code=1, message=f"unit {unit.id} failed: {exc}")
        except BaseException:
            # The claim is no longer renewed: it expires, and another run takes the unit
            lease.stop()
            raise
        finally:
            # The unit's coordinator had its own handlers
            self._install_signals()
        lease.stop()
        self._mark_done(lease, result)
        return None

    def _take_part(self, lease: Lease) -> bool:
        """Start the unit's part from the newest earlier generation's files; True to resume."""
        for generation in range(lease.generation - 1, -1, -1):
            old = self.campaign.part_path(lease.unit, generation)
            if not ledger.paths(old)[1].exists():
                continue
            released = Path(f"{lease_path(self.campaign, lease.unit.id, generation)}.released").exists()
            new = lease.part
            for suffix in (ledger.CHECKPOINT_SUFFIX, ledger.LEDGER_SUFFIX, ".partial"):
                source, target = Path(f"{old}{suffix}"), Path(f"{new}{suffix}")
                if not source.exists():
                    continue
                if released:
                    # Its holder closed these files: they move, however large
                    source.rename(target)
                else:
                    # Its holder may only be paused: a copy, so that it can never write into ours
                    shutil.copyfile(source, target)
            return True
        return False

    def _mark_done(self, lease: Lease, result: RunResult) -> None:
        unit = lease.unit
        record = {
            "unit": unit.id,
            "part": lease.part.name,
            "generation": lease.generation,
            **{key: self.me[key] for key in ("holder", "host", "pid", "job_id")},
            "items": unit.count,
            "seconds": result.wall_seconds,
            "finished": time.time(),
        }
        done = self.campaign.folder("done") / unit.id
        if publish(done, json.dumps(record)):
            self.units += 1
            self.items += unit.count
            self.file.write(unit=None, units_done=self.units, items_done=self.items)
            log.info("unit %s done (%s, %.1f s)", unit.id, lease.part.name, result.wall_seconds)
            for generation in range(lease.generation):
                _remove_part(self.campaign.part_path(unit, generation))
        else:
            log.warning("unit %s was finished by another run first; this copy is dropped", unit.id)
            _remove_part(lease.part)
        self._drop_unit_metrics(lease)

    def _discard(self, lease: Lease) -> None:
        log.warning("unit %s: %s; this run's part of it is dropped", lease.unit.id, lease.lost())
        _remove_part(lease.part)
        self._drop_unit_metrics(lease)

    def _drop_unit_metrics(self, lease: Lease) -> None:
        """Remove a finished unit's run metrics: the campaign's own metrics say what is done, and a
        file per unit left in the collector's directory would grow with the campaign."""
        if self.base.metrics_dir is not None:
            metrics_path(self.base.metrics_dir, lease.part).unlink(missing_ok=True)

    def _metrics(self) -> None:
        """With --metrics-dir, the campaign's metrics beside the run's, between units."""
        if self.base.metrics_dir is None:
            return
        from hpcthreads.campaign.status import campaign_status, write_metrics

        try:
            write_metrics(campaign_status(self.campaign.root), self.base.metrics_dir)
        except (OSError, HPCThreadsError) as exc:
            log.warning("cannot write the campaign's metrics to %s: %s", self.base.metrics_dir, exc)

    def _tell(self, word: Next) -> None:
        for rank in range(1, self.size):
            self.comm.send(word, dest=rank, tag=TAG_NEXT)

    def _left(self, why: str) -> str:
        seconds = time.perf_counter() - self.t0
        return f"{why}: this run did {self.units} unit(s), {self.items:,} items, in {seconds:.1f} s"

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self.signalled = signal.Signals(signum).name

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, handler)


def _remove_part(part: Path) -> None:
    for path in [part, *(Path(f"{part}{suffix}") for suffix in SIDE_SUFFIXES)]:
        path.unlink(missing_ok=True)
