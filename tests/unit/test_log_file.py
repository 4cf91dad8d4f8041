"""--log-file patterns naming anything but {rank}, {size} and {host} are refused before any rank starts."""

from __future__ import annotations

import logging
import socket

import pytest

from hpcthreads.errors import ConfigError
from hpcthreads.runtime.mpiutil import parse_log_file, setup_logging

PLACEHOLDERS = "the placeholders are {rank}, {size} and {host}"


@pytest.mark.parametrize(
    "pattern,problem",
    [
        ("run-{job}.log", "unknown placeholder '{job}'"),
        ("run-{RANK}.log", "unknown placeholder '{RANK}'"),
        ("run-{rank.real}.log", "unknown placeholder '{rank.real}'"),
        ("run-{host[0]}.log", "unknown placeholder '{host[0]}'"),
        ("run-{.log", "a brace without its pair"),
        ("run-}.log", "a brace without its pair"),
        ("run-{rank.log", "a brace without its pair"),
        ("run-{}.log", "{} is a positional field"),
        ("run-{0}.log", "{0} is a positional field"),
        ("run-{rank!r}.log", "takes a short format spec only"),
        ("run-{rank:{size}}.log", "takes a short format spec only"),
        ("run-{rank:0999999999}.log", "takes a short format spec only"),
        ("run-{host:d}.log", "'d' is not a format spec for {host}"),
        ("run-{rank:q}.log", "'q' is not a format spec for {rank}"),
    ],
)
def test_a_pattern_that_cannot_be_filled_is_refused_naming_the_placeholders(pattern, problem):
    with pytest.raises(ConfigError) as info:
        parse_log_file(pattern)
    message = str(info.value)
    assert message.startswith(f"--log-file {pattern!r}: ") and problem in message and PLACEHOLDERS in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "pattern", ["run.log", "r{rank}-of-{size}@{host}.log", "r{rank:04d}.log", "{{x}}{rank}"]
)
def test_patterns_that_can_be_filled_are_accepted(pattern):
    parse_log_file(pattern)


def test_setup_logging_fills_in_the_pattern_and_refuses_a_bad_one(tmp_path):
    logger = logging.getLogger("hpcthreads")
    try:
        setup_logging(3, 8, "INFO", str(tmp_path / "r{rank:02d}-{size}-{host}-{{x}}.log"))
        logger.info("hello")
        logger.handlers[0].flush()
        written = tmp_path / f"r03-8-{socket.gethostname()}-{{x}}.log"
        assert "hello" in written.read_text()
        with pytest.raises(ConfigError, match="unknown placeholder"):
            setup_logging(0, 1, None, str(tmp_path / "{pid}.log"))
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers.clear()
