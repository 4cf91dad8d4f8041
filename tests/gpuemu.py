"""The cupy backend's CUDA C kernels built for the CPU with gcc, behind the GPU host code.

collatz_kernels.cu compiled without __CUDACC__ turns each kernel into a loop
over its threads (no kernel uses shared memory or barriers), so this backend
runs the very kernels that CuPy launches, and the same host code.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from hpcthreads.backends import gpubase

SOURCE_DIR = Path(gpubase.__file__).parent


def build_library(directory: Path) -> Path:
    """Compile collatz_kernels.cu (with collatz.cuh) into a shared library with gcc."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise FileNotFoundError("no C compiler (gcc or cc) on PATH")
    library = directory / "libcollatz_kernels.so"
    command = [compiler, "-x", "c", "-std=c99", "-O2", "-Wall", "-Werror", "-shared", "-fPIC"]
    command += ["-I", str(SOURCE_DIR), str(SOURCE_DIR / "collatz_kernels.cu"), "-o", str(library)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return library


class CEmulatedBackend(gpubase.BaseGPUBackend):
    """The GPU host code driving the CUDA C kernels compiled for the CPU."""

    name = "cupy-kernels-on-cpu"

    def __init__(self, library: Path) -> None:
        self._lib = ctypes.CDLL(str(library))
        super().__init__()

    def _zeros(self, shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.zeros(shape, dtype)

    def _put(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array).copy()

    def _get(self, array: np.ndarray) -> np.ndarray:
        return array.copy()

    def _launch(self, kernel: str, nthreads: int, *args: Any) -> None:
        def convert(a: Any) -> Any:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous
                return ctypes.c_void_p(a.ctypes.data)
            return ctypes.c_uint64(int(a))

        function = getattr(self._lib, kernel)
        function.restype = None
        function(ctypes.c_uint64(nthreads), *(convert(a) for a in args))
