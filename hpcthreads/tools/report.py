"""`hpcthreads report`: a summary and PNG figures (and optionally one HTML page) for a results file."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcthreads.errors import OutputError
from hpcthreads.io.paths import check_output_path
from hpcthreads.io.reader import read_results
from hpcthreads.io.results import JobResults, Results
from hpcthreads.io.safewrite import replacing, write_replacing
from hpcthreads.io.validate import reading
from hpcthreads.tools.inspection import format_summary

# Most thread paths drawn in the tree figure
TREE_THREADS = 3000
DPI = 110
# One colour per job in the timeline, each at least 5:1 against the white background, so that
# the shortest chunk still shows (matplotlib's tab10 has colours under 3:1)
JOB_COLOURS = ("#1f4e99", "#b3411b", "#2e7d32", "#6a1b9a", "#8a6100", "#00707a", "#ad1457", "#4e342e")
# A chunk is drawn at least this share of the time axis wide: short chunks (thread jobs' are
# milliseconds) would otherwise be thinner than a pixel and vanish
MIN_CHUNK_SHARE = 0.002
TREE_COLOUR = "#2f6b3a"


@dataclass
class Report:
    text: str
    figures: list[Path] = field(default_factory=list)
    html: Path | None = None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, figures: list[Path]) -> None:
    # A figure with its own layout engine (constrained: a legend outside the axes) keeps it
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    # Drawn into a temporary file beside PATH, then renamed: never through a link at PATH
    with replacing(path, "report file") as handle:
        fig.savefig(handle, dpi=DPI, format="png")
    _pyplot().close(fig)
    figures.append(path)


def histogram_figure(job: JobResults, path: Path, figures: list[Path]) -> None:
    counts = job.histogram
    if not counts.any():
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    delays = np.arange(len(counts))
    ax.bar(delays, counts, width=1.0, color="#3b6ea8", linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("delay (steps to reach 1)")
    ax.set_ylabel("start values")
    top = job.summary["max_delay"]
    ax.set_title(
        f"{job.name}: delay histogram of {job.summary['count']:,} start values (max {top[1]} at n={top[0]:,})"
    )
    _save(fig, path, figures)


def records_figure(job: JobResults, path: Path, figures: list[Path]) -> None:
    delay, peak = job.records("delay"), job.records("path")
    if not delay:
        return
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, pairs, label in ((left, delay, "delay"), (right, peak, "peak")):
        n = [float(a) for a, _ in pairs]
        v = [float(b) for _, b in pairs]
        ax.step(n, v, where="post", color="#b04a2f")
        ax.plot(n, v, "o", ms=3, color="#b04a2f")
        ax.set_xscale("log")
        if label == "peak":
            ax.set_yscale("log")
        ax.set_xlabel("n")
        ax.set_ylabel(label)
        ax.set_title(f"{len(pairs)} {('path' if label == 'peak' else label)} records")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{job.name}: range-local records")
    _save(fig, path, figures)


def timeline_figure(results: Results, path: Path, figures: list[Path]) -> None:
    fig = timeline_plot(results)
    if fig is not None:
        _save(fig, path, figures)


def timeline_plot(results: Results) -> Any:
    """The chunks of each rank over time, coloured by job, stolen ones hatched; None without chunks.

    One collection holds every chunk (a run records up to 500,000), and the
    legend sits right of the axes, where it covers no chunk.
    """
    chunks = results.table("chunks")
    if not chunks or not len(chunks.get("rank", [])):
        return None
    plt = _pyplot()
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    ranks = sorted(set(int(r) for r in chunks["rank"]))
    row = {rank: i for i, rank in enumerate(ranks)}
    rows = np.array([row[int(r)] for r in chunks["rank"]], dtype=float)
    jobs = np.asarray(chunks["job"], dtype=int)
    start = np.asarray(chunks["started"], dtype=float)
    end = np.asarray(chunks["ended"], dtype=float)
    span = max(float(end.max() - start.min()), 1e-9)
    end = np.maximum(end, start + span * MIN_CHUNK_SHARE)
    low, high = rows - 0.4, rows + 0.4
    corners = [(start, low), (start, high), (end, high), (end, low)]
    boxes = np.stack([np.stack(corner, axis=1) for corner in corners], axis=1)
    fig, ax = plt.subplots(figsize=(11, max(3.0, 1.2 + 0.45 * len(ranks))), layout="constrained")
    # Not antialiased: each chunk keeps its job's full colour, with no pale edge
    colours = [JOB_COLOURS[job % len(JOB_COLOURS)] for job in jobs]
    ax.add_collection(PolyCollection(boxes, facecolors=colours, linewidths=0, antialiased=False))
    stolen = np.asarray(chunks["stolen"], dtype=bool)
    if stolen.any():
        ax.add_collection(
            PolyCollection(boxes[stolen], facecolors="none", edgecolors="black", hatch="////", linewidths=0.6)
        )
    ax.set_xlim(start.min() - span * 0.01, end.max() + span * 0.01)
    ax.set_ylim(len(ranks) - 0.5, -0.5)
    ax.set_yticks(range(len(ranks)), [f"rank {r}" for r in ranks])
    ax.set_xlabel("seconds since the run started")
    ax.set_title("chunks per rank over time")
    names = results.names
    handles = [Patch(facecolor=JOB_COLOURS[i % len(JOB_COLOURS)]) for i in range(len(names))]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="////"))
    fig.legend(handles, [*names, "stolen"], loc="outside right upper", fontsize="small")
    return fig


def throughput_figure(results: Results, path: Path, figures: list[Path]) -> None:
    ranks = results.table("ranks")
    if not ranks:
        return
    keep = [i for i, device in enumerate(ranks["device"]) if device != b"coordinator"]
    if not keep:
        return
    plt = _pyplot()
    labels = [f"rank {ranks['rank'][i]}" for i in keep]
    busy = np.array([ranks["busy"][i] for i in keep])
    idle = np.array([ranks["idle"][i] for i in keep])
    rate = np.array([ranks["items"][i] / ranks["busy"][i] if ranks["busy"][i] > 0 else 0 for i in keep])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(labels, rate, color="#3b6ea8")
    left.set_ylabel("items per busy second")
    left.set_title("throughput per rank")
    left.bar_label(left.containers[0], labels=[f"{r:,.0f}" for r in rate], fontsize="small")
    right.bar(labels, busy, color="#3b6ea8", label="busy")
    right.bar(labels, idle, bottom=busy, color="#c9c9c9", label="idle")
    right.set_ylabel("seconds")
    right.set_title("busy and idle time per rank")
    right.legend()
    _save(fig, path, figures)


def tree_figure(job: JobResults, path: Path, figures: list[Path]) -> None:
    """Thread paths that reached 1, drawn from 1 outwards: shared tails merge into the Collatz tree.

    A value's place depends only on its path to 1, so each edge is drawn once,
    fully opaque, as wide as the log of the threads through it: a lone thread
    stays as visible as the trunk, which stands out by its width.
    """
    count = min(job.summary["thread_count"], TREE_THREADS)
    depth, paths = job.group["depth"][:count], job.array("paths", 0, count)
    plt = _pyplot()
    from matplotlib.collections import LineCollection

    # Turn one way after an even value, the other way after an odd one
    even_turn, odd_turn = 0.15, -0.3
    edges: dict[int, tuple[tuple[float, float], tuple[float, float]]] = {}
    through: dict[int, int] = {}
    drawn = 0
    for row, steps in zip(paths, depth):
        values = [int(v) for v in row[: int(steps) + 1]]
        if values[-1] != 1 or len(values) < 2:
            continue
        angle, x, y = math.pi / 2, 0.0, 0.0
        for value in reversed(values[:-1]):
            angle += even_turn if value % 2 == 0 else odd_turn
            nx, ny = x + math.cos(angle), y + math.sin(angle)
            edges.setdefault(value, ((x, y), (nx, ny)))
            through[value] = through.get(value, 0) + 1
            x, y = nx, ny
        drawn += 1
    if drawn == 0:
        return
    fig, ax = plt.subplots(figsize=(8, 8))
    widths = [1.0 + 0.5 * math.log2(through[value]) for value in edges]
    ax.add_collection(
        LineCollection(list(edges.values()), linewidths=widths, colors=TREE_COLOUR, capstyle="round")
    )
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{job.name}: {drawn:,} threads that reached 1, merged into the tree (root 1 at the origin)")
    _save(fig, path, figures)


def build_report(output: Path, folder: Path, with_html: bool = False, force: bool = False) -> Report:
    """Write the figures of `output` into `folder`; return the summary text and the files.

    A file of the same name already in `folder` is replaced only with `force`,
    and checked for before anything is written, as `export` does.
    """
    summary = read_results(output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return _build(output, folder, with_html, summary, force)
    except OSError as exc:
        raise OutputError(f"cannot write the report into {str(folder)!r} ({exc.strerror or exc})") from None


def _build(output: Path, folder: Path, with_html: bool, summary: dict, force: bool) -> Report:
    figures: list[Path] = []
    with Results(output) as results, reading(output):
        plan = _figures(results, folder)
        html_path = folder / "report.html" if with_html else None
        for path in [path for _, _, path in plan] + ([html_path] if html_path else []):
            check_output_path(path, force, [output], what="report file")
        for draw, source, path in plan:
            draw(source, path, figures)
        text = format_summary(summary) + "\n" + _rank_lines(results)
    report = Report(text, figures)
    if html_path is not None:
        report.html = html_path
        write_replacing(html_path, _html(output, text, figures), "report file")
    return report


def _figures(results: Results, folder: Path) -> list[tuple[Callable[..., None], Any, Path]]:
    """(draw, its data, its file) of every figure the report may write (one without data is skipped)."""
    plan: list[tuple[Callable[..., None], Any, Path]] = []
    for job in results:
        if job.type == "collatz" and job.summary.get("max_delay"):
            plan.append((histogram_figure, job, folder / f"{job.name}-histogram.png"))
            plan.append((records_figure, job, folder / f"{job.name}-records.png"))
        elif job.type == "thread" and "paths" in job.group and job.summary.get("state") == "complete":
            plan.append((tree_figure, job, folder / f"{job.name}-tree.png"))
    plan.append((timeline_figure, results, folder / "timeline.png"))
    plan.append((throughput_figure, results, folder / "throughput.png"))
    return plan


def _rank_lines(results: Results) -> str:
    ranks = results.table("ranks")
    if not ranks:
        return ""
    lines = ["ranks:"]
    for i, rank in enumerate(ranks["rank"]):
        device = ranks["device"][i].decode()
        busy, idle, items = ranks["busy"][i], ranks["idle"][i], ranks["items"][i]
        rate = f"{items / busy:,.0f} items/s" if busy > 0 else "-"
        lines.append(
            f"  rank {rank} ({device}): {items:,} items, busy {busy:.2f} s, idle {idle:.2f} s, {rate}, "
            f"stolen from {ranks['stolen_from'][i]}, stole {ranks['stolen_by'][i]}"
        )
    return "\n".join(lines)


def _html(output: Path, text: str, figures: list[Path]) -> str:
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>hpcthreads report: {html.escape(output.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}img{max-width:100%}"
        "pre{overflow-x:auto}</style>",
        f"<h1>{html.escape(str(output))}</h1><pre>{html.escape(text)}</pre>",
    ]
    for figure in figures:
        data = base64.b64encode(figure.read_bytes()).decode("ascii")
        parts.append(
            f"<h2>{html.escape(figure.stem)}</h2><img alt='{html.escape(figure.stem)}' "
            f"src='data:image/png;base64,{data}'>"
        )
    return "\n".join(parts) + "\n"
