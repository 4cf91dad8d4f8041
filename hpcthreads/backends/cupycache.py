"""The cupy backend's module, compiled ahead into CuPy's kernel cache for given GPU architectures.

At its first launch on a device, CuPy looks the backend's RawModule up in its
disk cache (CUPY_CACHE_DIR, else ~/.cupy/kernel_cache) under a hash of the
source, the options, the architecture, NVRTC's version and CuPy's headers,
and runs NVRTC only on a miss. Here the module goes through the very call
RawModule makes (`compile_with_cache`, with RawModule's arguments), with
CuPy's two device queries answered as on a device of the target
architecture. That needs no GPU and no driver: the file written is the one
such a device looks up. Only loading the compiled module needs a driver; its
failure here is expected once the cache holds the file.

These two queries and the cache object are private to CuPy
(`cupy.cuda.compiler`); a CuPy without them is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from hpcthreads.backends.cupy_backend import MODULE_OPTIONS, kernel_source
from hpcthreads.errors import BackendError, ConfigError

ARCH_PATTERN = re.compile(r"sm_(\d{2,3})")
# What the ahead-of-time compile relies on in cupy.cuda.compiler
PRIVATE_NAMES = (
    "_get_arch",
    "_get_arch_for_options_for_nvrtc",
    "_get_max_compute_capability",
    "_get_nvrtc_version",
    "_kernel_cache_backend",
    "_tegra_archs",
    "_use_ptx",
    "CompileException",
)


class CachedModule(NamedTuple):
    """The backend's module for one architecture, as it lies in CuPy's cache."""

    arch: str
    path: Path
    compiled: bool
    seconds: float


def parse_arches(text: str) -> list[str]:
    """'sm_80,sm_90' -> ['sm_80', 'sm_90']; ConfigError on anything else."""
    arches = [item.strip() for item in text.split(",") if item.strip()]
    if not arches:
        raise ConfigError("--arch: give one or more architectures, such as sm_80,sm_90")
    for arch in arches:
        if not ARCH_PATTERN.fullmatch(arch):
            raise ConfigError(f"--arch: {arch!r} is not an architecture such as sm_80 or sm_90")
    return list(dict.fromkeys(arches))


def cupy_compiler() -> Any:
    """CuPy's compiler module; BackendError where CuPy is missing or keys its cache otherwise."""
    try:
        from cupy.cuda import compiler
    except ImportError as exc:
        raise BackendError(f"CuPy is not installed ({exc}); pip install 'hpcthreads[cupy]'") from exc
    missing = [name for name in PRIVATE_NAMES if not hasattr(compiler, name)]
    if missing:
        raise BackendError(f"this CuPy has no {', '.join(missing)}: its kernel cache cannot be filled ahead")
    return compiler


def device_arch(compiler: Any, capability: str) -> str:
    """What CuPy's `_get_arch` answers on a device of this compute capability ('90')."""
    if capability in compiler._tegra_archs:
        return capability
    return min(capability, compiler._get_max_compute_capability(), key=int)


def nvrtc_arch_option(compiler: Any, arch: str) -> tuple[str, str]:
    """What CuPy's `_get_arch_for_options_for_nvrtc` answers for `arch`: the option and the output."""
    if not compiler._use_ptx and int(arch) <= int(compiler._get_max_compute_capability()):
        return f"-arch=sm_{arch}", "cubin"
    return f"-arch=compute_{arch}", "ptx"


@contextlib.contextmanager
def answering_for(compiler: Any, capability: str) -> Iterator[None]:
    """CuPy's device queries answered as on a device of this compute capability, then restored."""
    saved = compiler._get_arch, compiler._get_arch_for_options_for_nvrtc
    compiler._get_arch = lambda: device_arch(compiler, capability)
    compiler._get_arch_for_options_for_nvrtc = lambda arch=None: nvrtc_arch_option(
        compiler, arch or device_arch(compiler, capability)
    )
    try:
        yield
    finally:
        compiler._get_arch, compiler._get_arch_for_options_for_nvrtc = saved


def cache_directory(compiler: Any) -> Path:
    """Where CuPy's disk cache is (read by CuPy from CUPY_CACHE_DIR when it was imported)."""
    found = getattr(compiler._kernel_cache_backend, "_cache_dir", None)
    return Path(found or os.environ.get("CUPY_CACHE_DIR") or Path.home() / ".cupy" / "kernel_cache")


class RecordingCache:
    """CuPy's cache object, recording the names it is asked for and given."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.hits, self.saved = inner, [], []

    def load(self, name: str) -> bytes | None:
        payload = self.inner.load(name)
        if payload is not None:
            self.hits.append(name)
        return payload

    def save(self, name: str, cubin: bytes, source: str) -> None:
        self.inner.save(name, cubin, source)
        self.saved.append(name)


def compile_module(compiler: Any, arch: str) -> CachedModule:
    """The backend's module for `arch` ('sm_90') into CuPy's cache, as RawModule compiles it on a device."""
    from cupy._core import core

    capability = ARCH_PATTERN.fullmatch(arch).group(1)
    if os.environ.get("CUPY_CACHE_IN_MEMORY", "0").lower() not in ("", "0", "false", "no"):
        raise BackendError("CUPY_CACHE_IN_MEMORY is set: CuPy keeps no disk cache to fill")
    recorder = RecordingCache(compiler._kernel_cache_backend)
    compiler._kernel_cache_backend = recorder
    t0 = time.perf_counter()
    try:
        with answering_for(compiler, capability):
            # The arguments RawModule(code=..., options=...) passes (cupy/_core/raw.pyx, _get_raw_module)
            core.compile_with_cache(
                kernel_source(), MODULE_OPTIONS, prepend_cupy_headers=False, backend="nvrtc",
                translate_cucomplex=False, enable_cooperative_groups=False, name_expressions=None,
                log_stream=None, jitify=False,
            )  # fmt: skip
    except compiler.CompileException as exc:
        raise BackendError(f"NVRTC rejected the cupy kernels for {arch}: {str(exc).strip()[-800:]}") from exc
    except Exception as exc:  # noqa: BLE001 - loading the module needs a driver; the cache is filled first
        if not (recorder.hits or recorder.saved):
            raise BackendError(f"compiling the cupy kernels for {arch} failed: {exc}") from exc
    finally:
        compiler._kernel_cache_backend = recorder.inner
    name = (recorder.hits or recorder.saved)[-1]
    seconds = time.perf_counter() - t0
    return CachedModule(arch, cache_directory(compiler) / name, bool(recorder.saved), seconds)


def checked_arches(text: str) -> list[str]:
    """The architectures of a list like 'sm_80,sm_90' that this CuPy and its NVRTC can compile for.

    ConfigError on a bad list or an architecture NVRTC does not know; BackendError without CuPy.
    """
    arches = parse_arches(text)
    compiler = cupy_compiler()
    try:
        from cupy_backends.cuda.libs import nvrtc

        known = {f"sm_{number}" for number in nvrtc.getSupportedArchs()}
    except Exception as exc:  # noqa: BLE001 - a missing or broken libnvrtc: no compiler to warm up with
        raise BackendError(f"NVRTC is not usable here ({type(exc).__name__}: {exc})") from exc
    unknown = [arch for arch in arches if arch not in known]
    if unknown:
        major, minor = compiler._get_nvrtc_version()
        listed = ", ".join(sorted(known, key=lambda a: int(a[3:])))
        raise ConfigError(f"--arch: NVRTC {major}.{minor} cannot compile for {', '.join(unknown)} ({listed})")
    return arches


def warm_up_arches(arches: list[str]) -> list[CachedModule]:
    """Compile the cupy backend's kernels for each architecture (checked_arches) into CuPy's disk cache."""
    compiler = cupy_compiler()
    return [compile_module(compiler, arch) for arch in arches]
