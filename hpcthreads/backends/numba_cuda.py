"""The numba-cuda backend: the kernels of cudakernels.py on one CUDA device."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from hpcthreads.backends.gpubase import BaseGPUBackend, cdiv
from hpcthreads.errors import BackendError


class NumbaCUDABackend(BaseGPUBackend):
    name = "numba-cuda"

    def __init__(self, device: int = 0, label: str | None = None) -> None:
        try:
            from numba import config, cuda
        except ImportError as exc:
            raise BackendError(
                f"numba-cuda is not installed ({exc}); pip install 'hpcthreads[cuda]'"
            ) from exc
        if not cuda.is_available():
            raise BackendError("no usable CUDA device or driver for numba-cuda")
        from hpcthreads.backends import cudakernels

        self._cuda = cuda
        self._kernels = cudakernels.KERNELS
        self._device = device if label is None else label
        try:
            cuda.select_device(device)
            self._device_name = _device_name(cuda.get_current_device())
        except Exception as exc:  # noqa: BLE001 - a driver or device failure means unusable
            raise BackendError(f"CUDA device {device} is not usable ({type(exc).__name__}: {exc})") from exc
        # The simulator runs each thread of a block as a Python thread: keep blocks small there
        self._simulated = bool(config.ENABLE_CUDASIM)
        self._block = 32 if self._simulated else 256
        self._fill_zero = cudakernels.fill_zero
        super().__init__()

    def describe(self) -> str:
        return f"{self.name}: {self._device_name} (device {self._device})"

    def _zeros(self, shape: int | tuple[int, ...], dtype: Any) -> Any:
        if self._simulated:
            return self._cuda.to_device(np.zeros(shape, dtype))
        array = self._cuda.device_array(shape, dtype)
        if array.size:
            self._fill_zero[cdiv(array.size, self._block), self._block](array.reshape(array.size), array.size)
        return array

    def _put(self, array: np.ndarray) -> Any:
        return self._cuda.to_device(np.ascontiguousarray(array))

    def _get(self, array: Any) -> np.ndarray:
        return array.copy_to_host()

    def _launch(self, kernel: str, nthreads: int, *args: Any) -> None:
        if nthreads == 0:
            return
        args = tuple(np.uint64(a) if isinstance(a, (int, np.integer)) else a for a in args)
        # Words wrap around on purpose; the simulator computes them with NumPy scalars, which warn
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
            self._kernels[kernel][cdiv(nthreads, self._block), self._block](np.uint64(nthreads), *args)


def _device_name(device: Any) -> str:
    name = getattr(device, "name", b"CUDA simulator")
    return name.decode() if isinstance(name, bytes) else str(name)
