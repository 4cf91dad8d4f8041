"""Compute backends, found by their `name`; heavy imports happen in their constructors."""

from __future__ import annotations

from hpcthreads.backends.base import BaseBackend
from hpcthreads.errors import BackendError

BACKEND_NAMES = ("numba-cpu",)


def backend_class(name: str) -> type[BaseBackend]:
    if name == "numba-cpu":
        from hpcthreads.backends.numba_cpu import NumbaCPUBackend

        return NumbaCPUBackend
    raise BackendError(f"unknown backend {name!r} (one of: auto, {', '.join(BACKEND_NAMES)})")


def make_backend(name: str = "auto") -> BaseBackend:
    """Instantiate a backend by name; `auto` picks the fastest that works here."""
    if name == "auto":
        name = "numba-cpu"
    return backend_class(name)()


def available_backends() -> dict[str, str]:
    """Backend name -> 'available' or the reason it is not."""
    found = {}
    for name in BACKEND_NAMES:
        try:
            backend_class(name)()
            found[name] = "available"
        except Exception as exc:  # noqa: BLE001 - any failure means unavailable
            found[name] = f"unavailable: {exc}"
    return found
