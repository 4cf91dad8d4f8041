"""The numba-cuda kernels, run where no GPU exists: Numba's CUDA simulator, and a typing check.

The simulator must be switched on before Numba is imported, which this
pytest process has already done, so the simulated tests run in a pytest
subprocess of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _numba_cuda_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("numba_cuda") is not None


# CI sets HPCTHREADS_REQUIRE_CUDASIM=1: there a missing numba-cuda fails instead of skipping
needs_numba_cuda = pytest.mark.skipif(
    not _numba_cuda_installed() and os.environ.get("HPCTHREADS_REQUIRE_CUDASIM") != "1",
    reason="numba-cuda is not installed",
)


@needs_numba_cuda
def test_numba_cuda_kernels_under_the_simulator():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(HERE / "gpu/sim_numba_cuda.py"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


TYPING_CHECK = textwrap.dedent(
    """
    import types
    import numba.cuda.dispatcher as dispatcher
    from numba import types as T
    from numba.cuda.compiler import compile_cuda
    from hpcthreads.backends import cudakernels as k

    # Device functions ask the current device for its compute capability; there is none here
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    u, a = T.uint64, lambda dt, nd=1: T.Array(dt, nd, "C")
    tables = (a(T.uint16), a(T.uint64), a(T.uint16), u)
    seg = (a(T.uint32), a(T.uint32), a(u), a(u))
    sigs = {
        "collatz_segments": (u, u, u, u, u, *tables, a(u), u, a(u), *seg, a(u), u),
        "collatz_numbers": (u, u, u, u, a(u), u, *tables, a(T.uint32), a(T.uint32), a(u), a(u), a(T.uint8)),
        "verify_segments": (u, u, u, u, u, u, a(u), a(T.uint32), a(u), a(u), u),
        "verify_numbers": (u, u, u, u, a(u), u, u, a(T.uint32), a(T.uint8)),
        "verify_sieve_segments": (
            *(u,) * 9, a(u), a(u), a(u), a(T.uint8), *(u,) * 5, a(u), a(T.uint32), a(u), a(u), u,
        ),
        "verify_sieve_numbers": (
            *(u,) * 7, a(u), u, u, a(u), a(u), a(u), a(T.uint8), *(u,) * 5, a(T.uint32), a(T.uint8),
        ),
        "thread_paths": (u, u, u, u, a(u, 2), a(u, 2), a(T.uint32), a(u), a(u), a(T.uint8)),
        "slice_build": (*(u,) * 9, a(u), a(u), a(T.uint8), a(u), a(u), a(T.uint8), *(a(u),) * 5),
        "slice_walk": (
            *(u,) * 14, a(u), u, u, a(u), u, a(T.uint8), u, a(u), a(u), *(u,) * 6, a(u), a(u), u,
        ),
    }
    for name, kernel in k.KERNELS.items():
        ir = compile_cuda(kernel.py_func, T.void, sigs[name], cc=(9, 0)).library.get_llvm_str()
        assert "double" not in ir, f"{name}: a word was promoted to float64"
    print("typed")
    """
)


@needs_numba_cuda
def test_numba_cuda_kernels_type_for_a_real_gpu_without_floats():
    """The simulator runs Python; this compiles the kernels to LLVM IR for sm_90, as on a GPU."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run(
        [sys.executable, "-c", TYPING_CHECK], capture_output=True, text=True, timeout=300, env=env
    )
    if proc.returncode != 0 and ("ImportError" in proc.stderr or "AttributeError" in proc.stderr):
        pytest.skip(f"numba-cuda's compiler internals differ here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0 and "typed" in proc.stdout, proc.stderr[-3000:]


def test_gpu_check_exits_cleanly_without_a_gpu():
    script = HERE.parent / "benchmarks/gpu_check.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "no GPU backend can start" not in proc.stdout:
        # A machine with a GPU ran the full check; it passed
        assert "correct at 2^64" in proc.stdout
