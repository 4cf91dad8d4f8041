"""The cupy backend: the CUDA C kernels of collatz_kernels.cu, compiled by NVRTC through CuPy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hpcthreads.backends.gpubase import BaseGPUBackend, cdiv
from hpcthreads.errors import BackendError

HERE = Path(__file__).parent
KERNEL_NAMES = (
    "collatz_segments",
    "collatz_numbers",
    "verify_segments",
    "verify_numbers",
    "verify_sieve_segments",
    "verify_sieve_numbers",
    "thread_paths",
    "slice_build",
    "slice_walk",
)
BLOCK = 256
# NVRTC's options; CuPy's kernel cache is keyed on them (cupycache.py compiles with the same)
MODULE_OPTIONS = ("--std=c++14",)


def kernel_source() -> str:
    """The kernels with collatz.cuh pasted in: NVRTC then needs no include path."""
    header = (HERE / "collatz.cuh").read_text()
    return (HERE / "collatz_kernels.cu").read_text().replace('#include "collatz.cuh"', header)


class CupyBackend(BaseGPUBackend):
    name = "cupy"

    def __init__(self, device: int = 0, label: str | None = None) -> None:
        try:
            import cupy
        except ImportError as exc:
            raise BackendError(f"cupy is not installed ({exc}); pip install 'hpcthreads[cupy]'") from exc
        try:
            cupy.cuda.Device(device).use()
            props = cupy.cuda.runtime.getDeviceProperties(device)
        except Exception as exc:  # noqa: BLE001 - no driver, no device, wrong CUDA: all mean unusable
            raise BackendError(f"no usable CUDA device for cupy ({type(exc).__name__}: {exc})") from exc
        self._cp = cupy
        self._device = device if label is None else label
        self._device_name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        module = cupy.RawModule(code=kernel_source(), options=MODULE_OPTIONS)
        self._kernels = {name: module.get_function(name) for name in KERNEL_NAMES}
        super().__init__()

    def describe(self) -> str:
        return f"{self.name}: {self._device_name} (device {self._device})"

    def _zeros(self, shape: int | tuple[int, ...], dtype: Any) -> Any:
        return self._cp.zeros(shape, dtype)

    def _put(self, array: np.ndarray) -> Any:
        return self._cp.asarray(np.ascontiguousarray(array))

    def _get(self, array: Any) -> np.ndarray:
        return self._cp.asnumpy(array)

    def _launch(self, kernel: str, nthreads: int, *args: Any) -> None:
        if nthreads == 0:
            return
        # Every scalar parameter of the kernels is an unsigned long long
        args = tuple(np.uint64(a) if isinstance(a, (int, np.integer)) else a for a in args)
        self._kernels[kernel]((cdiv(nthreads, BLOCK),), (BLOCK,), (np.uint64(nthreads), *args))
