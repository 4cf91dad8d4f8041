"""Comparing the results in two files, ignoring what may differ between runs (timings, ranks)."""

from __future__ import annotations

import h5py
import numpy as np

# Attributes that describe the run rather than its results
RUN_ONLY = {"wall_seconds", "created", "ranks", "backend", "state", "host", "user"}


def results_of(path) -> dict:
    """Every dataset and attribute under /jobs, as comparable Python values."""
    found: dict = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            for key, value in obj.attrs.items():
                if key not in RUN_ONLY:
                    found[f"{name}@{key}"] = value.tolist() if isinstance(value, np.ndarray) else value
            if isinstance(obj, h5py.Dataset):
                found[name] = (obj.dtype.str, obj[()].tolist())

        f["jobs"].visititems(visit)
    return found


def assert_same_results(a, b) -> None:
    ra, rb = results_of(a), results_of(b)
    assert sorted(ra) == sorted(rb), set(ra) ^ set(rb)
    for key in ra:
        assert ra[key] == rb[key], key
