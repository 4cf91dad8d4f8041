"""The Grafana dashboard: its structure, and that every metric and label its queries read is written.

The metrics and their labels come from the files a real run (`run --metrics-dir`) and a real
campaign (`campaign status --metrics-dir`) write, not from a list kept here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml
from helpers import ROOT, cli

from hpcthreads.runtime.monitor import Metrics, Snapshot
from hpcthreads.runtime.usage import Usage

GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "hpcthreads.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Labels Prometheus adds to every series it scrapes; the files cannot carry them
SCRAPE_LABELS = {"instance"}
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}

FUNCTIONS = frozenset(
    """abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg
    delta deriv exp floor histogram_avg histogram_count histogram_fraction histogram_quantile
    histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase irate label_join
    label_replace last_over_time ln log10 log2 max_over_time min_over_time minute month predict_linear
    present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_desc sqrt
    stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector year start end""".split()
)
AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile".split()
)
GROUPING = frozenset({"by", "without"})
MATCHING = frozenset({"on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"})

TOKEN = re.compile(
    r"""(?P<space>\s+|\#[^\n]*)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
    | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_:][\w:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}@])""",
    re.X,
)


class PromQLError(ValueError):
    pass


@dataclass
class Query:
    """What one PromQL expression reads: its selectors, and the labels it groups or matches by."""

    selectors: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    groupings: list[tuple[frozenset[str], tuple[str, ...]]] = field(default_factory=list)

    @property
    def metrics(self) -> set[str]:
        return {name for name, _ in self.selectors}


def tokenize(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"cannot read {expr[pos:]!r}")
        if match.lastgroup != "space":
            out.append((match.lastgroup, match.group()))
        pos = match.end()
    return out


def parse(expr: str) -> Query:
    """The metric names and label names of a PromQL expression (functions, keywords, strings skipped)."""
    tokens = tokenize(expr)
    query = Query()
    end, _ = _group(tokens, 0, query, None)
    assert end == len(tokens)
    return query


def _group(tokens: list, i: int, query: Query, closing: str | None) -> tuple[int, list[str]]:
    """Parse up to `closing` (None: the end); the index after it and the metrics selected in between."""
    metrics: list[str] = []
    matching: set[str] = set()
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if text == closing and kind == "op":
            break
        if kind == "op" and text in ")}":
            raise PromQLError(f"unbalanced {text!r}")
        if kind == "op" and text in "({":
            i, inner = _group(tokens, i + 1, query, ")") if text == "(" else _selector(tokens, i, None, query)
            metrics += inner
        elif kind != "name" or text in KEYWORDS:
            i += 1
        elif text in AGGREGATIONS:
            i, inner = _aggregation(tokens, i + 1, query)
            metrics += inner
        elif text in MATCHING:
            i, labels = _labels(tokens, i + 1) if following == "(" else (i + 1, set())
            matching |= labels
        elif following == "(":
            if text not in FUNCTIONS:
                raise PromQLError(f"unknown function {text}()")
            i, inner = _group(tokens, i + 2, query, ")")
            metrics += inner
        else:
            i, inner = _selector(tokens, i + 1, text, query)
            metrics += inner
    else:
        if closing is not None:
            raise PromQLError(f"missing {closing!r}")
    if matching:
        query.groupings.append((frozenset(matching), tuple(metrics)))
    return (i if closing is None else i + 1), metrics


def _aggregation(tokens: list, i: int, query: Query) -> tuple[int, list[str]]:
    """`sum by (a) (expr)` or `sum (expr) without (a)`, from after the operator's name."""
    labels: set[str] = set()
    if tokens[i][1] in GROUPING:
        i, labels = _labels(tokens, i + 1)
    if tokens[i][1] != "(":
        raise PromQLError(f"an aggregation needs (: {tokens[i][1]!r}")
    i, metrics = _group(tokens, i + 1, query, ")")
    if i < len(tokens) and tokens[i][1] in GROUPING:
        i, labels = _labels(tokens, i + 1)
    if labels:
        query.groupings.append((frozenset(labels), tuple(metrics)))
    return i, metrics


def _labels(tokens: list, i: int) -> tuple[int, set[str]]:
    """A label list `(a, b)` starting at tokens[i]; the index after it and the names."""
    if tokens[i][1] != "(":
        raise PromQLError("a label list needs (")
    names, i = set(), i + 1
    while tokens[i][1] != ")":
        kind, text = tokens[i]
        if kind == "name":
            names.add(text)
        elif text != ",":
            raise PromQLError(f"not a label name: {text!r}")
        i += 1
    return i + 1, names


def _selector(tokens: list, i: int, name: str | None, query: Query) -> tuple[int, list[str]]:
    """A metric name (given) with optional `{matchers}` at tokens[i]; the index after it and the metric."""
    labels: set[str] = set()
    if i < len(tokens) and tokens[i][1] == "{":
        i += 1
        while tokens[i][1] != "}":
            label, op, value = (tokens[i + k][1] for k in range(3))
            if op not in ("=", "!=", "=~", "!~"):
                raise PromQLError(f"not a label matcher: {label}{op}{value}")
            if label == "__name__":
                if op != "=":
                    raise PromQLError("a __name__ other than = names no one metric")
                name = value[1:-1]
            else:
                labels.add(label.strip("\"'"))
            i += 3
            if tokens[i][1] == ",":
                i += 1
        i += 1
    if name is None:
        raise PromQLError("a selector without a metric name")
    query.selectors.append((name, frozenset(labels)))
    return i, [name]


def problems(query: Query, exposed: dict[str, set[str]]) -> list[str]:
    """What a query reads that hpcthreads does not write: metrics, and labels on those metrics."""
    out = [f"metric {name} is not written" for name in sorted(query.metrics - set(exposed))]
    for name, labels in query.selectors:
        missing = labels - exposed.get(name, labels)
        out += [f"{name} has no label {label}" for label in sorted(missing)]
    for labels, metrics in query.groupings:
        for name in sorted(set(metrics) & set(exposed)):
            missing = labels - exposed[name] - SCRAPE_LABELS
            out += [f"{name} has no label {label} to group by" for label in sorted(missing)]
    return out


def read_exposition(text: str) -> dict[str, set[str]]:
    """Metric name -> label names, from Prometheus text format (TYPE lines and samples)."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            out.setdefault(line.split()[2], set())
        elif line and not line.startswith("#"):
            match = re.match(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+\S+", line)
            assert match, f"not a sample line: {line!r}"
            labels = re.findall(r'(\w+)="(?:\\.|[^"\\])*"', match.group(2) or "")
            out.setdefault(match.group(1), set()).update(labels)
    return out


@pytest.fixture(scope="module")
def exposed(tmp_path_factory) -> dict[str, set[str]]:
    """Every metric (with its labels) a run and a campaign write, from real commands."""
    tmp = tmp_path_factory.mktemp("metrics")
    run = ["run", "collatz", "--count", "20000", "--batch-size", "2000", "--quiet"]
    cli(*run, "-o", str(tmp / "run.h5"), "--metrics-dir", str(tmp / "run"), check=True)
    jobs = tmp / "jobs.yaml"
    jobs.write_text("jobs:\n  - {name: c, type: collatz, parameters: {count: 40000, batch_size: 5000}}\n")
    cli("campaign", "create", str(tmp / "campaign"), str(jobs), "--units", "2", check=True)
    cli("run", "--campaign", str(tmp / "campaign"), "--quiet", check=True)
    cli(
        "campaign",
        "status",
        str(tmp / "campaign"),
        "--metrics-dir",
        str(tmp / "campaign-metrics"),
        check=True,
    )
    [run_file] = (tmp / "run").glob("hpcthreads-*.prom")
    texts = [run_file.read_text(), (tmp / "campaign-metrics" / "hpcthreads_campaign.prom").read_text()]
    # GPU figures are written only for ranks with a GPU: without one here, the same renderer is
    # given a GPU rank's sample
    if not read_exposition(texts[0]).keys() & {"hpcthreads_rank_gpu_utilization_ratio"}:
        gpu = Snapshot(done={"c": 1}, total={"c": 1}, usage={1: Usage(1 << 20, 1 << 30, 0.5)})
        texts.append(Metrics(tmp / "gpu", tmp / "gpu.h5").render(gpu, 0.0))
    found: dict[str, set[str]] = {}
    for text in texts:
        for name, labels in read_exposition(text).items():
            found.setdefault(name, set()).update(labels)
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too."""
    return [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]


def query_panels(dashboard: dict) -> list[dict]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard."""
    return [(p["title"], t["expr"]) for p in query_panels(dashboard) for t in p["targets"]]


def label_values_queries(dashboard: dict) -> list[tuple[str, str, str]]:
    """(variable, metric selector, label) of every label_values() variable."""
    out = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert match, variable["definition"]
            out.append((variable["name"], match.group(1), match.group(2)))
    return out


def test_dashboard_is_a_grafana_model_with_a_prometheus_datasource_variable(dashboard):
    assert dashboard["uid"] == "hpcthreads" and dashboard["title"] and dashboard["id"] is None
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert {"host", "run", "job", "campaign"} <= set(variables)
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE
            assert variable["query"]["query"] == variable["definition"]


def test_panels_have_unique_ids_a_place_and_queries_on_the_datasource(dashboard):
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    for panel in panels:
        pos = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(pos) and all(isinstance(v, int) for v in pos.values()), panel
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["w"] > 0 and pos["h"] > 0, panel["title"]
    for panel in query_panels(dashboard):
        assert panel["title"] and panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]


def test_panels_do_not_overlap(dashboard):
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_queries_use_only_defined_variables(dashboard):
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_VARIABLES
    for title, expr in expressions(dashboard):
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= defined, f"{title}: {sorted(used - defined)}"


def test_every_metric_and_label_the_dashboard_reads_is_written(dashboard, exposed):
    found = []
    for title, expr in expressions(dashboard):
        found += [f"{title}: {problem}" for problem in problems(parse(expr), exposed)]
    for name, selector, label in label_values_queries(dashboard):
        query = parse(selector)
        found += [f"variable {name}: {problem}" for problem in problems(query, exposed)]
        found += [
            f"variable {name}: no label {label}"
            for m in query.metrics
            if label not in exposed.get(m, {label})
        ]
    assert not found, "\n".join(found)


def test_legends_name_labels_of_the_series(dashboard, exposed):
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            metrics = parse(target["expr"]).metrics
            available = set().union(*(exposed.get(m, set()) for m in metrics)) | SCRAPE_LABELS
            named = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert named <= available, f"{panel['title']}: {sorted(named - available)}"


def test_no_metric_carries_a_label_prometheus_sets_itself(dashboard, exposed):
    # Prometheus sets `job` and `instance` on every scraped series: ours would be renamed exported_*
    clashing = {name: labels & {"job", "instance"} for name, labels in exposed.items()}
    assert not any(clashing.values()), clashing
    assert all(
        "hpc_job" in exposed[name] and {"run", "host"} <= exposed[name]
        for name in ("hpcthreads_items", "hpcthreads_items_done")
    )
    for title, expr in expressions(dashboard):
        assert not any("job" in labels for _, labels in parse(expr).selectors), title


def test_every_metric_written_has_a_panel(dashboard, exposed):
    used = set().union(*(parse(expr).metrics for _, expr in expressions(dashboard)))
    assert set(exposed) - used == set()


def test_the_extractor_reports_what_is_not_written(exposed):
    assert problems(parse("rate(made_up_metric_total[5m])"), exposed) == [
        "metric made_up_metric_total is not written"
    ]
    assert problems(parse('hpcthreads_items{rank="1"}'), exposed) == ["hpcthreads_items has no label rank"]
    assert problems(parse("sum by (rank) (hpcthreads_items)"), exposed) == [
        "hpcthreads_items has no label rank to group by"
    ]
    assert problems(parse("a_total / on(job) b_total"), exposed) == [
        "metric a_total is not written",
        "metric b_total is not written",
    ]
    with pytest.raises(PromQLError, match="unknown function"):
        parse("made_up_function(hpcthreads_items)")


def test_the_extractor_skips_functions_keywords_labels_durations_and_strings():
    expr = (
        'sum by (job) (increase(hpcthreads_items_done{job=~"$job", state!="x"}[$__rate_interval] offset 5m))'
        ' > bool 0 or label_replace(vector(1), "dst", "hpcthreads_fake", "", "") * 1e3'
        ' unless on(job) group_left(rank) {__name__="hpcthreads_items"} @ end()'
    )
    query = parse(expr)
    assert query.selectors == [
        ("hpcthreads_items_done", frozenset({"job", "state"})),
        ("hpcthreads_items", frozenset()),
    ]
    assert (frozenset({"job"}), ("hpcthreads_items_done",)) in query.groupings
    assert any(labels == {"job", "rank"} for labels, _ in query.groupings)


def test_queries_are_valid_promql_for_promtool(dashboard, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    rules = []
    for index, (_, expr) in enumerate(expressions(dashboard)):
        # Grafana's own variables are intervals; the dashboard's match label values
        expr = re.sub(r"\$\{?(\w+)\}?", lambda m: "5m" if m.group(1).startswith("__") else ".*", expr)
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_provisioning_loads_the_dashboards_folder_and_a_prometheus_datasource():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "hpcthreads.yaml").read_text())
    [entry] = provider["providers"]
    assert provider["apiVersion"] == 1 and entry["type"] == "file"
    readme = (GRAFANA / "README.md").read_text()
    # The README mounts the dashboards folder where the provider reads it
    assert f"grafana/dashboards:{entry['options']['path']}" in readme
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    [source] = sources["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source["url"].startswith("http")
    assert source["url"] in readme
