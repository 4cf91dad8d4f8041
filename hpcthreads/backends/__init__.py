"""Compute backends, found by their `name`; heavy imports happen in their constructors."""

from __future__ import annotations

from hpcthreads.backends.base import BaseBackend
from hpcthreads.errors import BackendError

BACKEND_NAMES = ("numba-cpu", "numba-cuda", "cupy")
# Not a compute backend: sleeps for the time a chunk would take (measuring coordination at scale)
SIMULATED = "simulated"
# The GPU backends `auto` tries on a rank with a device, in this order
GPU_BACKENDS = ("cupy", "numba-cuda")


def backend_class(name: str) -> type[BaseBackend]:
    if name == "numba-cpu":
        from hpcthreads.backends.numba_cpu import NumbaCPUBackend

        return NumbaCPUBackend
    if name == "numba-cuda":
        from hpcthreads.backends.numba_cuda import NumbaCUDABackend

        return NumbaCUDABackend
    if name == "cupy":
        from hpcthreads.backends.cupy_backend import CupyBackend

        return CupyBackend
    if name == SIMULATED:
        from hpcthreads.backends.simulated import SimulatedBackend

        return SimulatedBackend
    names = ", ".join((*BACKEND_NAMES, SIMULATED))
    raise BackendError(f"unknown backend {name!r} (one of: auto, {names})")


def make_backend(name: str = "auto", device: int | None = None, label: str | None = None) -> BaseBackend:
    """Instantiate a backend by name; `auto` picks the fastest that works here.

    `device` is the CUDA ordinal bound to this rank (None: no device, so `auto`
    means numba-cpu); `label` names it in `describe()`.
    """
    if name == "auto":
        if device is None:
            return backend_class("numba-cpu")()
        errors = []
        for gpu in GPU_BACKENDS:
            try:
                return backend_class(gpu)(device, label)  # type: ignore[call-arg]
            except BackendError as exc:
                errors.append(str(exc))
        raise BackendError("; ".join(errors))
    cls = backend_class(name)
    if cls.is_gpu:
        return cls(0 if device is None else device, label)  # type: ignore[call-arg]
    return cls()


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
