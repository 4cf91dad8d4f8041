"""What a rank's process uses: resident memory, and its GPU's memory and utilisation through NVML.

Each rank samples itself (at most once per `interval`) and sends the sample
up with its results; rank 0 writes the latest sample of every rank into the
metrics file. A figure that cannot be read is None, never 0: a rank without
a GPU has no GPU figures, and the metrics leave them out.

NVML and the CUDA driver are reached through ctypes, so no Python package is
needed: where `libnvidia-ml.so.1` or `libcuda.so.1` is missing (no driver,
the CUDA simulator) the GPU figures are simply absent.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from dataclasses import dataclass

log = logging.getLogger("hpcthreads")

# Seconds between two samples of one rank: results go up far more often than that
SAMPLE_SECONDS = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Usage:
    """One sample of one rank; None where a figure is not available."""

    rss_bytes: int | None = None
    gpu_memory_used_bytes: int | None = None
    gpu_utilization: float | None = None


def rss_bytes(statm: str = "/proc/self/statm") -> int | None:
    """This process's resident set size in bytes (Linux /proc), None where it cannot be read."""
    try:
        with open(statm, encoding="ascii") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class GPUProbe:
    """NVML's view of the device this process computes on (CUDA ordinal 0 once it is bound).

    The device is found by its PCI bus id as the CUDA driver gives it, because
    NVML numbers devices in its own order and ignores CUDA_VISIBLE_DEVICES.
    """

    def __init__(self, nvml: ctypes.CDLL, handle: ctypes.c_void_p) -> None:
        self.nvml = nvml
        self.handle = handle

    @classmethod
    def open(cls) -> GPUProbe | None:
        """The probe of this process's device; None without a driver, NVML or a CUDA device."""
        try:
            bus_id = _cuda_bus_id()
            nvml = ctypes.CDLL("libnvidia-ml.so.1")
        except OSError as exc:
            log.debug("no GPU figures: %s", exc)
            return None
        if bus_id is None or nvml.nvmlInit_v2() != 0:
            log.debug("no GPU figures: no CUDA device or NVML did not start")
            return None
        handle = ctypes.c_void_p()
        if nvml.nvmlDeviceGetHandleByPciBusId_v2(bus_id, ctypes.byref(handle)) != 0:
            log.debug("no GPU figures: NVML does not know the device at %s", bus_id.decode())
            return None
        return cls(nvml, handle)

    def sample(self) -> tuple[int | None, float | None]:
        """(memory used on the device in bytes, fraction of recent time a kernel ran); None if refused."""
        memory, utilization = _Memory(), _Utilization()
        has_memory = self.nvml.nvmlDeviceGetMemoryInfo(self.handle, ctypes.byref(memory)) == 0
        # Refused on MIG instances and some virtual GPUs: absent rather than a made-up 0
        has_rate = self.nvml.nvmlDeviceGetUtilizationRates(self.handle, ctypes.byref(utilization)) == 0
        return (memory.used if has_memory else None), (utilization.gpu / 100.0 if has_rate else None)


def _cuda_bus_id() -> bytes | None:
    """The PCI bus id of CUDA device 0 of this process, from the driver API (raises OSError without one)."""
    cuda = ctypes.CDLL("libcuda.so.1")
    device = ctypes.c_int()
    buffer = ctypes.create_string_buffer(64)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None
    if cuda.cuDeviceGetPCIBusId(buffer, len(buffer), device) != 0:
        return None
    return buffer.value


class UsageSampler:
    """Samples of one rank, at most one per `interval` seconds; GPU figures only with `gpu`."""

    def __init__(self, gpu: bool = False, interval: float = SAMPLE_SECONDS) -> None:
        self.gpu = gpu
        self.interval = interval
        self.next_sample = 0.0
        self.probe: GPUProbe | None = None

    def sample(self, now: float | None = None) -> Usage | None:
        """A fresh sample when one is due, else None (the previous one still stands)."""
        now = time.monotonic() if now is None else now
        if now < self.next_sample:
            return None
        self.next_sample = now + self.interval
        memory = utilization = None
        if self.gpu:
            if self.probe is None:
                # Opened on the first sample, after the backend has bound the device
                self.probe = GPUProbe.open()
                self.gpu = self.probe is not None
            if self.probe is not None:
                memory, utilization = self.probe.sample()
        return Usage(rss_bytes(), memory, utilization)
