"""Run settings that cannot work together are refused when the configuration is built."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hpcthreads.config import RunConfig, make_jobs
from hpcthreads.errors import ConfigError

JOBS = make_jobs({"jobs": [{"name": "a", "type": "collatz", "parameters": {"count": 10}}]})


def config(**settings) -> RunConfig:
    return RunConfig(jobs=JOBS, output=Path("out.h5"), **settings)


@pytest.mark.parametrize("interval,timeout", [(121.0, 120.0), (30.1, 120.0), (2.0, 5.0), (3600.0, 0.5)])
def test_a_heartbeat_interval_beyond_a_quarter_of_the_timeout_is_refused(interval, timeout):
    with pytest.raises(
        ConfigError, match=r"--heartbeat-interval .* more than a quarter of --heartbeat-timeout"
    ):
        config(heartbeat_interval=interval, heartbeat_timeout=timeout)


@pytest.mark.parametrize("interval,timeout", [(None, 0.01), (30.0, 120.0), (0.5, 2.0), (1.0, 120.0)])
def test_heartbeat_settings_that_work_are_kept(interval, timeout):
    made = config(heartbeat_interval=interval, heartbeat_timeout=timeout)
    assert (made.heartbeat_interval, made.heartbeat_timeout) == (interval, timeout)


def test_resume_and_force_together_are_refused():
    with pytest.raises(ConfigError, match="--resume and --force contradict each other"):
        config(resume=True, force=True)


def test_a_copy_with_new_settings_is_checked_too():
    # A campaign unit's configuration is a copy of the run's with its own output and flags
    base = config(resume=True)
    assert replace(base, resume=False, force=True).force
    with pytest.raises(ConfigError, match="--heartbeat-interval"):
        replace(base, heartbeat_interval=60.0)
