"""`hpcthreads info --arch`: the cupy kernels compiled ahead into CuPy's kernel cache, no GPU needed,
under the very names a device of each architecture looks up at run time.

Skips where CuPy or NVRTC is not installed; CI sets HPCTHREADS_REQUIRE_GPU_COMPILERS=1 so that there
it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import cli


def nvrtc_problem() -> str | None:
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - any failure means no compiler here
        return f"CuPy with NVRTC is not usable here ({type(exc).__name__}: {exc})"
    return None


PROBLEM = nvrtc_problem()
needs_nvrtc = pytest.mark.skipif(
    PROBLEM is not None and os.environ.get("HPCTHREADS_REQUIRE_GPU_COMPILERS") != "1", reason=str(PROBLEM)
)
WARMED = ("sm_80", "sm_90")

# At run time, on a device: CupyBackend builds cupy.RawModule(code=..., options=...), whose first
# get_function calls compile_with_cache as cupy/_core/raw.pyx's _get_raw_module does, after CuPy
# asked the device for its architecture. Here the arguments are taken from the backend's own
# constructor (on a stand-in for CuPy), the architecture queries answer for the target (as
# benchmarks/gpu_compile.py has them answer), and NVRTC's compile of the module refuses to run.
LOOKUP = textwrap.dedent(
    """
    import json, sys, types
    import numpy as np
    from hpcthreads.backends import cupy_backend

    module_args = {}
    class RawModule:
        def __init__(self, **kwargs):
            module_args.update(kwargs)
        def get_function(self, name):
            return None
    stand_in = types.ModuleType("cupy")
    stand_in.RawModule = RawModule
    stand_in.asarray = np.asarray
    stand_in.cuda = types.SimpleNamespace(
        Device=lambda d=0: types.SimpleNamespace(use=lambda: None),
        runtime=types.SimpleNamespace(getDeviceProperties=lambda d: {"name": b"stand-in"}),
    )
    sys.modules["cupy"] = stand_in
    cupy_backend.CupyBackend.table_bits = 4
    cupy_backend.CupyBackend(0)
    del sys.modules["cupy"]

    from cupy._core import core
    from cupy.cuda import compiler

    def refuse(*args, **kwargs):
        raise RuntimeError("NVRTC was asked to compile the module")

    compiler._compile_using_nvrtc_no_warning = refuse
    disk = compiler._kernel_cache_backend
    results = {}
    for arch in sys.argv[1:]:
        number = arch[3:]
        compiler._get_arch = lambda: number
        compiler._get_arch_for_options_for_nvrtc = lambda a=None: (f"-arch=sm_{a or number}", "cubin")
        hits = []
        def load(name):
            payload = disk.load(name)
            hits.append((name, payload is not None))
            return payload
        compiler._kernel_cache_backend = types.SimpleNamespace(load=load, save=disk.save)
        try:
            core.compile_with_cache(
                module_args["code"], module_args.get("options", ()), prepend_cupy_headers=False,
                backend=module_args.get("backend", "nvrtc"),
                translate_cucomplex=module_args.get("translate_cucomplex", False),
                enable_cooperative_groups=module_args.get("enable_cooperative_groups", False),
                name_expressions=module_args.get("name_expressions"), log_stream=None,
                jitify=module_args.get("jitify", False),
            )
            outcome = "loaded"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        results[arch] = {"hits": hits, "outcome": outcome}
    print(json.dumps({"module_args": sorted(module_args), "results": results}))
    """
)


def lookup(cache: Path, *arches: str) -> dict:
    env = {**os.environ, "CUPY_CACHE_DIR": str(cache), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", LOOKUP, *arches], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def cubin_arch(path: Path) -> set[int]:
    """The SM numbers an ELF cubin's flags may carry (in the low byte, and again in bits 16-23)."""
    data = path.read_bytes()[40:]  # past the SHA-1 hex digest CuPy stores first
    assert data[:4] == b"\x7fELF" and struct.unpack_from("<H", data, 18)[0] == 190  # EM_CUDA
    flags = struct.unpack_from("<I", data, 48)[0]
    return {flags & 0xFF, (flags >> 16) & 0xFF}


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cupy-cache")
    proc = cli(
        "info", "--warm-up", "--arch", ",".join(WARMED), env={"CUPY_CACHE_DIR": str(cache)}, timeout=600
    )
    return proc, cache


@needs_nvrtc
def test_warm_up_says_what_it_compiled_and_where_the_cache_is(warmed):
    proc, cache = warmed
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kernels compiled into" in proc.stdout  # the CPU warm-up ran too
    written = {}
    for arch in WARMED:
        match = re.search(
            rf"^cupy kernels for {arch}: compiled by NVRTC in [\d.]+ s: (\S+)$", proc.stdout, re.M
        )
        assert match, proc.stdout
        written[arch] = Path(match.group(1))
    assert {p.parent for p in written.values()} == {cache} and len(set(written.values())) == 2
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in written.values())
    for arch, path in written.items():
        assert int(arch[3:]) in cubin_arch(path)
    assert f"CuPy kernel cache: {cache} (CUPY_CACHE_DIR" in proc.stdout


@needs_nvrtc
def test_a_device_of_a_warmed_arch_finds_its_kernels_without_nvrtc(warmed):
    proc, cache = warmed
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = lookup(cache, *WARMED, "sm_86")
    assert {"code", "options"} <= set(found["module_args"])
    for arch in WARMED:
        result = found["results"][arch]
        (name, hit), *_ = result["hits"]
        assert hit and f"{cache / name}" in proc.stdout, result
        # Found: only loading the module remained, which needs a driver (or loads, on a GPU)
        assert "NVRTC was asked" not in result["outcome"], result
    # An arch not warmed misses the cache and NVRTC is called: the check above can fail
    missed = found["results"]["sm_86"]
    assert missed["hits"] and not missed["hits"][0][1]
    assert "NVRTC was asked to compile the module" in missed["outcome"]


@needs_nvrtc
def test_a_second_warm_up_compiles_nothing(warmed):
    _, cache = warmed
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    proc = cli("info", "--arch", ",".join(WARMED), env={"CUPY_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(": already cached: ") == 2 and "compiled by NVRTC" not in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before


def test_arch_without_cupy_is_one_clear_line(tmp_path):
    # CuPy hidden from the command: an import of it fails as where it is not installed
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['cupy'] = None\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = cli("info", "--arch", "sm_80,sm_90", env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("hpcthreads: error: CuPy is not installed") and "[cupy]" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "arches,message",
    [
        ("sm80", "--arch: 'sm80' is not an architecture such as sm_80 or sm_90"),
        ("sm_80,90", "--arch: '90' is not an architecture"),
        (" , ", "--arch: give one or more architectures"),
        pytest.param("sm_80,sm_10", "cannot compile for sm_10 (sm_", marks=needs_nvrtc),
    ],
)
def test_a_bad_arch_list_is_refused_before_anything_runs(arches, message, tmp_path):
    proc = cli("info", "--arch", arches, env={"CUPY_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
