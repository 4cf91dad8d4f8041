"""Prometheus label values are escaped: a hostile name stays inside its label, one sample per line."""

from __future__ import annotations

import re

import pytest

from hpcthreads.campaign.status import STATES, render_metrics
from hpcthreads.runtime.monitor import Metrics, Snapshot, escape_label

# The text format's sample line, as node_exporter's parser reads it
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(rf"[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{{{LABEL}(?:,{LABEL})*\}})? \S+")
HOSTILE = [
    'a"} 1\nevil_metric 1\n#',
    "back\\slash",
    "tail\\",
    'quote"',
    "two\nlines",
    "\\n not a newline",
]


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def labels_of(text: str, key: str) -> list[str]:
    """Every value of label KEY, after checking that each line is a comment or a well-formed sample."""
    values = []
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert SAMPLE.fullmatch(line), f"not a valid sample line: {line!r}"
        values += [unescape(v) for k, v in re.findall(LABEL, line) if k == key]
    return values


@pytest.mark.parametrize("name", HOSTILE)
def test_escape_label_round_trips(name):
    escaped = escape_label(name)
    assert "\n" not in escaped
    assert re.fullmatch(r'(?:[^"\\\n]|\\[\\"n])*', escaped)
    assert unescape(escaped) == name


def test_text_utf8_cannot_encode_still_gives_a_valid_file():
    # A directory name read with surrogateescape: writing it raw would raise
    assert escape_label("camp\udcff").encode("utf-8") == b"camp?"


def test_run_metrics_keep_each_job_name_inside_its_label(tmp_path):
    names = {name: i for i, name in enumerate(HOSTILE)}
    snap = Snapshot(done=dict(names), total={n: 10 for n in names}, busy=lambda: {1: 0.5})
    text = Metrics(tmp_path, tmp_path / 'o"u\nt.h5').render(snap, 1.0)
    assert "evil_metric" not in [line.split(" ")[0] for line in text.splitlines()]
    assert labels_of(text, "hpc_job") == list(names) * 2


def test_campaign_metrics_escape_the_campaign_and_job_names():
    status = {
        "campaign": '/scratch/c"amp\\aign\nx',
        "units": {**dict.fromkeys(STATES, 1), "total": 4},
        "jobs": [{"name": name, "items": 5, "items_done": 1} for name in HOSTILE],
        "rate_items_per_second": 2.0,
        "holders": [],
        "complete": False,
    }
    text = render_metrics(status)
    campaigns = labels_of(text, "campaign")
    assert campaigns and set(campaigns) == {'c"amp\\aign\nx'}
    assert labels_of(text, "hpc_job") == HOSTILE * 2
