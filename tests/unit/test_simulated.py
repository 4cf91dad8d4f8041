"""The simulated backend: sleeps for the time a chunk would take, computes nothing, says so."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hpcthreads.backends.simulated import SimulatedBackend, is_slowed, parse_slow
from hpcthreads.errors import ConfigError


def test_a_call_lasts_count_over_rate_and_returns_zeros():
    backend = SimulatedBackend(rate=1e6)
    t0 = time.perf_counter()
    raw = backend.collatz_range(1, 50_000, True)
    assert time.perf_counter() - t0 >= 0.05
    assert raw.sum_delay == 0 and len(raw.delay) == 50_000 and not raw.delay.any()
    paths = backend.thread_paths(1, 10, 5)
    assert paths.paths_lo.shape == (10, 6) and not np.any(paths.paths_lo)


def test_slowed_workers_are_the_fraction_asked_for_spread_over_the_ranks():
    slowed = [r for r in range(1, 1001) if is_slowed(r, 0.2)]
    assert 190 <= len(slowed) <= 210
    assert sum(r <= 500 for r in slowed) in range(90, 111), "not all at one end"
    backend = SimulatedBackend(rate=1e6, slow="0.2:4", rank=slowed[0])
    assert backend.rate == 250_000 and "(slowed)" in backend.describe()


@pytest.mark.parametrize("text", ["0.2", "2:4", "0.2:0.5", "a:b", "-1:2"])
def test_bad_slow_settings_are_refused(text):
    with pytest.raises(ConfigError, match="--simulated-slow"):
        parse_slow(text)
