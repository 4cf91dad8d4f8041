"""The report of a real run: its figures readable, and its HTML page in a real browser.

The page is opened in Debian's headless Chromium: every image decodes, the
console stays silent, and a screenshot has a sensible size and content.
Chromium's checks are themselves checked on a probe page with a broken image
and a console error, so that a blind check cannot pass. Skipped without
Chromium unless HPCTHREADS_REQUIRE_CHROMIUM=1. Chromium runs with networking
features off and every host name unresolvable: it reads local files only.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from helpers import cli, mpirun

from hpcthreads.io.results import Results
from hpcthreads.tools.report import JOB_COLOURS, TREE_COLOUR, _pyplot, timeline_plot

JOBS = """
jobs:
  - {name: numbers, type: collatz, parameters: {start: 1, count: 30000, batch_size: 4000}}
  - {name: check, type: verify, parameters: {start: 1000, count: 5000}}
  - {name: tree, type: thread, parameters: {thread_count: 400, max_depth: 120, batch_size: 50}}
"""
REQUIRE = os.environ.get("HPCTHREADS_REQUIRE_CHROMIUM") == "1"
CHROMIUM_SECONDS = 120
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    # No host name resolves: nothing but local files can be reached
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
]
PROBE = """<!doctype html><meta charset="utf-8"><title>probe</title>
<img alt="broken on purpose" src="data:image/png;base64,AAAA">
<script>console.error("hpcthreads-probe")</script>
"""
# Loads the report and the probe in frames, then writes what it finds in their images
CHECKER = """<!doctype html><meta charset="utf-8"><title>checker</title>
<iframe id="report" src="REPORT" width="1280" height="2000"></iframe>
<iframe id="probe" src="PROBE"></iframe>
<script>
window.addEventListener("load", () => {
  const found = {};
  for (const id of ["report", "probe"]) {
    const page = document.getElementById(id).contentDocument;
    const images = page ? Array.from(page.images) : [];
    found[id] = {
      title: page ? page.title : null,
      images: images.length,
      broken: images.filter((image) => !(image.complete && image.naturalWidth > 0)).map((i) => i.alt),
    };
  }
  const out = document.createElement("pre");
  out.id = "found";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A 3-rank run of a collatz, a verify and a thread job, and its report with the HTML page."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "jobs.yaml").write_text(JOBS)
    out = folder / "out.h5"
    proc = mpirun(3, "run", str(folder / "jobs.yaml"), "-o", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    cli("report", str(out), "-o", str(folder / "fig"), "--html", check=True)
    return out, folder / "fig"


def contrast(rgb: np.ndarray) -> np.ndarray:
    """WCAG contrast ratio of sRGB colours (0..1, last axis RGB) against white."""
    linear = np.where(rgb <= 0.03928, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    return 1.05 / (luminance + 0.05)


def hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def dark_share(png: Path) -> float:
    """Of the pixels drawn on the white page, the share at 3:1 contrast or more (clearly visible)."""
    ratio = contrast(matplotlib.image.imread(png)[..., :3].astype(float))
    return float((ratio >= 3).sum() / (ratio > 1.1).sum())


def test_figure_colours_stand_out_on_white():
    assert min(contrast(np.array([hex_rgb(c) for c in (*JOB_COLOURS, TREE_COLOUR)]))) >= 4.5
    assert len(set(JOB_COLOURS)) == len(JOB_COLOURS)


def test_timeline_legend_is_outside_the_axes(report):
    out, _ = report
    with Results(out) as results:
        fig = timeline_plot(results)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        [ax], [legend] = fig.axes, fig.legends
        axes_box, legend_box = ax.get_window_extent(renderer), legend.get_window_extent(renderer)
        assert not axes_box.overlaps(legend_box), (axes_box, legend_box)
        # Inside the figure, not cut off
        assert fig.bbox.contains(legend_box.x1 - 1, legend_box.y0 + 1)
    finally:
        _pyplot().close(fig)


def test_every_jobs_chunks_show_in_the_timeline_in_full_colour(report):
    out, folder = report
    pixels = matplotlib.image.imread(folder / "timeline.png")[..., :3]
    with Results(out) as results:
        jobs = sorted(set(int(j) for j in results.table("chunks")["job"]))
        names = results.names
    assert jobs == [0, 1, 2]
    for job in jobs:
        colour = hex_rgb(JOB_COLOURS[job])
        drawn = int((np.abs(pixels - colour).max(axis=-1) < 1.5 / 255).sum())
        # Even the thread job's chunks of a few milliseconds: at least 2 px wide on each rank row
        assert drawn >= 100, f"job {names[job]}: {drawn} pixels"


def test_tree_branches_are_drawn_dark_enough_to_see(report):
    _, folder = report
    assert dark_share(folder / "tree-tree.png") >= 0.65


@pytest.fixture(scope="module")
def browser() -> str:
    """The Chromium binary; asked for before the report, so that a skip costs no run."""
    found = next((p for name in ("chromium", "chromium-browser") if (p := shutil.which(name))), None)
    if found is None:
        if REQUIRE:
            pytest.fail("HPCTHREADS_REQUIRE_CHROMIUM=1 but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def browse(browser: str, tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile (a folder of its own per call)."""
    command = [browser, *FLAGS, f"--user-data-dir={tmp_path / ('profile-' + name)}", *args]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=CHROMIUM_SECONDS, start_new_session=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def console_lines(stderr: str) -> list[str]:
    """Console messages of the pages, as Chromium logs them with --enable-logging=stderr."""
    return [line for line in stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]


def test_report_page_in_chromium_has_no_broken_image_and_no_console_message(browser, report, tmp_path):
    _, folder = report
    page = folder / "report.html"
    (tmp_path / "probe.html").write_text(PROBE)
    checker = CHECKER.replace("REPORT", page.as_uri()).replace("PROBE", (tmp_path / "probe.html").as_uri())
    (tmp_path / "checker.html").write_text(checker)
    proc = browse(
        browser,
        tmp_path,
        "dom",
        "--allow-file-access-from-files",
        "--virtual-time-budget=5000",
        "--dump-dom",
        (tmp_path / "checker.html").as_uri(),
    )
    match = re.search(r'<pre id="found">(.*?)</pre>', proc.stdout, re.S)
    assert match, proc.stdout[-2000:]
    found = json.loads(html.unescape(match.group(1)))
    # The checks see what they must: the probe's broken image and its console error
    assert found["probe"]["broken"] == ["broken on purpose"]
    lines = console_lines(proc.stderr)
    assert any("hpcthreads-probe" in line for line in lines), proc.stderr[-3000:]
    figures = sorted(folder.glob("*.png"))
    assert found["report"]["title"].startswith("hpcthreads report")
    assert found["report"]["images"] == len(figures) >= 5 and found["report"]["broken"] == []
    assert [line for line in lines if "hpcthreads-probe" not in line] == []


def test_report_page_screenshot_is_a_full_page_of_content(browser, report, tmp_path):
    _, folder = report
    shot = tmp_path / "report.png"
    browse(
        browser,
        tmp_path,
        "shot",
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
        (folder / "report.html").as_uri(),
    )
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    assert 50_000 < shot.stat().st_size < 20_000_000
    # Not a blank page: text and figures cover a good part of it, in more than one colour
    drawn = (pixels.min(axis=-1) < 0.9).mean()
    assert 0.02 < drawn < 0.9, drawn
    assert len(np.unique((pixels * 15).round().reshape(-1, 3), axis=0)) > 20


@pytest.mark.parametrize(("require", "outcome"), [("0", "1 skipped"), ("1", "1 error")])
def test_missing_chromium_skips_unless_required(require, outcome):
    # A PATH without chromium: the browser tests skip, or fail where CI requires them
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "HPCTHREADS_REQUIRE_CHROMIUM": require}
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-rs", "-k", "screenshot"]
    command += ["-p", "no:cacheprovider"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert outcome in proc.stdout and "chromium is not installed" in proc.stdout, proc.stdout[-2000:]
