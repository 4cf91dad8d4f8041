"""Every GPU kernel built by the real NVIDIA compilers (NVVM, NVRTC, ptxas), no GPU needed.

Runs benchmarks/gpu_compile.py, which takes the kernels and their argument
types from the backends' own launch code. Skips where the compilers are not
installed; CI sets HPCTHREADS_REQUIRE_GPU_COMPILERS=1 so that there it fails
instead (install with the `cuda` and `cupy` extras).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_compile.py"
BACKENDS = ROOT / "hpcthreads" / "backends"
ARCHES = ("sm_80", "sm_90")


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_compile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_compile"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_compile = load_script()
MISSING = gpu_compile.missing_tools()
needs_compilers = pytest.mark.skipif(
    bool(MISSING) and os.environ.get("HPCTHREADS_REQUIRE_GPU_COMPILERS") != "1",
    reason=f"the NVIDIA compilers are not installed ({'; '.join(MISSING)}): pip install -e '.[cuda,cupy]'",
)


def run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--json", str(out), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    report = json.loads(out.read_text()) if out.exists() else {}
    return proc, report


def numba_kernels_in_source() -> set[str]:
    """Functions under a bare @cuda.jit (kernels; device functions say device=True), read as text."""
    names = set()
    for path in BACKENDS.glob("*.py"):
        names |= set(re.findall(r"^@cuda\.jit(?:\(\s*\))?\s*\ndef (\w+)", path.read_text(), re.MULTILINE))
    return names


def cuda_c_kernels_in_source() -> set[str]:
    """Kernels of the cupy module's source: KERNEL name( in collatz_kernels.cu."""
    return set(re.findall(r"^KERNEL\s+(\w+)\s*\(", (BACKENDS / "collatz_kernels.cu").read_text(), re.M))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    proc, found = run(tmp_path_factory.mktemp("gpu_compile"), "--arch", ",".join(ARCHES))
    return proc, found


@needs_compilers
def test_every_kernel_of_both_backends_compiles_for_sm80_and_sm90(report):
    proc, found = report
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert found["ok"] and found["problems"] == [] and found["arches"] == list(ARCHES)
    expected = {"numba-cuda": numba_kernels_in_source(), "cupy": cuda_c_kernels_in_source()}
    # The launch code uses (at least) these; a kernel the source defines but nothing launches fails
    from hpcthreads.backends import cupy_backend

    assert set(getattr(cupy_backend, "KERNEL_NAMES", ())) <= expected["cupy"]
    for backend, kernels in expected.items():
        assert len(kernels) >= 5, (backend, kernels)
        for arch in ARCHES:
            compiled = {r["kernel"] for r in found["rows"] if r["backend"] == backend and r["arch"] == arch}
            assert compiled == kernels, (backend, arch, compiled ^ kernels)


@needs_compilers
def test_no_kernel_spills_or_uses_local_memory_and_every_one_fits_a_sm(report):
    _, found = report
    assert len(found["rows"]) >= 2 * 10
    for row in found["rows"]:
        assert row["error"] == "", row
        assert (row["spill_stores"], row["spill_loads"], row["stack"], row["lmem"]) == (0, 0, 0, 0), row
        assert 0 < row["registers"] <= 255 and row["block"] > 0 and row["block"] % 32 == 0, row
        assert row["blocks_per_sm"] >= 1 and 0 < row["occupancy"] <= 1, row
        # numba-cuda kernels are also linked from LTO-IR by nvJitLink, as numba-cuda does on a device
        if row["lto"]:
            assert row["lto"]["registers"] > 0 and not row["lto"]["spill_stores"] and not row["lto"]["stack"]


@needs_compilers
def test_the_table_lists_kernel_by_arch_with_registers_and_occupancy(report):
    proc, found = report
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("compilers: numba-cuda ") and "ptxas" in lines[0]
    assert lines[1].split()[:5] == ["backend", "kernel", "arch", "block", "regs"]
    row = next(r for r in found["rows"] if r["backend"] == "cupy" and r["kernel"] == "collatz_segments")
    line = next(
        ln for ln in lines if ln.startswith("cupy") and " collatz_segments " in ln and row["arch"] in ln
    )
    assert f" {row['registers']} " in line and f"{row['occupancy']:.1%}" in line
    assert lines[-1].startswith("ok:")


BAD_KERNELS = textwrap.dedent(
    """
    typedef unsigned long long u64;

    /* 48 values live at once under a 32-register cap: ptxas must spill */
    extern "C" __global__ void __launch_bounds__(1024, 2) spills(u64 *out, u64 n) {
        u64 v[48];
    #pragma unroll
        for (int i = 0; i < 48; ++i) v[i] = out[i * n + threadIdx.x];
        for (u64 k = 0; k < n; ++k) {
    #pragma unroll
            for (int i = 0; i < 48; ++i) v[i] = v[i] * v[(i + 7) % 48] + k;
        }
    #pragma unroll
        for (int i = 0; i < 48; ++i) out[i * n + threadIdx.x] = v[i];
    }

    /* An array indexed at run time lives in local memory */
    extern "C" __global__ void local_array(u64 *out, u64 n) {
        u64 table[64];
        for (int i = 0; i < 64; ++i) table[i] = out[i] * n;
        out[threadIdx.x] = table[(threadIdx.x * n) % 64];
    }

    extern "C" __global__ void clean(u64 *out, u64 n) { out[threadIdx.x] += n; }
    """
)


@needs_compilers
def test_a_spill_or_local_memory_fails_the_check(tmp_path):
    source = tmp_path / "bad.cu"
    source.write_text(BAD_KERNELS)
    proc, found = run(tmp_path, "--no-backends", "--source", str(source), "--arch", "sm_80")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {r["kernel"]: r for r in found["rows"]}
    assert set(rows) == {"spills", "local_array", "clean"}
    assert rows["spills"]["spill_stores"] > 0 and rows["spills"]["spill_loads"] > 0
    assert rows["local_array"]["stack"] > 0 and rows["local_array"]["spill_stores"] == 0
    assert rows["clean"]["registers"] > 0 and not gpu_compile.Row(**rows["clean"]).problems()
    assert "FAIL bad.cu" not in proc.stdout and "FAIL source:bad.cu spills sm_80: spills" in proc.stdout
    assert "FAIL source:bad.cu local_array sm_80: local memory" in proc.stdout
    assert " clean " not in "".join(ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL"))


@needs_compilers
def test_a_compile_error_fails_the_check(tmp_path):
    source = tmp_path / "broken.cu"
    source.write_text('extern "C" __global__ void broken(unsigned long long *out) { out[0] = nowhere; }\n')
    proc, found = run(tmp_path, "--no-backends", "--source", str(source), "--arch", "sm_90")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert not found["ok"] and "nowhere" in found["rows"][0]["error"]
    assert "compile error" in proc.stdout and proc.stdout.rstrip().endswith("FAILED")


@needs_compilers
def test_kernels_no_launch_covers_and_launches_of_missing_kernels_fail(tmp_path):
    array = {"dtype": "uint64", "ndim": 1, "layout": "C"}
    fill_zero = {"kernel": "hpcthreads.backends.cudakernels:fill_zero", "block": 256}
    capture = {
        "backends": {
            "numba-cuda": {"kind": "numba", "launches": [{**fill_zero, "args": [array, {"dtype": "int64"}]}]},
            "cupy": {
                "kind": "cuda-c",
                "source": BAD_KERNELS,
                "options": ["--std=c++14"],
                "launches": [
                    {"kernel": "clean", "block": 128, "args": [array, {"dtype": "uint32"}]},
                    {"kernel": "gone", "block": 128, "args": []},
                ],
            },
        },
        "errors": [],
    }
    (tmp_path / "capture.json").write_text(json.dumps(capture))
    command = [sys.executable, str(SCRIPT), "--compile", str(tmp_path / "capture.json"), "sm_80"]
    env = {**os.environ, "CUPY_CACHE_IN_MEMORY": "1", "NUMBA_ENABLE_CUDASIM": "0"}
    proc = subprocess.run([*command, str(tmp_path / "out.json")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads((tmp_path / "out.json").read_text())
    problems = "\n".join(found["problems"])
    for kernel in numba_kernels_in_source() - {"fill_zero"}:
        assert f":{kernel} is defined but no launch" in problems  # cudakernels, cudaslice
    assert "kernel spills is defined but no launch" in problems
    assert "launches gone, which the module does not define" in problems
    assert "clean: argument 1 is a scalar of uint32, the kernel takes uint64" in problems
    rows = {(r["backend"], r["kernel"]): r for r in found["rows"]}
    assert rows["numba-cuda", "fill_zero"]["registers"] > 0 and rows["cupy", "clean"]["block"] == 128


def test_launch_arguments_are_checked_against_the_c_parameters():
    source = "typedef unsigned int u32;\nKERNEL k(u64 n, const u32 *a, u64 *b) {\n}\n"
    source = "typedef unsigned long long u64;\n" + source
    array = {"ndim": 1, "layout": "C"}
    good = {
        "kernel": "k",
        "args": [{"dtype": "uint64"}, {"dtype": "uint32", **array}, {"dtype": "uint64", **array}],
    }
    assert gpu_compile.launch_mismatches(source, good) == []
    wrong_dtype = {**good, "args": [good["args"][0], {"dtype": "uint64", **array}, good["args"][2]]}
    assert gpu_compile.launch_mismatches(source, wrong_dtype) == [
        "k: argument 1 is an array of uint64, the kernel takes uint32 *"
    ]
    scalar_for_array = {**good, "args": [good["args"][0], good["args"][1], {"dtype": "uint64"}]}
    assert "argument 2 is a scalar" in gpu_compile.launch_mismatches(source, scalar_for_array)[0]
    assert "2 arguments for 3" in gpu_compile.launch_mismatches(source, {**good, "args": good["args"][:2]})[0]


def test_spills_after_the_lto_link_are_problems_too():
    row = gpu_compile.Row("numba-cuda", "k", "sm_90", 256, registers=40)
    assert row.problems() == []
    row.lto = dict(registers=32, spill_stores=8, spill_loads=8, stack=16)
    assert row.problems() == [
        "after the LTO link: spills (8 bytes stored, 8 loaded)",
        "after the LTO link: local memory (16 bytes stack frame, 0 bytes lmem)",
    ]


def test_ptxas_output_is_read_per_entry():
    log = textwrap.dedent(
        """
        ptxas info    : Compiling entry function 'a' for 'sm_80'
        ptxas info    : Function properties for a
            16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
        ptxas info    : Used 40 registers, used 0 barriers, 4 bytes lmem, 1024 bytes smem, 368 bytes cmem[0]
        ptxas info    : Compiling entry function 'b' for 'sm_80'
        ptxas info    : Function properties for b
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 12 registers, used 0 barriers, 360 bytes cmem[0]
        """
    )
    found = gpu_compile.parse_ptxas(log)
    assert found["a"] == dict(stack=16, spill_stores=8, spill_loads=12, registers=40, lmem=4, smem=1024)
    assert found["b"] == dict(stack=0, spill_stores=0, spill_loads=0, registers=12)


@pytest.mark.parametrize(
    "registers,smem,block,arch,blocks,fraction",
    [
        (45, 0, 256, "sm_80", 5, 0.625),  # 45*32 -> 1536 per warp: 42 warps, 5 blocks of 8
        (37, 0, 256, "sm_90", 6, 0.75),
        (32, 0, 256, "sm_80", 8, 1.0),  # the thread limit, 2048
        (255, 0, 256, "sm_90", 1, 0.125),
        (64, 0, 1024, "sm_80", 1, 0.5),
        (16, 0, 32, "sm_80", 32, 0.5),  # the block limit, 32
        (16, 48 * 1024, 128, "sm_80", 3, 0.1875),  # 164 KiB of shared memory, 1 KiB reserved per block
        (32, 0, 256, "sm_86", 6, 1.0),  # 1536 threads
    ],
)
def test_occupancy_follows_the_register_thread_block_and_shared_memory_limits(
    registers, smem, block, arch, blocks, fraction
):
    assert gpu_compile.occupancy(registers, smem, block, arch) == (blocks, fraction)


def test_missing_compilers_are_reported_and_exit_2(tmp_path):
    # Hide numba_cuda and cupy from the script: a sitecustomize that blocks their import spec
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util as u\n_find = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n in ('numba_cuda', 'cupy') else _find(n, *a)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 2
    assert "not installed" in proc.stderr and "numba_cuda" in proc.stderr and "[cuda,cupy]" in proc.stderr
