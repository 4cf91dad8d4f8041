"""`hpcthreads run --campaign DIR`: claim a unit, run it as an ordinary run, mark it done, repeat.

Rank 0 claims and tells the other ranks which unit comes next (point to
point, polled with sleeps: a rank waiting for the next unit does not spin);
every rank then takes part in the unit's run exactly as in `hpcthreads run`.
A signal to any rank while it waits for a unit stops the whole run: a rank
other than 0 tells rank 0, which stops as on a signal of its own (exit 75).
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

from hpcthreads.campaign.holders import HolderFile, identity
from hpcthreads.campaign.lease import (
    DEFAULT_LEASE_SECONDS,
    Lease,
    Sightings,
    claim_next,
    lease_path,
    renew_interval,
    server_now,
)
from hpcthreads.campaign.store import FOLDERS, Campaign, Unit, publish
from hpcthreads.config import RunConfig
from hpcthreads.errors import HPCThreadsError, JobFailedError, OutputError
from hpcthreads.io.paths import LOCK_SUFFIX
from hpcthreads.io.space import RESERVE_SUFFIX
from hpcthreads.runtime import ledger
from hpcthreads.runtime.monitor import metrics_path
from hpcthreads.runtime.mpiutil import Poller, abort_on_exception, init_mpi, rank0_answer, setup_logging
from hpcthreads.runtime.start import EXIT_INTERRUPTED, InterruptedRun, RunResult
from hpcthreads.runtime.start import run as run_unit

log = logging.getLogger("hpcthreads")

TAG_NEXT = 77
TAG_BYE = 78
# A rank other than 0 was signalled while it waited for a unit
TAG_STOP = 79
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
# The longest a waiting rank 0 sleeps before it looks for a signal again
PAUSE_STEP_SECONDS = 0.1
# The files of one unit's part besides the results file itself
SIDE_SUFFIXES = (".partial", ledger.LEDGER_SUFFIX, ledger.CHECKPOINT_SUFFIX, LOCK_SUFFIX, RESERVE_SUFFIX)


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
    campaign = rank0_answer(comm, lambda: open_for_run(root))
    if rank == 0:
        return Holder(campaign, base, lease_seconds, wait, comm, size).serve()
    while True:
        word = _wait_for_word(comm)
        if word.unit is None:
            # Said to rank 0 before leaving: no rank goes into MPI's finalize alone
            comm.send(None, dest=0, tag=TAG_BYE)
            return RunResult(rank, size)
        _run_unit(campaign, base, word, None)


def open_for_run(root: Path) -> Campaign:
    """The campaign, its missing folders made again, each folder written to once: a run records its
    claims and results there, and cannot start in a directory it may only read."""
    campaign = Campaign.open(root, repair=True)
    for folder in FOLDERS:
        try:
            server_now(campaign.folder(folder))
        except OSError as exc:
            raise OutputError(
                f"campaign {str(root)!r}: cannot write in its folder {folder}/ ({exc.strerror}); "
                "a run records its claims and results there (campaign status works without writing)"
            ) from None
    return campaign


def _wait_for_word(comm: Any) -> Next:
    """Rank 0's next word; a signal meanwhile is passed on to rank 0, which stops the run."""
    said: list[str] = []

    def handler(signum: int, _frame: Any) -> None:
        said.append(signal.Signals(signum).name)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    poller = Poller(ceiling=0.05)
    told = False
    while not comm.Iprobe(source=0, tag=TAG_NEXT):
        if said and not told:
            comm.send(said[0], dest=0, tag=TAG_STOP)
            told = True
        poller.wait()
    return comm.recv(source=0, tag=TAG_NEXT)


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
        self.sightings = Sightings()
        self.signalled: str | None = None
        self.units = 0
        self.items = 0
        self.t0 = time.perf_counter()

    def serve(self) -> RunResult:
        # The holder record is written first thing in the loop, where a failure to write is one line
        self._install_signals()
        log.info(
            "joined campaign %s as %s (%d unit(s) in all, lease %.0f s)",
            self.campaign.root,
            self.me["holder"],
            len(self.campaign.units),
            self.lease_seconds,
        )
        try:
            word = self._loop()
        except OSError as exc:
            # The campaign's files, changed under the run (a folder made a file, a full disk)
            where = f"{exc.filename}: " if exc.filename else ""
            word = Next(exit_code=2, message=f"campaign {str(self.campaign.root)!r}: {where}{exc.strerror}")
        except BaseException:
            # Ranks still waiting for a unit leave too (those that failed with this rank are gone)
            self.file.leave()
            self._tell(Next())
            raise
        self.file.leave(stopped=word.exit_code == EXIT_INTERRUPTED)
        self._tell(Next())
        # Every rank says it is leaving, and all leave together (then the command's last barrier
        # and MPI_Finalize, see runtime/finalize.py)
        for rank in range(1, self.size):
            _receive(self.comm, TAG_BYE, rank)
        # A rank signalled while rank 0 stopped on its own signal has said so too: not left unread
        while self.size > 1 and self.comm.Iprobe(tag=TAG_STOP):
            self.comm.recv(tag=TAG_STOP)
        result = RunResult(0, self.size, wall_seconds=time.perf_counter() - self.t0, message=word.message)
        if word.exit_code:
            kind = {EXIT_INTERRUPTED: CampaignStopped, 1: JobFailedError}.get(word.exit_code, OutputError)
            raise kind(word.message)
        return result

    def _loop(self) -> Next:
        waiting_said = False
        while True:
            if self._stop_asked():
                return Next(exit_code=EXIT_INTERRUPTED, message=self._left(f"stopped by {self.signalled}"))
            self.campaign.make_folders()
            now = self.file.write(unit=None)
            self._metrics()
            lease, remaining = claim_next(self.campaign, self.me, self.lease_seconds, now, self.sightings)
            if lease is None:
                if remaining == 0:
                    return Next(message=self._left("the campaign is complete"))
                if not self.wait:
                    return Next(message=self._left(f"no unit free; {remaining} held by other runs"))
                if not waiting_said:
                    log.info("waiting: %d unit(s) not done, all held by other runs", remaining)
                    waiting_said = True
                self._pause(min(renew_interval(self.lease_seconds), 5.0))
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
        except (OSError, OutputError):
            # The unit's run could not write its files (a folder removed under it, a full disk): it has
            # stopped, and its part, whatever is left of it, may be taken by the next run at once
            lease.release()
            raise
        except BaseException:
            # The claim is no longer renewed: it expires, and another run takes the unit
            lease.stop()
            raise
        finally:
            # The unit's coordinator had its own handlers
            self._install_signals()
        lease.stop()
        self._mark_done(lease, result)
        # Released once done: should its marker be removed, the unit is free at once, not after expiry
        lease.release()
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
        # done/ may have been removed while the unit ran (its markers are lost: those units run again)
        self.campaign.make_folders()
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

        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)

    def _stop_asked(self) -> bool:
        """A signal to this rank, or to another one while it waited for a unit (it told this rank)."""
        if not self.signalled and self.comm is not None and self.comm.Iprobe(tag=TAG_STOP):
            from mpi4py import MPI

            status = MPI.Status()
            name = self.comm.recv(source=MPI.ANY_SOURCE, tag=TAG_STOP, status=status)
            self.signalled = f"{name} (to rank {status.Get_source()})"
        return self.signalled is not None

    def _pause(self, seconds: float) -> None:
        """Sleep, in short steps: a signal is answered within PAUSE_STEP_SECONDS, not after the pause."""
        deadline = time.monotonic() + seconds
        while not self._stop_asked() and time.monotonic() < deadline:
            time.sleep(min(PAUSE_STEP_SECONDS, max(0.0, deadline - time.monotonic())))


def _remove_part(part: Path) -> None:
    for path in [part, *(Path(f"{part}{suffix}") for suffix in SIDE_SUFFIXES)]:
        path.unlink(missing_ok=True)
