"""Numba's on-disk cache, in a directory named after the source of every kernel module.

Numba checks a cached function against its own file only. Our kernels call
functions of other modules (compiled into the caller), so after a change to
one of those alone, Numba would keep running the old compiled code. Naming
the cache directory after a hash of all kernel sources makes any change start
a fresh cache. The base directory is NUMBA_CACHE_DIR if set, else
`$XDG_CACHE_HOME/hpcthreads/numba` (or `~/.cache/hpcthreads/numba`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
_configured: str | None = None


def source_key() -> str:
    """A short hash of every kernel source file of this package."""
    digest = hashlib.sha256()
    for path in sorted([*HERE.glob("*.py"), *HERE.glob("*.cu"), *HERE.glob("*.cuh")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def configure() -> str:
    """Point Numba's cache at the directory for these sources; call before any @njit(cache=True)."""
    global _configured
    if _configured is None:
        import numba

        base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "hpcthreads",
            "numba",
        )
        _configured = os.path.join(base, source_key())
        numba.config.CACHE_DIR = _configured
    return _configured
