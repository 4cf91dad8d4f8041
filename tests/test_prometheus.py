"""A real Prometheus scrapes real runs through node_exporter, and every dashboard panel shows data.

Debian's `prometheus` and `prometheus-node-exporter` run on free localhost
ports: node_exporter's textfile collector reads a temporary metrics folder,
Prometheus scrapes it every second with the default `honor_labels: false`
(our labels must not clash with its own). A 3-rank run and a campaign write
their metrics there at the same time; then every query of every panel of
grafana/dashboards/hpcthreads.json, with its variables filled as Grafana
fills them, goes through Prometheus' HTTP API and must return a series.

Skipped when the binaries are missing, unless HPCTHREADS_REQUIRE_PROMETHEUS=1.
Only 127.0.0.1 is ever contacted, and every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from helpers import ROOT, cli, mpiexec

from hpcthreads.runtime.devices import count_physical

DASHBOARD = ROOT / "grafana" / "dashboards" / "hpcthreads.json"
HOST = "127.0.0.1"
REQUIRE = os.environ.get("HPCTHREADS_REQUIRE_PROMETHEUS") == "1"
# Seconds a daemon may take to answer, and a run or a campaign to finish
START_SECONDS = 60
RUN_SECONDS = 240
# Items per second per computing rank: the runs last a few seconds whatever the machine, and
# each campaign unit (a run whose file goes when it is done) stays for several scrapes
RUN_RATE, UNIT_RATE = "slow:rate=150000", "slow:rate=60000"
# GPU figures exist only on ranks with a GPU: elsewhere their panels must be empty (absent, not 0)
GPU_METRIC = re.compile(r"hpcthreads_rank_gpu_\w+")
# Grafana's own interval variables, as it fills them for a 1 s scrape interval
INTERVALS = {"__rate_interval": "1m", "__interval": "1s"}


def binary(*names: str) -> str | None:
    return next((found for name in names if (found := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Local:
    """HTTP GET on 127.0.0.1 only, never through a proxy the environment may name."""

    def __init__(self, port: int) -> None:
        self.base = f"http://{HOST}:{port}"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str, **params: object) -> bytes:
        query = urllib.parse.urlencode(params, doseq=True)
        with self.opener.open(f"{self.base}{path}{'?' + query if query else ''}", timeout=10) as reply:
            return reply.read()

    def api(self, path: str, **params: object) -> object:
        reply = json.loads(self.get(f"/api/v1/{path}", **params))
        assert reply["status"] == "success", reply
        return reply["data"]

    def wait(self, path: str, proc: subprocess.Popen, log: Path) -> None:
        """Until GET `path` answers (the daemon writing `log` is up)."""
        deadline = time.monotonic() + START_SECONDS
        what = log.stem
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                self.get(path)
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{what} did not answer on {self.base}{path} within {START_SECONDS} s")


def start(command: list[str], log: Path) -> subprocess.Popen:
    """A daemon in a session of its own, its output in `log`."""
    with open(log, "w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """node_exporter on a temporary textfile folder and Prometheus scraping it every second."""
    server, exporter = binary("prometheus"), binary("prometheus-node-exporter", "node_exporter")
    if server is None or exporter is None:
        missing = "prometheus" if server is None else "prometheus-node-exporter"
        if REQUIRE:
            pytest.fail(f"HPCTHREADS_REQUIRE_PROMETHEUS=1 but {missing} is not installed")
        pytest.skip(f"{missing} is not installed (apt-get install prometheus prometheus-node-exporter)")
    tmp = tmp_path_factory.mktemp("prometheus")
    textfiles = tmp / "textfile"
    textfiles.mkdir()
    exporter_port, server_port = free_port(), free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        # honor_labels stays false, Prometheus' default: our labels must not need it
        "scrape_configs": [
            {"job_name": "node", "static_configs": [{"targets": [f"{HOST}:{exporter_port}"]}]}
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))
    procs = [
        start(
            [
                exporter,
                f"--web.listen-address={HOST}:{exporter_port}",
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={textfiles}",
            ],
            tmp / "node-exporter.log",
        )
    ]
    try:
        Local(exporter_port).wait("/metrics", procs[0], tmp / "node-exporter.log")
        procs.append(
            start(
                [
                    server,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address={HOST}:{server_port}",
                ],
                tmp / "prometheus.log",
            )
        )
        api = Local(server_port)
        api.wait("/-/ready", procs[1], tmp / "prometheus.log")
        # Ready is not scraping yet: Prometheus applies its targets a few seconds after it starts
        deadline = time.monotonic() + START_SECONDS
        while not api.api("query", query='up{job="node"} == 1')["result"]:
            assert time.monotonic() < deadline, "Prometheus never scraped node_exporter"
            time.sleep(0.2)
        yield api, textfiles
    finally:
        for proc in reversed(procs):
            stop(proc)


def finish(proc: subprocess.Popen, deadline: float, what: str) -> str:
    try:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{what} did not finish within {RUN_SECONDS} s:\n{err[-3000:]}") from None
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{err[-3000:]}"
    return out


@pytest.fixture(scope="module")
def scraped(prometheus, tmp_path_factory):
    """A 3-rank run and a 2-unit campaign, at once, writing metrics into the scraped folder."""
    api, textfiles = prometheus
    tmp = tmp_path_factory.mktemp("runs")
    jobs = tmp / "jobs.yaml"
    job = "{name: camp, type: collatz, parameters: {count: 400000, batch_size: 50000}}"
    jobs.write_text(f"jobs:\n  - {job}\n")
    cli("campaign", "create", str(tmp / "campaign"), str(jobs), "--units", "2", check=True)
    begin = time.time()
    python = [sys.executable, "-m", "hpcthreads"]
    metrics = ["--metrics-dir", str(textfiles), "--quiet"]
    output = tmp / "run.h5"
    run_args = ["run", "collatz", "--count", "1.2e6", "--batch-size", "1e5", "-o", str(output), *metrics]
    launch = [mpiexec(), "-n", "3", *python, *run_args]
    campaign = [*python, "run", "--campaign", str(tmp / "campaign"), *metrics]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "HPCTHREADS_TEST_FAULTS": rate}, start_new_session=True)
        for command, rate in ((launch, RUN_RATE), (campaign, UNIT_RATE))
    ]  # fmt: skip
    deadline = time.monotonic() + RUN_SECONDS
    try:
        finish(procs[0], deadline, "the 3-rank run")
        finish(procs[1], deadline, "the campaign")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
    # Until Prometheus has scraped both ends (a few more scrapes: increase() needs two samples)
    wanted = ['hpcthreads_run_state{state="complete"} == 1', "hpcthreads_campaign_complete == 1"]
    limit = time.monotonic() + START_SECONDS
    while not all(api.api("query", query=q)["result"] for q in wanted):
        assert time.monotonic() < limit, f"Prometheus never saw: {wanted}"
        time.sleep(0.5)
    time.sleep(3)
    return api, output, begin, time.time()


def grafana_regex(values: list[str]) -> str:
    """Values as Grafana puts a multi-value variable into a PromQL regex (escaped, inside a string)."""
    escaped = [re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def fill(expr: str, variables: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"variable {name} has no value"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def variable_values(api: Local, dashboard: dict, begin: float, end: float) -> tuple[dict, dict]:
    """Every query variable's values through the API (as Grafana's label_values does), in order."""
    filled = {**INTERVALS, "__range": f"{int(end - begin) + 1}s"}
    found: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        selector, label = fill(match.group(1), filled), match.group(2)
        values = api.api(f"label/{label}/values", **{"match[]": selector, "start": begin, "end": end})
        assert values, f"variable {variable['name']}: {variable['definition']} has no values"
        found[variable["name"]] = values
        filled[variable["name"]] = grafana_regex(values)
    return found, filled


def test_our_labels_survive_a_default_scrape(scraped):
    api, output, _, _ = scraped
    series = api.api("query", query=f'hpcthreads_items{{run="{output}"}}')["result"]
    assert [s["metric"]["hpc_job"] for s in series] == ["collatz"]
    # Prometheus' own job label is the scrape job's: nothing of ours was renamed to exported_job
    assert all(s["metric"]["job"] == "node" and "exported_job" not in s["metric"] for s in series)
    assert series[0]["metric"]["host"] == socket.gethostname()


def test_runs_sharing_a_node_keep_series_of_their_own(scraped):
    api, output, begin, end = scraped
    runs = api.api("label/run/values", **{"match[]": "hpcthreads_run_state", "start": begin, "end": end})
    # The 3-rank run, and each unit of the campaign (its part file) as a run of its own
    assert str(output) in runs
    assert len([r for r in runs if "/parts/" in r]) == 2, runs
    ranks = api.api("query", query=f'hpcthreads_rank_memory_rss_bytes{{run="{output}"}}')["result"]
    assert sorted(int(s["metric"]["rank"]) for s in ranks) == [0, 1, 2]
    assert all(10e6 < float(s["value"][1]) < 64e9 for s in ranks), ranks


def test_every_panel_query_returns_series(scraped):
    api, _, begin, end = scraped
    dashboard = json.loads(DASHBOARD.read_text())
    _, filled = variable_values(api, dashboard, begin, end)
    gpus = count_physical() > 0
    empty, unexpected = [], []
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])] if p["type"] != "row"]
    for panel in panels:
        for target in panel["targets"]:
            expr = fill(target["expr"], filled)
            if target.get("range", True):
                data = api.api("query_range", query=expr, start=begin, end=end, step=1)
            else:
                data = api.api("query", query=expr, time=end)
            where = f"panel {panel['title']!r} query {target['refId']}: {expr}"
            if GPU_METRIC.search(expr) and not gpus:
                # No GPU here: the series must be absent, not zeros
                if data["result"]:
                    unexpected.append(where)
            elif not data["result"]:
                empty.append(where)
    assert not empty, "no series for:\n" + "\n".join(empty)
    assert not unexpected, "GPU series without a GPU:\n" + "\n".join(unexpected)


@pytest.mark.parametrize(("require", "outcome"), [("0", "1 skipped"), ("1", "1 error")])
def test_missing_binaries_skip_unless_required(require, outcome):
    # A PATH without prometheus: the panel test skips, or fails where CI requires it
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "HPCTHREADS_REQUIRE_PROMETHEUS": require}
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-rs", "-k", "every_panel"]
    command += ["-p", "no:cacheprovider"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert outcome in proc.stdout and "prometheus" in proc.stdout, proc.stdout[-2000:]
