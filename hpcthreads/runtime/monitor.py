"""What rank 0 tells people and machines while a run goes: progress and metrics.

- On a terminal, a live bar with rate, ETA and a line per job; in a batch log
  (stderr not a terminal), one log line every `interval` seconds.
- With a metrics directory, a Prometheus text-format file written atomically
  (temporary name, then rename) every few seconds and at the end, for
  node_exporter's textfile collector. Each run has a file of its own, named
  after its host and output, and every series carries `run` (the output's
  absolute path) and `host` labels: runs that share a node and its metrics
  directory, or the units of a campaign, never write over each other.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from hpcthreads.runtime.usage import Usage

log = logging.getLogger("hpcthreads")

# DIR/hpcthreads-<output stem>-<digest of host and output>.prom: one file per run
METRICS_PREFIX = "hpcthreads-"
# Seconds between samples of the progress rate when nothing is drawn
RATE_SAMPLE_SECONDS = 1.0
STATES = ("running", "complete", "failed", "interrupted")


@dataclass
class Snapshot:
    """The run as the coordinator sees it at one moment.

    `busy` (rank -> busy fraction) is computed only when the metrics file is
    written: it costs O(N) in the number of ranks the coordinator feeds.
    """

    done: dict[str, int]
    total: dict[str, int]
    busy: Callable[[], dict[int, float]] = dict
    stolen: int = 0
    failures: int = 0
    last_progress: float = 0.0
    state: str = "running"
    # The newest memory (and GPU) sample of each rank that sent one
    usage: dict[int, Usage] = field(default_factory=dict)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Rate:
    """Items per second over the last `window` seconds."""

    def __init__(self, window: float = 20.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


class Progress:
    """The progress display of rank 0."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = 30.0,
        quiet: bool = False,
        tty: bool | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self.quiet = quiet
        self.tty = self.stream.isatty() if tty is None else tty
        self.rate = Rate()
        self.started = time.monotonic()
        self.next_line = self.started + interval
        self.next_sample = 0.0
        self.drawn = 0

    def due(self, now: float) -> bool:
        """Whether an update now would draw, log or take a sample of the rate."""
        return now >= self.next_sample

    def update(self, snap: Snapshot, now: float | None = None, final: bool = False) -> None:
        now = time.monotonic() if now is None else now
        done, total = sum(snap.done.values()), sum(snap.total.values())
        rate = self.rate.add(now, done)
        drawing = self.tty and not self.quiet
        self.next_sample = now + (0.25 if drawing else RATE_SAMPLE_SECONDS)
        if self.quiet:
            return
        if drawing:
            self._draw(snap, done, total, rate)
        elif final or now >= self.next_line:
            log.info("progress %s", self.line(snap, done, total, rate))
            self.next_line = now + self.interval

    def line(self, snap: Snapshot, done: int, total: int, rate: float) -> str:
        share = 100.0 * done / total if total else 100.0
        eta = _duration((total - done) / rate) if rate > 0 and done < total else "-"
        jobs = ", ".join(f"{name} {100.0 * snap.done[name] / snap.total[name]:.0f}%" for name in snap.total)
        return f"{share:5.1f}% ({done:,}/{total:,}), {rate:,.0f} items/s, ETA {eta}; {jobs}"

    def _draw(self, snap: Snapshot, done: int, total: int, rate: float) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        lines = [
            f"[{'#' * filled}{'.' * (width - filled)}] {self.line(snap, done, total, rate).split(';')[0]}"
        ]
        for name in snap.total:
            lines.append(f"  {name:<20} {snap.done[name]:>16,} / {snap.total[name]:,}")
        # Move back over the previous drawing and overwrite it
        prefix = f"\x1b[{self.drawn}F" if self.drawn else ""
        self.stream.write(prefix + "".join(f"\x1b[K{text}\n" for text in lines))
        self.stream.flush()
        self.drawn = len(lines)


def escape_label(value: object) -> str:
    """VALUE as the text between the quotes of a Prometheus label value.

    The text format gives a backslash, a double quote and a line feed a
    meaning inside a label value: unescaped, a job or campaign name could end
    the value early, add samples of its own, or make node_exporter drop the
    whole file. Text that UTF-8 cannot encode (a directory name's stray bytes)
    becomes "?", since the file must be valid UTF-8.
    """
    text = str(value).encode("utf-8", "replace").decode("utf-8")
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


label_value = escape_label


def metrics_path(directory: Path, output: Path, host: str | None = None) -> Path:
    """The metrics file of the run that writes `output` on `host` (this machine by default)."""
    host = socket.gethostname() if host is None else host
    where = os.path.abspath(output)
    digest = hashlib.sha256(f"{host}\0{where}".encode()).hexdigest()[:12]
    # The stem is for people who list the directory; the digest keeps names apart
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(where).stem)[:40]
    return Path(directory) / f"{METRICS_PREFIX}{stem}-{digest}.prom"


class Metrics:
    """Prometheus text-format metrics of one run in DIR (see `metrics_path`)."""

    def __init__(self, directory: Path, output: Path, interval: float = 5.0) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname()
        self.run = os.path.abspath(output)
        self.path = metrics_path(Path(directory), Path(output), self.host)
        self.interval = interval
        self.next_write = 0.0
        self.rate = Rate()

    def due(self, now: float) -> bool:
        return now >= self.next_write

    def update(self, snap: Snapshot, now: float | None = None, final: bool = False) -> None:
        now = time.monotonic() if now is None else now
        rate = self.rate.add(now, sum(snap.done.values()))
        if final or now >= self.next_write:
            self.write(snap, rate)
            self.next_write = now + self.interval

    def render(self, snap: Snapshot, rate: float) -> str:
        out: list[str] = []
        run = f'run="{label_value(self.run)}",host="{label_value(self.host)}"'

        def metric(name: str, kind: str, text: str, rows: list[tuple[str, float | None]]) -> None:
            # A figure no rank has (GPU figures on CPU ranks) is left out, not written as 0
            rows = [(labels, value) for labels, value in rows if value is not None]
            if not rows:
                return
            out.append(f"# HELP hpcthreads_{name} {text}")
            out.append(f"# TYPE hpcthreads_{name} {kind}")
            out.extend(f"hpcthreads_{name}{{{run}{labels}}} {value:.17g}" for labels, value in rows)

        def per_rank(name: str, text: str, values: dict[int, float | None]) -> None:
            rows = [(f',rank="{rank}"', value) for rank, value in sorted(values.items())]
            metric(name, "gauge", text, rows)

        def per_job(values: dict[str, int]) -> list[tuple[str, float | None]]:
            return [(f',hpc_job="{label_value(name)}"', value) for name, value in values.items()]

        done_text = "Items (start values or threads) finished, per job."
        metric("items_done", "gauge", done_text, per_job(snap.done))
        metric("items", "gauge", "Items (start values or threads) of each job.", per_job(snap.total))
        metric("rate_items_per_second", "gauge", "Items finished per second, recent average.", [("", rate)])
        per_rank("rank_busy_fraction", "Fraction of the run each worker rank spent computing.", snap.busy())
        usage = snap.usage
        per_rank(
            "rank_memory_rss_bytes",
            "Resident memory of each rank's process, bytes.",
            {rank: sample.rss_bytes for rank, sample in usage.items()},
        )
        per_rank(
            "rank_gpu_memory_used_bytes",
            "Memory in use on the GPU of each GPU rank (all its processes), bytes; no series without a GPU.",
            {rank: sample.gpu_memory_used_bytes for rank, sample in usage.items()},
        )
        per_rank(
            "rank_gpu_utilization_ratio",
            "Fraction of recent time a kernel ran on the GPU of each GPU rank; no series without a GPU.",
            {rank: sample.gpu_utilization for rank, sample in usage.items()},
        )
        metric(
            "chunks_stolen_total",
            "counter",
            "Chunks split away from a worker for an idle one.",
            [("", snap.stolen)],
        )
        metric("failures_total", "counter", "Chunks that raised on a worker.", [("", snap.failures)])
        metric(
            "last_progress_timestamp_seconds",
            "gauge",
            "Unix time of the last finished chunk.",
            [("", snap.last_progress)],
        )
        metric(
            "run_state",
            "gauge",
            "1 for the state the run is in.",
            [(f',state="{state}"', float(state == snap.state)) for state in STATES],
        )
        return "\n".join(out) + "\n"

    def write(self, snap: Snapshot, rate: float) -> None:
        from hpcthreads.errors import OutputError
        from hpcthreads.io.safewrite import write_replacing

        # An unpredictable temporary name beside the file, then a rename: never through a planted link
        try:
            write_replacing(self.path, self.render(snap, rate), "metrics file")
        except (OSError, OutputError) as exc:
            log.warning("cannot write metrics to %s: %s", self.path, exc)


class Monitor:
    """Progress and metrics together, fed by the coordinator a few times a second."""

    def __init__(self, progress: Progress | None = None, metrics: Metrics | None = None) -> None:
        self.progress = progress
        self.metrics = metrics

    def due(self, now: float) -> bool:
        """Whether an update now would show or write anything: the snapshot is built only then."""
        return any(sink is not None and sink.due(now) for sink in (self.progress, self.metrics))

    def update(self, snap: Snapshot, final: bool = False) -> None:
        now = time.monotonic()
        for sink in (self.progress, self.metrics):
            if sink is not None:
                sink.update(snap, now, final)
