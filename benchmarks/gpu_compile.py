"""Compile every GPU kernel with the real NVIDIA compilers, without a GPU, and check its resources.

    python benchmarks/gpu_compile.py --arch sm_80,sm_90 [--json FILE]

The kernels and their argument types come from the backends' own launch code:
a first process builds each GPU backend on a stand-in device (numba-cuda on
Numba's CUDA simulator, cupy on a NumPy stand-in that runs the CUDA C kernels
compiled for the CPU with gcc), runs its `warm_up()` and records every launch
(kernel, argument types, block size). Then one process per architecture
compiles what was launched: numba kernels to PTX with NVVM (and to LTO-IR
linked by nvJitLink, as numba-cuda does on a device), the cupy module with
NVRTC through CuPy's own compile path, and every PTX through `ptxas -v`.
It prints kernel x arch -> registers, spills, local memory and occupancy at
the launch's block size, and exits 1 on a compile error, a spill, local
memory, a kernel defined in the modules that no launch covered, or a cupy
launch whose arguments disagree with the kernel's C parameters; 2 where the
compilers are not installed. docs/gpu.md says what this proves and what only
a GPU can.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACKAGE = "hpcthreads.backends"

# Per-SM limits: registers, threads, blocks, warps, shared memory (bytes), shared memory reserved per block
ARCH_LIMITS = {
    "sm_80": dict(regs=65536, threads=2048, blocks=32, warps=64, smem=167936, smem_reserved=1024),
    "sm_86": dict(regs=65536, threads=1536, blocks=16, warps=48, smem=102400, smem_reserved=1024),
    "sm_89": dict(regs=65536, threads=1536, blocks=24, warps=48, smem=102400, smem_reserved=1024),
    "sm_90": dict(regs=65536, threads=2048, blocks=32, warps=64, smem=233472, smem_reserved=1024),
}
REG_UNIT = 256  # registers are allocated per warp in units of 256
WARP = 32


@dataclass
class Row:
    """One kernel (one signature) compiled for one architecture."""

    backend: str
    kernel: str
    arch: str
    block: int
    signature: str = ""
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    lmem: int = 0
    smem: int = 0
    blocks_per_sm: int = 0
    occupancy: float = 0.0
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    # numba-cuda links kernels from LTO-IR with nvJitLink on a device: the same figures after that link
    lto: dict = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = [f"compile error: {self.error}"] if self.error else []
        for where, r in (("", asdict(self)), ("after the LTO link: ", self.lto)):
            if r.get("spill_stores") or r.get("spill_loads"):
                found.append(f"{where}spills ({r['spill_stores']} bytes stored, {r['spill_loads']} loaded)")
            if r.get("stack") or r.get("lmem"):
                found.append(
                    f"{where}local memory ({r['stack']} bytes stack frame, {r.get('lmem', 0)} bytes lmem)"
                )
        return found


# Tools


def cuda_file(wheel: str, *patterns: str) -> str | None:
    """A file of the CUDA toolkit: from NVIDIA's wheel `wheel` (what the extras install), else CUDA_HOME."""
    spec = importlib.util.find_spec("nvidia")
    roots = [Path(base) / wheel for base in (spec.submodule_search_locations if spec else ())]
    roots += [
        Path(p) for p in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda") if p
    ]
    for root in roots:
        for pattern in patterns:
            found = sorted(root.glob(pattern))
            if found:
                return str(found[0])
    return None


def ptxas_path() -> str | None:
    return cuda_file("cuda_nvcc", "bin/ptxas") or shutil.which("ptxas")


def missing_tools() -> list[str]:
    """What of NVVM (numba-cuda), NVRTC (CuPy), nvJitLink, ptxas and gcc is not installed here."""
    missing = [f"{m} (Python package)" for m in ("numba_cuda", "cupy") if importlib.util.find_spec(m) is None]
    for what, wheel, pattern in (
        ("libnvvm", "cuda_nvcc", "nvvm/lib*/libnvvm.so*"),
        ("libnvrtc", "cuda_nvrtc", "lib*/libnvrtc.so*"),
        ("libnvJitLink", "nvjitlink", "lib*/libnvJitLink.so*"),
    ):
        if cuda_file(wheel, pattern) is None:
            missing.append(f"{what} (nvidia-{wheel.replace('_', '-')}-cu12)")
    if ptxas_path() is None:
        missing.append("ptxas (nvidia-cuda-nvcc-cu12)")
    if not (shutil.which("gcc") or shutil.which("cc")):
        missing.append("gcc (runs the cupy kernels on the CPU while launches are recorded)")
    return missing


def tool_versions() -> str:
    """The packages and the ptxas that did the work, for the record."""
    from importlib import metadata

    found = []
    for package in ("numba-cuda", "nvidia-cuda-nvcc-cu12", "cupy-cuda12x", "nvidia-cuda-nvrtc-cu12"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    proc = subprocess.run([ptxas_path() or "ptxas", "--version"], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    return ", ".join(found + [f"ptxas {ptxas_path()} ({lines[-1] if lines else 'no version'})"])


def assemble(ptx: str, arch: str, extra: tuple[str, ...] = ()) -> tuple[dict[str, dict], list[str]]:
    """`ptxas -v` on a PTX text: ({entry: resources}, warnings); raises RuntimeError on an error."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernels.ptx"
        source.write_text(ptx)
        command = [ptxas_path() or "ptxas", "-v", f"-arch={arch}", *extra, "-o", str(Path(tmp) / "k.cubin")]
        proc = subprocess.run([*command, str(source)], capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed: {log.strip()[-2000:]}")
    return parse_ptxas(log), [line.strip() for line in log.splitlines() if "warning" in line.lower()]


def parse_ptxas(log: str) -> dict[str, dict]:
    """Per entry function: registers, spill stores/loads, stack frame, lmem and smem bytes."""
    entries: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        match = re.search(r"(?:Compiling entry function|Function properties for) '?([\w$.]+)'?", line)
        if match:
            current = entries.setdefault(match.group(1), {})
            continue
        if current is None:
            continue
        for key, pattern in (
            ("stack", r"(\d+) bytes stack frame"),
            ("spill_stores", r"(\d+) bytes spill stores"),
            ("spill_loads", r"(\d+) bytes spill loads"),
            ("registers", r"Used (\d+) registers"),
            ("lmem", r"(\d+) bytes lmem"),
            ("smem", r"(\d+) bytes smem"),
        ):
            found = re.search(pattern, line)
            if found:
                current[key] = int(found.group(1))
    return entries


def occupancy(registers: int, smem: int, block: int, arch: str) -> tuple[int, float]:
    """(resident blocks per SM, fraction of the SM's warps) for this kernel at this block size."""
    lim = ARCH_LIMITS[arch]
    warps = math.ceil(block / WARP)
    regs_per_warp = math.ceil(max(registers, 1) * WARP / REG_UNIT) * REG_UNIT
    by_regs = (lim["regs"] // regs_per_warp) // warps
    by_threads = min(lim["threads"] // (warps * WARP), lim["warps"] // warps)
    by_smem = lim["smem"] // (smem + lim["smem_reserved"]) if smem else lim["blocks"]
    blocks = min(by_regs, by_threads, by_smem, lim["blocks"])
    return blocks, blocks * warps / lim["warps"]


def fill(row: Row, resources: dict) -> Row:
    for key in ("registers", "spill_stores", "spill_loads", "stack", "lmem", "smem"):
        setattr(row, key, resources.get(key, 0))
    if row.block:  # 0: a kernel no launch used, so no block size to judge it at
        registers = max(row.registers, row.lto.get("registers", 0))
        row.blocks_per_sm, row.occupancy = occupancy(registers, row.smem, row.block, row.arch)
    return row


# Capture: the backends' own launch code on stand-in devices


def describe_arg(value: object) -> dict:
    """A launch argument's type as JSON: dtype, and for arrays ndim and layout."""
    import numba
    import numpy as np

    # Numba's own typing of the argument: what a dispatcher on a device would compile for
    kind = numba.typeof(value)
    if getattr(value, "ndim", 0) > 0:
        return {"dtype": str(np.dtype(str(kind.dtype))), "ndim": kind.ndim, "layout": kind.layout}
    return {"dtype": str(kind)}


def capture_numba(backend_cls: type) -> tuple[object, list[dict]]:
    """A numba-cuda backend on the simulator that launches as on a device, and its launch log."""
    from numba import config
    from numba.cuda.simulator import kernel as simkernel

    launches: list[dict] = []
    original = simkernel.FakeCUDAKernel.__call__

    def recording_call(self, *args):
        if not self._device and getattr(simkernel, "_kernel_context", None) is None:
            block = int(math.prod(self.block_dim))
            fn = self.fn
            kernel = f"{fn.__module__}:{fn.__qualname__}"
            launches.append({"kernel": kernel, "block": block, "args": [describe_arg(a) for a in args]})
        return original(self, *args)

    simkernel.FakeCUDAKernel.__call__ = recording_call
    # Built as on a real device (its block size, device-side zero fills), then run on the simulator
    config.ENABLE_CUDASIM = 0
    try:
        backend = small(backend_cls)(0)
    finally:
        config.ENABLE_CUDASIM = 1
    return backend, launches


def small(backend_cls: type) -> type:
    """The backend with small tables and device lists: the same kernels and types, far fewer threads."""
    sizes = {"table_bits": 8, "hist_len": 64, "list_capacity": 64, "segment_threads": 8}
    present = {k: v for k, v in sizes.items() if hasattr(backend_cls, k)}
    return type(backend_cls.__name__, (backend_cls,), present)


class CKernels:
    """A CUDA C source built for the CPU by gcc: without __CUDACC__ each kernel loops over its threads."""

    def __init__(self, source: str, directory: Path) -> None:
        compiler = shutil.which("gcc") or shutil.which("cc") or "gcc"
        (directory / "kernels.c").write_text(source)
        library = directory / "libkernels.so"
        command = [compiler, "-x", "c", "-std=c99", "-O1", "-shared", "-fPIC"]
        subprocess.run([*command, str(directory / "kernels.c"), "-o", str(library)], check=True)
        import ctypes

        self.lib = ctypes.CDLL(str(library))

    def call(self, name: str, args: tuple) -> None:
        import ctypes

        import numpy as np

        def convert(a: object) -> object:
            if isinstance(a, np.ndarray):
                return ctypes.c_void_p(a.ctypes.data)
            return np.ctypeslib.as_ctypes(np.asarray(a))

        function = getattr(self.lib, name)
        function.restype = None
        function(*(convert(a) for a in args))


def fake_cupy(log: dict, directory: Path) -> object:
    """What the cupy backend uses of CuPy, on NumPy; RawModule records its source and launches."""
    import types

    import numpy as np

    class RawModule:
        def __init__(self, code: str, options: tuple = (), **kwargs: object) -> None:
            log.update(source=code, options=list(options), module_kwargs=sorted(kwargs))
            self._kernels = CKernels(code, directory)

        def get_function(self, name: str) -> object:
            def launch(grid: tuple, block: tuple, args: tuple) -> None:
                described = [describe_arg(a) for a in args]
                log["launches"].append({"kernel": name, "block": int(math.prod(block)), "args": described})
                self._kernels.call(name, args)

            return launch

    class Stand(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if hasattr(np, name):
                return getattr(np, name)
            raise AttributeError(f"the compile check's stand-in for cupy has no {name!r}")

    cupy = Stand("cupy")
    device = types.SimpleNamespace(use=lambda: None)
    runtime = types.SimpleNamespace(getDeviceProperties=lambda d: {"name": b"stand-in"})
    cupy.cuda = types.SimpleNamespace(Device=lambda d=0: device, runtime=runtime)
    cupy.RawModule = RawModule
    cupy.asarray = lambda a, dtype=None: np.array(a, dtype=dtype)
    cupy.asnumpy = lambda a: np.array(a)
    return cupy


def capture(out: Path) -> None:
    """Run every GPU backend's warm_up on a stand-in device and write the launches to `out`."""
    from hpcthreads.backends import BACKEND_NAMES, backend_class

    result: dict = {"backends": {}, "errors": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in BACKEND_NAMES:
            cls = backend_class(name)
            if not cls.is_gpu:
                continue
            try:
                if name == "numba-cuda":
                    backend, launches = capture_numba(cls)
                    entry = {"kind": "numba", "launches": launches}
                elif name == "cupy":
                    entry = {"kind": "cuda-c", "launches": []}
                    sys.modules["cupy"] = fake_cupy(entry, Path(tmp))
                    backend = small(cls)(0)
                else:
                    raise RuntimeError("no stand-in device for this backend in benchmarks/gpu_compile.py")
                backend.warm_up()
                result["backends"][name] = entry
            except Exception:  # noqa: BLE001 - reported as a failure of the check
                result["errors"].append(f"{name}: launch capture failed: {traceback.format_exc()[-2000:]}")
    out.write_text(json.dumps(result))


# Compile, one process per architecture


def numba_type(desc: dict) -> object:
    import numpy as np
    from numba import types
    from numba.np.numpy_support import from_dtype

    scalar = from_dtype(np.dtype(desc["dtype"]))
    return types.Array(scalar, desc["ndim"], desc["layout"]) if "ndim" in desc else scalar


def short_type(desc: dict) -> str:
    name = re.sub(r"^(u?)int", r"\1i", desc["dtype"]).replace("ui", "u")
    return f"{name}[{','.join(':' * desc['ndim'])}]" if "ndim" in desc else name


def numba_kernels_defined() -> dict[str, object]:
    """module:qualname -> every numba CUDA kernel (not device function) of the backends package."""
    from numba.cuda.dispatcher import CUDADispatcher

    package = importlib.import_module(PACKAGE)
    found = {}
    for path in sorted(Path(package.__path__[0]).glob("*.py")):
        if "cuda.jit" not in path.read_text():
            continue
        module = importlib.import_module(f"{PACKAGE}.{path.stem}")
        for value in vars(module).values():
            if isinstance(value, CUDADispatcher) and not value.targetoptions.get("device"):
                found[f"{value.py_func.__module__}:{value.py_func.__qualname__}"] = value
    return found


def resolve(kernel: str) -> object:
    """The dispatcher named module:qualname."""
    module, qualname = kernel.split(":")
    found = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def link_lto(pyfunc: object, argtypes: tuple, cc: tuple, options: dict, regcap: int | None) -> dict:
    """The kernel as numba-cuda builds it on a device: LTO-IR from NVVM, linked by nvJitLink (verbose)."""
    from numba import cuda

    try:
        from cuda.core import Linker, LinkerOptions, ObjectCode
    except ImportError:
        from cuda.core.experimental import Linker, LinkerOptions, ObjectCode

    ltoir, _ = cuda.compile(pyfunc, argtypes, device=False, abi="numba", output="ltoir", cc=cc, **options)
    arch = f"sm_{cc[0]}{cc[1]}"
    settings = LinkerOptions(arch=arch, link_time_optimization=True, verbose=True, max_register_count=regcap)
    linker = Linker(ObjectCode.from_ltoir(ltoir, name="kernel"), options=settings)
    linker.link("cubin")
    return next(iter(parse_ptxas(linker.get_info_log()).values()))


def compile_numba(name: str, launches: list[dict], arch: str) -> tuple[list[Row], list[str]]:
    """Each launched (kernel, argument types) through NVVM to PTX, then ptxas -v."""
    import inspect
    import types as pytypes

    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    cc = (int(arch[3:-1]), int(arch[-1]))
    # Device functions ask the current device for its compute capability: answer with the target
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=cc, name=arch)
    defined = numba_kernels_defined()
    accepted = set(inspect.signature(cuda.compile_ptx).parameters)
    rows, seen = [], set()
    for launch in launches:
        key = (launch["kernel"], json.dumps(launch["args"]), launch["block"])
        if key in seen:
            continue
        seen.add(key)
        signature = ", ".join(short_type(a) for a in launch["args"])
        row = Row(name, launch["kernel"].split(":")[-1], arch, launch["block"], signature)
        rows.append(row)
        try:
            kernel = resolve(launch["kernel"])
            options = {k: v for k, v in kernel.targetoptions.items() if k in accepted and k != "device"}
            argtypes = tuple(numba_type(a) for a in launch["args"])
            ptx, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=cc, **options)
            regcap = kernel.targetoptions.get("max_registers")
            entries, row.warnings = assemble(ptx, arch, (f"-maxrregcount={regcap}",) if regcap else ())
            if kernel.targetoptions.get("lto"):
                row.lto = link_lto(kernel.py_func, argtypes, cc, options, regcap)
            fill(row, next(iter(entries.values())))
        except Exception as exc:  # noqa: BLE001 - a compile error is a result of the check
            row.error = f"{type(exc).__name__}: {str(exc).strip()[-1500:]}"
    missing = sorted(set(defined) - {launch["kernel"] for launch in launches})
    return rows, [f"{name}: kernel {k} is defined but no launch of warm_up() used it" for k in missing]


def cupy_compilers(arch: str) -> tuple[object, object]:
    """(CuPy's module compile, its NVRTC call), both aimed at `arch` instead of a device's."""
    from cupy._core import core
    from cupy.cuda import compiler

    number = arch[3:]
    state = {"method": "cubin", "calls": []}
    compiler._get_arch = lambda: number
    compiler._get_arch_for_options_for_nvrtc = lambda a=None: (
        (f"-arch=sm_{number}", "cubin") if state["method"] == "cubin" else (f"-arch=compute_{number}", "ptx")
    )
    nvrtc = compiler._compile_using_nvrtc_no_warning

    def recording(source, options=(), arch=None, *args, **kwargs):
        state["calls"].append((source, tuple(options), arch, args, kwargs))
        return nvrtc(source, options, arch, *args, **kwargs)

    compiler._compile_using_nvrtc_no_warning = recording

    def module(source: str, options: tuple) -> bytes:
        # What cupy.RawModule(code=...).get_function does, less loading the cubin (that needs a driver)
        state["method"], state["calls"][:] = "cubin", []
        try:
            core.compile_with_cache(source, options, number, prepend_cupy_headers=False, backend="nvrtc")
        except compiler.CompileException:
            raise
        except Exception:  # noqa: BLE001 - loading the compiled module needs a driver; compiling did not
            if not state["calls"]:
                raise
        return state["calls"][-1]

    def ptx(call: tuple) -> str:
        state["method"] = "ptx"
        source, options, _, args, kwargs = call
        text = nvrtc(source, options, number, *args, **kwargs)[0]
        return text.decode() if isinstance(text, bytes) else text

    return module, ptx


C_TYPES = {
    "unsigned char": "uint8", "unsigned short": "uint16", "unsigned int": "uint32",
    "unsigned long long": "uint64", "unsigned long": "uint64", "char": "int8", "short": "int16",
    "int": "int32", "long long": "int64", "long": "int64", "float": "float32", "double": "float64",
    "uint8_t": "uint8", "uint16_t": "uint16", "uint32_t": "uint32", "uint64_t": "uint64",
    "int8_t": "int8", "int16_t": "int16", "int32_t": "int32", "int64_t": "int64", "bool": "bool",
}  # fmt: skip


def c_parameters(source: str, kernel: str) -> list[tuple[str, bool]] | None:
    """(NumPy dtype name or '', is a pointer) of each parameter of `kernel` in a CUDA C source."""
    names = dict(C_TYPES)
    for base, alias in re.findall(r"typedef\s+([\w ]+?)\s+(\w+)\s*;", source):
        names[alias] = names.get(base.strip(), "")
    match = re.search(rf"\b{re.escape(kernel)}\s*\(([^)]*)\)\s*\{{", source)
    if match is None:
        return None
    params = []
    for param in filter(None, (p.strip() for p in match.group(1).split(","))):
        pointer = "*" in param
        words = [
            w for w in re.sub(r"[*&]", " ", param).split() if w not in ("const", "volatile", "__restrict__")
        ]
        params.append((names.get(" ".join(words[:-1]), ""), pointer))
    return params


def launch_mismatches(source: str, launch: dict) -> list[str]:
    """Where the arguments of a launch disagree with the kernel's C parameters (a silent bug on a GPU)."""
    params = c_parameters(source, launch["kernel"])
    if params is None:
        return [f"no C definition of {launch['kernel']} found to check its arguments against"]
    if len(params) != len(launch["args"]):
        return [f"{launch['kernel']}: {len(launch['args'])} arguments for {len(params)} parameters"]
    found = []
    for i, ((dtype, pointer), arg) in enumerate(zip(params, launch["args"])):
        if pointer != ("ndim" in arg) or (dtype and dtype != arg["dtype"]):
            kind = "an array" if "ndim" in arg else "a scalar"
            want = f"{dtype or '?'}{' *' if pointer else ''}"
            found.append(
                f"{launch['kernel']}: argument {i} is {kind} of {arg['dtype']}, the kernel takes {want}"
            )
    return found


def compile_cuda_c(name: str, entry: dict, arch: str, compilers: tuple) -> tuple[list[Row], list[str]]:
    """The module the backend builds, through CuPy's NVRTC path, then its PTX through ptxas -v."""
    module, to_ptx = compilers
    source, options = entry["source"], tuple(entry["options"])
    blocks: dict[str, set[int]] = {}
    for launch in entry["launches"]:
        blocks.setdefault(launch["kernel"], set()).add(launch["block"])
    try:
        call = module(source, options)
        entries, warnings = assemble(to_ptx(call), arch)
    except Exception as exc:  # noqa: BLE001 - a compile error is a result of the check
        error = f"{type(exc).__name__}: {str(exc).strip()[-1500:]}"
        return [
            Row(name, k, arch, max(b), error=error)
            for k, b in sorted(blocks.items() or {"(module)": {0}}.items())
        ], []
    if "default_block" in entry:  # a --source file: every kernel counts as launched at that block size
        blocks = {k: {entry["default_block"]} for k in entries}
    rows = []
    for kernel in sorted(entries):
        for block in sorted(blocks.get(kernel, {0})):
            row = fill(Row(name, kernel, arch, block), entries[kernel])
            row.warnings = warnings
            rows.append(row)
    problems = [
        f"{name}: kernel {k} is defined but no launch of warm_up() used it"
        for k in entries
        if k not in blocks
    ]
    problems += [
        f"{name}: the launch code launches {k}, which the module does not define"
        for k in blocks
        if k not in entries
    ]
    for launch in entry["launches"]:
        problems += [f"{name}: {p}" for p in launch_mismatches(source, launch)]
    if entry.get("module_kwargs"):
        problems.append(
            f"{name}: RawModule arguments {entry['module_kwargs']} are not reproduced by this check"
        )
    return rows, sorted(set(problems))


def compile_arch(capture_file: Path, arch: str, out: Path) -> None:
    """Compile every captured kernel for one architecture; write rows and problems to `out`."""
    captured = json.loads(capture_file.read_text())
    rows, problems = [], []
    compilers = None
    for name, entry in captured["backends"].items():
        if entry["kind"] == "numba":
            found, issues = compile_numba(name, entry["launches"], arch)
        else:
            compilers = compilers or cupy_compilers(arch)
            found, issues = compile_cuda_c(name, entry, arch, compilers)
        rows += found
        problems += issues
    out.write_text(json.dumps({"rows": [asdict(r) for r in rows], "problems": problems}))


# The command


def run_step(args: list[str], env: dict | None = None) -> None:
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]), **(env or {})}
    proc = subprocess.run(command, capture_output=True, text=True, env=full_env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")


def source_entry(path: Path, block: int) -> dict:
    """A CUDA C file given with --source: compiled like the cupy module, every kernel at `block`."""
    return {"kind": "cuda-c", "source": path.read_text(), "options": ["--std=c++14"], "launches": [],
            "default_block": block}  # fmt: skip


def gather(arches: list[str], sources: list[Path], block: int, backends: bool) -> dict:
    """Capture the launches, compile them for each arch (one process each), check coverage."""
    with tempfile.TemporaryDirectory() as tmp:
        capture_file = Path(tmp) / "capture.json"
        if backends:
            run_step(["--capture", str(capture_file)], {"NUMBA_ENABLE_CUDASIM": "1"})
            captured = json.loads(capture_file.read_text())
        else:
            captured = {"backends": {}, "errors": []}
        for path in sources:
            captured["backends"][f"source:{path.name}"] = source_entry(path, block)
        capture_file.write_text(json.dumps(captured))
        rows, problems = [], list(captured["errors"])
        for arch in arches:
            out = Path(tmp) / f"{arch}.json"
            # The real CUDA target, and CuPy compiling every time instead of reading its disk cache
            env = {"NUMBA_ENABLE_CUDASIM": "0", "CUPY_CACHE_IN_MEMORY": "1"}
            run_step(["--compile", str(capture_file), arch, str(out)], env)
            result = json.loads(out.read_text())
            rows += result["rows"]
            problems += [p for p in result["problems"] if p not in problems]
    order = list(captured["backends"])
    rows.sort(key=lambda r: (order.index(r["backend"]), r["kernel"], r["signature"], arches.index(r["arch"])))
    kernels = {b: sorted({r["kernel"] for r in rows if r["backend"] == b}) for b in order}
    return {
        "arches": arches,
        "tools": tool_versions(),
        "kernels": kernels,
        "rows": rows,
        "problems": problems,
    }


def table(report: dict) -> str:
    lines = [f"{'backend':<14} {'kernel':<40} {'arch':<6} {'block':>5} {'regs':>4} {'lto':>4} "
             f"{'spill st/ld':>11} {'stack':>5} {'lmem':>4} {'smem':>5} "
             f"{'blocks/SM':>9} {'occupancy':>9}  verdict"]  # fmt: skip
    signatures: dict[tuple, set] = {}
    for r in report["rows"]:
        signatures.setdefault((r["backend"], r["kernel"]), set()).add(r["signature"])
    for r in report["rows"]:
        row = Row(**r)
        kernel = row.kernel
        if len(signatures[(row.backend, row.kernel)]) > 1:
            kernel += f"({row.signature})"
        verdict = "; ".join(row.problems()) or "ok"
        lines.append(
            f"{row.backend:<14} {kernel:<40} {row.arch:<6} {row.block:>5} {row.registers:>4} "
            f"{row.lto.get('registers', '-'):>4} "
            f"{f'{row.spill_stores}/{row.spill_loads}':>11} {row.stack:>5} {row.lmem:>4} {row.smem:>5} "
            f"{row.blocks_per_sm:>9} {row.occupancy:>9.1%}  {verdict[:300]}"
        )
        lines += [f"{'':<14} warning: {w}" for w in row.warnings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="sm_80,sm_90", help="comma-separated, of " + ", ".join(ARCH_LIMITS))
    parser.add_argument("--json", type=Path, help="write the table and the verdict as JSON here")
    parser.add_argument("--source", type=Path, action="append", default=[],
                        help="also check the kernels of this CUDA C file (tests, experiments)")  # fmt: skip
    parser.add_argument("--block", type=int, default=256, help="block size for the --source kernels")
    parser.add_argument("--no-backends", action="store_true", help="check only the --source files")
    parser.add_argument("--capture", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compile", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.capture:
        capture(args.capture)
        return 0
    if args.compile:
        compile_arch(Path(args.compile[0]), args.compile[1], Path(args.compile[2]))
        return 0
    arches = [a.strip() for a in args.arch.split(",") if a.strip()]
    unknown = [a for a in arches if a not in ARCH_LIMITS]
    if unknown or not arches:
        parser.error(f"unknown architecture {', '.join(unknown)}; known: {', '.join(ARCH_LIMITS)}")
    missing = missing_tools()
    if missing:
        print("gpu_compile: the NVIDIA compilers are not installed here (missing: " + "; ".join(missing)
              + "); pip install -e '.[cuda,cupy]'", file=sys.stderr)  # fmt: skip
        return 2
    try:
        report = gather(arches, args.source, args.block, not args.no_backends)
    except RuntimeError as exc:
        print(f"gpu_compile: FAILED: {exc}", file=sys.stderr)
        return 1
    problems = [
        f"{r['backend']} {r['kernel']} {r['arch']}: {p}" for r in report["rows"] for p in Row(**r).problems()
    ]
    report["problems"] += problems
    report["ok"] = not report["problems"]
    print(f"compilers: {report['tools']}")
    print(table(report))
    for problem in report["problems"]:
        print(f"FAIL {problem}")
    print("ok: every kernel compiles, no spill, no local memory" if report["ok"] else "gpu_compile: FAILED")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
