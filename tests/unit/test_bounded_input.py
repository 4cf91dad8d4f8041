"""Inputs quoted in errors are cut short; YAML aliases are counted out before anything is built."""

from __future__ import annotations

import time

import pytest

from hpcthreads.config import MAX_YAML_VALUES, parse_job_text
from hpcthreads.errors import (
    MAX_MESSAGE,
    MAX_SHOWN,
    ConfigError,
    JobFailedError,
    OutputError,
    message_of,
    shown,
)

# Generous: a message quotes a few inputs of at most MAX_SHOWN characters each
SHORT = 400


def nested_aliases(levels: int, width: int = 9) -> str:
    """A flow list whose anchors nest: `width ** levels` strings from a few hundred bytes."""
    parts = ["&a0 [" + ", ".join(["lolololololol"] * width) + "]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_job_text(text)
    return str(info.value)


def test_aliases_expanding_past_the_bound_are_refused_at_once():
    # 9**10 strings, about 3.5e9: any walk over them would take minutes and gigabytes
    text = f"jobs:\n  - {{name: a, type: collatz, parameters: {{count: 10, start: {nested_aliases(10)}}}}}\n"
    assert len(text) < 700
    began = time.perf_counter()
    message = refusal(text)
    assert time.perf_counter() - began < 5
    assert f"aliases expand to more than {MAX_YAML_VALUES:,} values" in message
    assert len(message) < SHORT


def test_the_alias_bound_counts_what_the_aliases_stand_for_not_the_text():
    # 9**7 (4.8 million) values from about 300 bytes, refused; 9**5 (59,049) values is an ordinary input
    assert "aliases expand" in refusal(f"jobs: {nested_aliases(7)}\n")
    assert "aliases expand" not in refusal(f"jobs: {nested_aliases(5)}\n")


def test_an_alias_inside_what_it_names_is_refused():
    assert "refers to a list or mapping that contains it" in refusal("jobs:\n  - &a [*a]\n")


@pytest.mark.parametrize(
    "template,needle",
    [
        ("jobs:\n  - name: {bomb}\n", "name must be text"),
        ("jobs:\n  - name: a\n    type: {bomb}\n", "unknown job type"),
        ("jobs:\n  - name: a\n    type: collatz\n    priority: {bomb}\n", "priority:"),
        ("jobs:\n  - name: a\n    type: collatz\n    gpu_preferred: {bomb}\n", "gpu_preferred:"),
        ("jobs:\n  - name: a\n    type: collatz\n    parameters: {{count: {bomb}}}\n", "count: expected"),
        ("jobs:\n  - name: a\n    type: collatz\n    parameters: {{count: 10, store: {bomb}}}\n", "store:"),
        ("jobs:\n  - name: a\n    type: collatz\n    parameters: {{count: 10, start: {bomb}}}\n", "start:"),
        ("jobs:\n  - name: a\n    {key}: 1\n", "unknown key"),
        ("jobs:\n  - name: a\n    type: collatz\n    parameters: {{count: 10, {key}: 1}}\n", "unknown key"),
        ("jobs: []\n{key}: 1\n", "unknown top-level key"),
    ],
)
def test_a_value_under_the_alias_bound_is_quoted_short(template, needle):
    # 9**6 = 531,441 strings: allowed by the alias bound, 9 MB once written out. A key must be
    # hashable, and YAML allows a plain key of up to 1024 characters
    message = refusal(template.format(bomb=nested_aliases(6), key="x" * 1000))
    assert needle in message and len(message) < SHORT, message[:SHORT]


def test_keys_of_mixed_types_are_named_not_a_traceback():
    assert "unknown key 1 " in refusal("jobs:\n  - {1: 2, name: a, x: 3}\n")
    assert "unknown key 1 " in refusal("jobs:\n  - {name: a, type: collatz, parameters: {1: 2, x: 3}}\n")
    assert "a key that is a list or mapping" in refusal("jobs:\n  - {[1]: 2, name: a}\n")


@pytest.mark.parametrize(
    "text",
    ["jobs: " + "[" * 5000 + "]" * 5000, '{"jobs": ' + "[" * 100_000 + "]" * 100_000 + "}"],
    ids=["yaml", "json"],
)
def test_deep_nesting_is_refused_not_a_recursion_error(text):
    assert "nested too deeply" in refusal(text)


@pytest.mark.parametrize(
    "value",
    [
        10**5000,
        "x" * 10**6,
        b"y" * 10**6,
        "line\nbreak" * 1000,
        {f"k{i}": list(range(10**4)) for i in range(100)},
    ],
    ids=["huge-int", "long-str", "long-bytes", "newlines", "big-dict"],
)
def test_shown_is_one_short_line(value):
    text = shown(value)
    assert len(text) <= MAX_SHOWN and "\n" not in text


def test_shown_writes_small_values_exactly():
    assert shown("abc") == "'abc'" and shown(42) == "42" and shown([1, "a"]) == "[1, 'a']"


def test_a_user_error_is_printed_as_one_bounded_line():
    message = message_of(OutputError("first\nsecond " + "z" * 10**6))
    assert "\n" not in message and len(message) <= MAX_MESSAGE
    assert message.startswith("first\\nsecond zzz") and "characters cut" in message


def test_a_failed_jobs_report_keeps_the_workers_traceback():
    report = "job 'a' failed: Traceback (most recent call last):\n  File ...\nZeroDivisionError"
    assert message_of(JobFailedError(report)) == report
