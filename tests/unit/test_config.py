"""Job files and numbers: what is accepted, and the message for what is not."""

from __future__ import annotations

import pytest

from hpcthreads.config import make_jobs, parse_int, parse_job_text
from hpcthreads.errors import ConfigError


@pytest.mark.parametrize(
    "text,value",
    [
        (5, 5),
        ("1e8", 10**8),
        ("2**64", 2**64),
        ("2^64", 2**64),
        ("1_000_000", 10**6),
        (1e6, 10**6),
        ("2**64 + 1", 2**64 + 1),
        ("1.5e3", 1500),
        ("3*10**20", 3 * 10**20),
        ("1e30", 10**30),
    ],
)
def test_parse_int_accepts_exact_integers(text, value):
    assert parse_int(text, "x") == value


@pytest.mark.parametrize(
    "text", ["1.5", "1e-3", "abc", "", "2**-1", "__import__('os')", True, None, 1.5, "1.25e1"]
)
def test_parse_int_refuses_everything_else(text):
    with pytest.raises(ConfigError, match="^x: "):
        parse_int(text, "x")


def job(**entry):
    base = {"name": "a", "type": "collatz", "parameters": {"count": 10}}
    base.update(entry)
    return {"jobs": [base]}


def test_defaults_are_filled_in():
    (j,) = make_jobs(job())
    assert j.params == {"start": 1, "count": 10, "batch_size": 1 << 20, "store": "summary"}
    assert (j.priority, j.gpu_preferred) == ("normal", False)


@pytest.mark.parametrize(
    "document,message",
    [
        (job(type="fibonacci"), "job 'a': type: unknown job type 'fibonacci'"),
        (job(parameters={"count": -1}), "job 'a': count must be at least 1"),
        (job(parameters={"count": 0}), "job 'a': count must be at least 1"),
        (job(parameters={"count": 5, "start": 0}), "job 'a': start must be at least 1"),
        (job(parameters={"count": 5, "colour": 1}), "job 'a': parameters: unknown key 'colour'"),
        (job(parameters={}), "job 'a': parameters: count is required"),
        (job(extra=1), "job 'a': unknown key 'extra'"),
        (job(priority="urgent"), "job 'a': priority: 'urgent'"),
        (job(gpu_preferred="yes"), "job 'a': gpu_preferred"),
        (job(parameters={"count": 5, "store": "all"}), "job 'a': store: 'all'"),
        (
            job(type="verify", parameters={"count": 5, "sieve_bits": 31}),
            "job 'a': sieve_bits must be at most 30, got 31",
        ),
        (
            job(type="verify", parameters={"count": 5, "sieve_extra_bits": 17}),
            "job 'a': sieve_extra_bits must be at most 16, got 17",
        ),
        (
            job(type="verify", parameters={"count": 5, "sieve_extra_bits": -1}),
            "job 'a': sieve_extra_bits must be at least 0",
        ),
        (
            job(type="verify", parameters={"count": 5, "sieve_mod9": 2}),
            "job 'a': sieve_mod9 must be 0 \\(off\\) or 1 \\(on\\), got 2",
        ),
        (
            job(parameters={"count": 5, "start": "2**128"}),
            "job 'a': start \\+ count must stay below 2\\*\\*128",
        ),
        ({"jobs": []}, "'jobs' is empty"),
        (
            {"jobs": [{"name": "x", "type": "collatz", "parameters": {"count": 1}}] * 2},
            "job 'x': name: duplicate",
        ),
        ({"job": []}, "expected a mapping with a 'jobs' list"),
        ({"jobs": [], "other": 1}, "unknown top-level key 'other'"),
        (["jobs"], "expected a mapping"),
        (
            {"jobs": [{"type": "thread", "parameters": {"thread_count": 5}}]},
            "job 'job1': parameters: max_depth",
        ),
    ],
)
def test_bad_jobs_are_refused_naming_job_and_field(document, message):
    with pytest.raises(ConfigError, match=message):
        make_jobs(document)


def test_yaml_and_json_job_files_give_the_same_jobs():
    yaml_text = """
jobs:
  - name: records-low
    type: collatz
    priority: high
    gpu_preferred: true
    parameters: {start: 1, count: 1e6, batch_size: 65536}
  - name: paths
    type: thread
    parameters: {thread_count: 1000, max_depth: 10, batch_size: 256}
"""
    json_text = """{"jobs": [
  {"name": "records-low", "type": "collatz", "priority": "high", "gpu_preferred": true,
   "parameters": {"start": 1, "count": "1e6", "batch_size": 65536}},
  {"name": "paths", "type": "thread",
   "parameters": {"thread_count": 1000, "max_depth": 10, "batch_size": 256}}]}"""
    assert parse_job_text(yaml_text) == parse_job_text(json_text)
    assert parse_job_text(yaml_text)[0].params["count"] == 10**6


@pytest.mark.parametrize("text", ["jobs: [unclosed", '{"jobs": ', "\tjobs:\n\t- a"])
def test_invalid_yaml_or_json_is_refused_with_its_line_and_column(text):
    with pytest.raises(ConfigError, match=r"not valid (YAML|JSON) \(line \d+, column \d+: "):
        parse_job_text(text)
