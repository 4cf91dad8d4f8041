"""The cupy backend's CUDA C kernels, compiled for the CPU with gcc and checked without a GPU.

collatz_kernels.cu (with collatz.cuh) is the source CuPy hands to NVRTC; here
gcc builds it with its thread loops run in sequence, behind the same host
code as on a GPU. Only the CuPy launch itself needs a device.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import reference as ref
from gpucases import FIRST_OVER_64, FIRST_OVER_128, compare_backends
from gpuemu import CEmulatedBackend, build_library
from test_results import run_job

from hpcthreads.backends import make_backend
from hpcthreads.backends.cupy_backend import KERNEL_NAMES, kernel_source

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") or shutil.which("cc")), reason="no C compiler")


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    return CEmulatedBackend(build_library(tmp_path_factory.mktemp("kernels")))


@pytest.mark.parametrize(
    "start,count,threads",
    [
        (1, 30000, 1000),
        (1, 50, 7),
        (2**40, 3000, 64),
        (FIRST_OVER_64 - 500, 1000, 33),
        (2**64 - 300, 600, 5),
        (2**100, 100, 9),
        (FIRST_OVER_128 - 200, 400, 3),
    ],
)
def test_raw_results_equal_numba_cpu(gpu, cpu, start, count, threads):
    gpu.segment_threads = threads
    compare_backends(gpu, cpu, start, count, depth=300)


@pytest.mark.parametrize("start,count", [(1, 3000), (FIRST_OVER_64 - 20, 40), (FIRST_OVER_128 - 5, 10)])
def test_jobs_match_brute_force(gpu, start, count):
    gpu.segment_threads = 16
    want = ref.collatz_summary(start, count)
    got, _ = run_job(gpu, "collatz", 997, start=start, count=count)
    assert (got.sum_delay, got.histogram.tolist()) == (want["sum_delay"], want["histogram"])
    for kind in ("delay", "path", "glide"):
        assert getattr(got, f"{kind}_records") == want[f"{kind}_records"], kind
    got, _ = run_job(gpu, "verify", 997, start=start, count=count)
    assert got.glide_records == ref.range_records([(n, ref.glide(n)) for n in range(start, start + count)])


def test_fallbacks_give_the_same_results(gpu, cpu):
    """More overflows than the device lists hold, or delays past the device histogram."""
    gpu.segment_threads = 8
    gpu.hist_len, gpu.list_capacity = 16, 0
    try:
        compare_backends(gpu, cpu, 1, 500)
        compare_backends(gpu, cpu, FIRST_OVER_128 - 50, 100)
        raw = gpu.verify_range(20, 20, 20)
        assert raw.too_long.tolist() == [n - 20 for n in range(20, 40) if ref.glide(n) > 20]
    finally:
        gpu.hist_len, gpu.list_capacity = type(gpu).hist_len, type(gpu).list_capacity


def test_kernel_source_compiles_with_nvcc(tmp_path):
    """What NVRTC gets, checked by nvcc where a CUDA toolkit exists (no GPU needed)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc: the CUDA toolkit is not installed")
    source = tmp_path / "kernels.cu"
    source.write_text(kernel_source())
    proc = subprocess.run(
        [nvcc, "-ptx", "-arch=sm_80", str(source), "-o", str(tmp_path / "k.ptx")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    for name in KERNEL_NAMES:
        assert f".entry {name}(" in ptx


def _cupy_launch_reason() -> str | None:
    try:
        import cupy
    except ImportError:
        return "cupy is not installed (pip install 'hpcthreads[cupy]')"
    try:
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
    except Exception as exc:  # noqa: BLE001 - every failure means no device
        return f"no GPU for CuPy: {type(exc).__name__}: {exc}"
    return "no GPU for CuPy: zero devices"


def test_cupy_launch_equals_numba_cpu(cpu):
    reason = _cupy_launch_reason()
    if reason:
        pytest.skip(f"the CuPy launch needs a GPU ({reason}); its kernels are tested above on the CPU")
    gpu = make_backend("cupy", 0)
    for start in (1, 2**40, 2**64, FIRST_OVER_128 - 50):
        compare_backends(gpu, cpu, start, 4096)
