"""Device binding decided from fake environments: launchers, CUDA_VISIBLE_DEVICES, no GPU."""

from __future__ import annotations

import logging

import pytest

from hpcthreads.backends.base import BaseBackend
from hpcthreads.errors import ConfigError
from hpcthreads.runtime import devices
from hpcthreads.runtime.placement import placement_report

UUIDS = "GPU-1a2b3c4d-0000-1111-2222-333344445555,GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff"


@pytest.mark.parametrize(
    "environ,local",
    [
        ({"SLURM_LOCALID": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, 3),
        ({"OMPI_COMM_WORLD_LOCAL_RANK": "2"}, 2),
        ({"MPI_LOCALRANKID": "1"}, 1),
        ({"MV2_COMM_WORLD_LOCAL_RANK": "5"}, 5),
        ({"SLURM_LOCALID": "", "MPI_LOCALRANKID": "4"}, 4),
        ({}, None),
    ],
)
def test_local_rank_from_each_launcher_in_order(environ, local):
    assert devices.local_rank(environ) == local


@pytest.mark.parametrize(
    "value,physical,want",
    [
        (None, 4, ["0", "1", "2", "3"]),
        (None, 0, []),
        ("", 8, []),
        ("2,3", 8, ["2", "3"]),
        (" 1 , 0 ", 2, ["1", "0"]),
        ("0,-1,2", 4, ["0"]),
        (UUIDS, 0, UUIDS.split(",")),
        ("MIG-4b2a9c1e-1111-2222-3333-444455556666", 1, ["MIG-4b2a9c1e-1111-2222-3333-444455556666"]),
    ],
)
def test_visible_devices_like_cuda(value, physical, want):
    environ = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert devices.visible_devices(environ, physical) == want


def test_policy_parsing():
    assert devices.parse_policy("local-rank") == "local-rank"
    assert devices.parse_policy("round-robin") == "round-robin"
    assert devices.parse_policy("3") == 3
    with pytest.raises(ConfigError, match="--device: 'gpu' is not one of"):
        devices.parse_policy("gpu")


def test_worker_slots_skip_the_coordinator():
    # One node, block placement: rank == local rank, rank 0 coordinates
    assert [devices.worker_slot(r, r, 5) for r in range(5)] == [None, 0, 1, 2, 3]
    # A second node: its ranks 5..8 have local ranks 0..3 and all four are workers
    assert [devices.worker_slot(r - 5, r, 9) for r in range(5, 9)] == [0, 1, 2, 3]
    assert devices.worker_slot(0, 0, 1) == 0  # one rank computes itself


def _plan(policy, **environ):
    return devices.plan(devices.parse_policy(policy), environ, physical=4)


def test_local_rank_policy_under_slurm_open_mpi_mpich_mvapich():
    for local_var, rank_var, size_var in [
        ("SLURM_LOCALID", "SLURM_PROCID", "SLURM_NTASKS"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("MPI_LOCALRANKID", "PMI_RANK", "PMI_SIZE"),
        ("MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),
    ]:
        choices = [
            _plan("local-rank", **{local_var: str(r), rank_var: str(r), size_var: "6"}) for r in range(6)
        ]
        assert [c.device for c in choices] == [None, "0", "1", "2", "3", None], local_var
        assert "coordinates" in choices[0].reason and "CPU worker" in choices[5].reason


def test_round_robin_and_a_fixed_device():
    env = {"SLURM_LOCALID": "6", "SLURM_PROCID": "6", "SLURM_NTASKS": "8"}
    assert _plan("round-robin", **env).device == "1"  # worker 5 of the node, 4 devices
    assert _plan("2", **env).device == "2"
    fixed = _plan("7", **env)
    assert fixed.device is None and fixed.expected and "only 4 device(s)" in fixed.reason


def test_uuids_are_bound_as_given():
    env = {"OMPI_COMM_WORLD_LOCAL_RANK": "2", "OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "3"}
    choice = _plan("local-rank", CUDA_VISIBLE_DEVICES=UUIDS, **env)
    assert choice.device == UUIDS.split(",")[1]
    bound = {"CUDA_VISIBLE_DEVICES": UUIDS}
    devices.bind(choice, bound)
    assert bound["CUDA_VISIBLE_DEVICES"] == choice.device


def test_slurm_task_that_sees_only_its_own_device_zero():
    env = {"SLURM_LOCALID": "3", "SLURM_PROCID": "3", "SLURM_NTASKS": "4", "CUDA_VISIBLE_DEVICES": "0"}
    assert _plan("local-rank", SLURM_GPUS_PER_TASK="1", **env).device == "0"
    # Without per-task binding, one shared device goes to the first worker only
    assert _plan("local-rank", **env).device is None


def test_empty_visible_devices_and_no_gpu_make_cpu_workers():
    env = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1"}
    empty = _plan("local-rank", CUDA_VISIBLE_DEVICES="", **env)
    assert empty.device is None and empty.expected and "CUDA_VISIBLE_DEVICES is empty" in empty.reason
    none = devices.plan("local-rank", env, physical=0)
    assert none.device is None and not none.expected and "no NVIDIA GPU" in none.reason


def test_missing_local_rank_waits_for_mpi_unless_alone():
    assert devices.plan("local-rank", {"PMI_RANK": "1", "PMI_SIZE": "4"}, physical=2) is None
    assert devices.plan("local-rank", {}, physical=2).device == "0"
    assert devices.settle(None, "local-rank", None, {"CUDA_VISIBLE_DEVICES": "1"}).device == "1"


def test_count_physical_reads_the_driver_without_cuda(tmp_path):
    assert devices.count_physical(str(tmp_path)) == 0
    (tmp_path / "dev").mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / "dev" / name).touch()
    assert devices.count_physical(str(tmp_path)) == 2
    (tmp_path / "proc/driver/nvidia/gpus/0000:17:00.0").mkdir(parents=True)
    assert devices.count_physical(str(tmp_path)) == 1


def test_a_rank_without_a_device_computes_on_the_cpu_and_says_why(caplog):
    caplog.set_level(logging.INFO, logger="hpcthreads")
    log = logging.getLogger("hpcthreads")
    quiet = devices.DeviceChoice(None, "no NVIDIA GPU or driver found on this node")
    assert devices.rank_backend("auto", quiet, log).name == "numba-cpu"
    assert caplog.records[-1].levelno == logging.INFO
    assert devices.rank_backend("cupy", quiet, log).name == "numba-cpu"
    assert caplog.records[-1].levelno == logging.WARNING
    caplog.clear()
    # A device that fails to start (no driver here): a warning naming the device
    backend = devices.rank_backend("auto", devices.DeviceChoice("GPU-1a2b", "test", True), log)
    assert backend.name == "numba-cpu" and not backend.is_gpu
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "device GPU-1a2b is not usable" in record.getMessage()


def test_info_places_each_rank():
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    text = placement_report("local-rank", 4, env, 2, {"numba-cuda": "available", "cupy": "unavailable: x"})
    lines = text.splitlines()
    assert "2 visible (CUDA_VISIBLE_DEVICES): 0, 1" in lines[0]
    assert "rank 0: coordinator" in lines[2]
    assert "rank 1: GPU 0 with numba-cuda" in lines[3] and "rank 2: GPU 1 with numba-cuda" in lines[4]
    assert "rank 3: numba-cpu" in lines[5]


class _FakeGPU(BaseBackend):
    name = "fake-gpu"
    is_gpu = True
    min_batch = 1 << 22


def test_gpu_sub_batches_hold_millions_of_numbers():
    from hpcthreads.config import make_job
    from hpcthreads.runtime.faults import Faults
    from hpcthreads.runtime.worker import ChunkRunner
    from hpcthreads.workloads import make_workload

    job = make_job({"name": "g", "type": "collatz", "parameters": {"count": 10**9}}, 0)
    runner = ChunkRunner.__new__(ChunkRunner)
    runner.workloads, runner.backend, runner.speed = [make_workload(job)], _FakeGPU(), {}
    runner.faults = Faults()
    assert runner.sub_size(0) == 1 << 22
    runner.speed[0] = 1e6  # a slow first measurement never shrinks a launch below min_batch
    assert runner.sub_size(0) == 1 << 22
    runner.speed[0] = 1e12
    assert runner.sub_size(0) == 1 << 22  # capped by max(min_batch, batch_size)
