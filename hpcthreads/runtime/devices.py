"""CUDA device detection and binding, decided before MPI and CUDA initialise.

The decision is pure: functions of an `environ` mapping and a device list,
unit-tested with fake environments. Probing (the driver's device list in
/proc or /dev, an MPI shared-memory split) is kept apart, and the CUDA
libraries are only imported later, by the backend a rank builds.

On a node, the workers take devices in local-rank order; the coordinator
(rank 0 of a multi-rank run) computes nothing and takes no device.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcthreads.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from hpcthreads.backends.base import BaseBackend

# Local rank as launchers set it: Slurm, Open MPI, MPICH (Hydra), MVAPICH; first found wins
LOCAL_RANK_VARIABLES = (
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "MV2_COMM_WORLD_LOCAL_RANK",
)
RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "MV2_COMM_WORLD_RANK")
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", "MV2_COMM_WORLD_SIZE")
# Set by Slurm for --gpus-per-task: each task then sees only its own device(s)
PER_TASK_VARIABLES = ("SLURM_GPUS_PER_TASK",)
POLICIES = ("local-rank", "round-robin")
# A CUDA_VISIBLE_DEVICES entry: an index, or a GPU/MIG UUID (CUDA accepts unique prefixes)
_ENTRY = re.compile(r"\d+|(GPU|MIG)-[0-9A-Za-z/.-]+")

Policy = str | int


@dataclass(frozen=True)
class DeviceChoice:
    """Where one rank computes: `device` is its CUDA_VISIBLE_DEVICES entry, None for the CPU."""

    device: str | None
    reason: str
    # True when a GPU was to be expected, so that falling back to the CPU deserves a warning
    expected: bool = False

    @property
    def is_gpu(self) -> bool:
        return self.device is not None


def parse_policy(text: str | int) -> Policy:
    """`local-rank`, `round-robin` or a device number N (an index into the visible devices)."""
    if isinstance(text, int) or str(text).isdigit():
        return int(text)
    if text in POLICIES:
        return str(text)
    raise ConfigError(f"--device: {text!r} is not one of local-rank, round-robin or a device number")


def _int_var(environ: Mapping[str, str], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def local_rank(environ: Mapping[str, str]) -> int | None:
    """This process's rank on its node as the launcher set it, or None (ask MPI later)."""
    return _int_var(environ, LOCAL_RANK_VARIABLES)


def world_rank_size(environ: Mapping[str, str]) -> tuple[int, int]:
    """(rank, size) as the launcher set them; (0, 1) without a launcher."""
    return _int_var(environ, RANK_VARIABLES) or 0, _int_var(environ, SIZE_VARIABLES) or 1


def visible_devices(environ: Mapping[str, str], physical: int) -> list[str]:
    """The devices this process may use, as CUDA_VISIBLE_DEVICES entries.

    Like CUDA, the list stops at the first entry that is not an index or a
    UUID (`-1` hides every device after it), and an empty value hides all.
    Unset, every device the driver reports is visible.
    """
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return [str(i) for i in range(physical)]
    entries = []
    for entry in (e.strip() for e in value.split(",")):
        if not _ENTRY.fullmatch(entry):
            break
        entries.append(entry)
    return entries


def worker_slot(local: int, rank: int, size: int) -> int | None:
    """This worker's position among the workers of its node; None for the coordinator.

    Local ranks follow global ranks on a node, so a rank whose global rank
    equals its local rank shares its node with rank 0, the coordinator,
    which holds local rank 0 and takes no device.
    """
    if size == 1:
        return 0
    if rank == 0:
        return None
    return local - 1 if rank == local else local


def choose(policy: Policy, slot: int | None, devices: list[str], environ: Mapping[str, str]) -> DeviceChoice:
    """The device of the worker in `slot` on its node under `policy`."""
    if slot is None:
        return DeviceChoice(None, "rank 0 coordinates and computes nothing")
    if not devices:
        if environ.get("CUDA_VISIBLE_DEVICES") is not None:
            return DeviceChoice(None, "CUDA_VISIBLE_DEVICES is empty: no GPU for this rank", expected=True)
        return DeviceChoice(None, "no NVIDIA GPU or driver found on this node")
    count = len(devices)
    if isinstance(policy, int):
        if policy < count:
            return DeviceChoice(devices[policy], f"--device {policy}", expected=True)
        return DeviceChoice(None, f"--device {policy}, but only {count} device(s) are visible", expected=True)
    if count == 1 and any(name in environ for name in PER_TASK_VARIABLES):
        return DeviceChoice(devices[0], "the launcher gave this task its own device", expected=True)
    if policy == "round-robin":
        return DeviceChoice(devices[slot % count], f"worker {slot} of this node, round-robin", expected=True)
    if slot < count:
        return DeviceChoice(devices[slot], f"worker {slot} of this node takes device {slot}", expected=True)
    return DeviceChoice(None, f"worker {slot} of this node, but only {count} device(s): a CPU worker")


def plan(policy: Policy, environ: Mapping[str, str], physical: int) -> DeviceChoice | None:
    """The choice from launcher variables alone; None when the local rank must come from MPI."""
    local = local_rank(environ)
    rank, size = world_rank_size(environ)
    if local is None and size > 1:
        return None
    slot = worker_slot(local or 0, rank, size)
    return choose(policy, slot, visible_devices(environ, physical), environ)


def count_physical(root: str = "/") -> int:
    """NVIDIA devices the driver exposes, read without initialising CUDA (0 without a driver)."""
    gpus = Path(root, "proc/driver/nvidia/gpus")
    if gpus.is_dir():
        return len(list(gpus.iterdir()))
    nodes = [p for p in Path(root, "dev").glob("nvidia*") if p.name[6:].isdigit()]
    return len(nodes)


def shared_memory_slot(comm: Any) -> tuple[int, int | None]:
    """(local rank, worker slot) from a shared-memory split: the fallback once MPI is up (collective)."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        ranks = node.allgather(comm.Get_rank())
    finally:
        node.Free()
    rank = comm.Get_rank()
    local = sorted(ranks).index(rank)
    if comm.Get_size() == 1:
        return local, 0
    return local, None if rank == 0 else sum(1 for r in ranks if 0 < r < rank)


def settle(
    choice: DeviceChoice | None, policy: Policy, comm: Any, environ: Mapping[str, str]
) -> DeviceChoice:
    """The final choice once MPI is up: a shared-memory split where some rank lacked a local rank.

    Collective whenever the run has several ranks: every rank calls it.
    """
    size = comm.Get_size() if comm is not None else 1
    if size > 1:
        from mpi4py import MPI

        if comm.allreduce(choice is None, op=MPI.LOR):
            _, slot = shared_memory_slot(comm)
            choice = choose(policy, slot, visible_devices(environ, count_physical()), environ)
    if choice is None:
        choice = choose(policy, 0, visible_devices(environ, count_physical()), environ)
    return choice


def visible_setting(environ: Mapping[str, str] | None = None) -> str:
    """CUDA_VISIBLE_DEVICES as this rank has it, for the record ("(unset)" when it is not set)."""
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    return "(unset)" if value is None else value


def bind(choice: DeviceChoice, environ: Any = None) -> None:
    """Narrow CUDA_VISIBLE_DEVICES to the chosen device (ordinal 0 from then on); before CUDA starts."""
    environ = os.environ if environ is None else environ
    if choice.device is not None:
        environ["CUDA_VISIBLE_DEVICES"] = choice.device


def for_slot(policy: Policy, slot: int | None, environ: Mapping[str, str], why_none: str) -> DeviceChoice:
    """The device of the worker in `slot` of its node (None: a rank that computes nothing)."""
    if slot is None:
        return DeviceChoice(None, why_none)
    return choose(policy, slot, visible_devices(environ, count_physical()), environ)


def rank_backend(
    name: str, choice: DeviceChoice, log: logging.Logger, simulation: dict[str, Any] | None = None
) -> BaseBackend:
    """The backend of one rank: on its device if it has one, else numba-cpu, saying why once.

    `simulation` holds the settings of the `simulated` backend (rate, slow, rank).
    """
    from hpcthreads.backends import SIMULATED, backend_class, make_backend

    if name == SIMULATED:
        return backend_class(name)(**(simulation or {}))  # type: ignore[call-arg]
    if name != "auto" and not backend_class(name).is_gpu:
        return make_backend(name)
    if choice.device is None:
        # A CPU-only node under `auto` is no surprise; anything else is worth a warning
        level = logging.WARNING if choice.expected or name != "auto" else logging.INFO
        log.log(level, "CPU worker: %s", choice.reason)
        return make_backend("numba-cpu")
    try:
        return make_backend(name, 0, choice.device)
    except BackendError as exc:
        log.warning("CPU worker: device %s is not usable (%s)", choice.device, exc)
        return make_backend("numba-cpu")
