"""Tables kept on disk between runs, so that every rank builds them at most once.

Files live under `$XDG_CACHE_HOME/hpcthreads` (else `~/.cache/hpcthreads`),
named after the table, its size and TABLE_VERSION, which changes whenever a
table's layout or meaning does. A file is written under a temporary name in
the same directory and renamed into place, so a reader sees a whole file or
none; an unreadable file is built again. The cache is an optimisation only:
any failure to read or write it falls back to building in memory.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

TABLE_VERSION = 1


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hpcthreads"


def load_or_build(name: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays of table `name`: read from the cache, or built and stored there."""
    path = cache_dir() / f"{name}-v{TABLE_VERSION}.npz"
    try:
        with np.load(path) as stored:
            return {key: stored[key] for key in stored.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, **arrays)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass
    return arrays
