"""MPI across the nodes of the test cluster (.ci/cluster-up.sh) without Slurm's batch scripts.

- The Kubeflow MPIJob's launcher command, started as mpi-operator starts it: hydra over ssh to
  the worker nodes named in a hostfile, every rank on a worker, none on the launcher's node.
- `.ci/cluster-exec.sh srun -N 3 -n 4 ...`: ranks on three hostnames, results identical to one
  rank, and their traffic really crosses the network (the bytes on the nodes' links are counted).

Skipped when the test cluster is not up; HPCTHREADS_REQUIRE_CLUSTER=1 (set by CI) makes that
a failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import pytest
import yaml
from h5compare import assert_same_results
from helpers import ROOT, cli, mpiexec, run_session
from slurmkit import CLUSTER_DIR, CLUSTER_PYTHON, cluster_fixture, node_command, rank_hosts

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster():
    env = cluster_fixture(3)
    if not (CLUSTER_DIR / "ssh" / "config").exists():
        pytest.fail(f"the test cluster has no ssh configuration ({CLUSTER_DIR / 'ssh'})")
    return env


def launcher_command(manifest: Path) -> list[str]:
    """The command of the MPIJob's launcher container, as the manifest gives it."""
    documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    job = next(d for d in documents if d["kind"] == "MPIJob")
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    return [str(part) for part in launcher["command"]]


def with_option(command: list[str], option: str, value: str) -> list[str]:
    """`command` with the value after `option` replaced (the option must be there)."""
    at = command.index(option)
    return [*command[: at + 1], value, *command[at + 2 :]]


def test_the_mpijob_launcher_command_runs_over_ssh_on_the_worker_nodes(cluster, tmp_path):
    command = launcher_command(ROOT / "k8s" / "mpijob.yaml")
    assert command[:1] == ["mpiexec"] and "run" in command, command
    # The manifest's own command, scaled down: 4 ranks, 2 slots on each of 2 worker nodes
    out = tmp_path / "mpijob.h5"
    command = with_option(command, "-n", "4")
    command = with_option(command, "--count", "3e5")
    command = with_option(command, "--batch-size", "2e4")
    command = with_option(command, "-o", str(out))
    # mpi-operator writes the workers into a hostfile as host:slots and points hydra at it
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node2:2\nnode3:2\n")
    bin_dir = Path(sys.executable).parent
    assert Path(mpiexec()).parent == bin_dir, "this test needs the mpiexec beside this Python"
    env = {
        **cluster,
        "PATH": f"{bin_dir}:{cluster['PATH']}",
        "HYDRA_HOST_FILE": str(hostfile),
        # As mpi-operator sets it for MPICH
        "HYDRA_LAUNCH_EXTRA_ARGS": "-o ConnectionAttempts=10",
        # In the image, /etc/ssh/ssh_config gives the workers' sshd port; here, the cluster's file
        "HYDRA_LAUNCHER_EXTRA_ARGS": f"-F {CLUSTER_DIR / 'ssh' / 'config'}",
    }
    proc = run_session(node_command("node1", *command), timeout=180, env=env, cwd=tmp_path)
    report = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, report
    hosts = rank_hosts(out)
    # Every rank on a worker node (the launcher's node1 runs none), two per worker
    assert sorted(hosts) == ["node2", "node2", "node3", "node3"], hosts
    reference = tmp_path / "reference.h5"
    args = ["collatz", "--start", "1", "--count", "3e5", "--batch-size", "2e4"]
    cli("run", *args, "-o", str(reference), check=True)
    assert_same_results(reference, out)


def link_bytes(node: int) -> int:
    """Bytes through node N's link to the bridge, both ways, counted on the host's end."""
    stats = Path("/sys/class/net") / f"hpct-v{node}" / "statistics"
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


def test_ranks_on_three_nodes_send_their_data_over_the_network(cluster, tmp_path):
    out = tmp_path / "net.h5"
    args = ["collatz", "--count", "200000", "--store", "per-number", "--batch-size", "20000"]
    # gather: every row goes to rank 0 over MPI (with mpio, ranks write the shared file themselves)
    io = ["--io", "gather"]
    before = {node: link_bytes(node) for node in (2, 3)}
    # As a user on the login node would: .ci/cluster-exec.sh sets the MPI variables by itself
    srun = ["srun", "-N", "3", "-n", "4", "--mpi=pmi2", CLUSTER_PYTHON, "-m", "hpcthreads", "run"]
    command = [str(ROOT / ".ci" / "cluster-exec.sh"), *srun, *args, *io, "-o", str(out)]
    env = {k: v for k, v in cluster.items() if not k.startswith("UCX_")}
    proc = run_session(command, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    crossed = {node: link_bytes(node) - before[node] for node in (2, 3)}
    hosts = rank_hosts(out)
    assert len(hosts) == 4 and set(hosts) == {"node1", "node2", "node3"}, hosts
    reference = tmp_path / "reference.h5"
    cli("run", *args, "-o", str(reference), check=True)
    assert_same_results(reference, out)
    with h5py.File(out) as f:
        items = dict.fromkeys(hosts, 0)
        for host, count in zip(hosts, f["run/ranks/items"][:]):
            items[host] += int(count)
        row_bytes = sum(f["jobs/collatz"][name].dtype.itemsize for name in ("delay", "peak", "glide"))
    # Each worker's per-number rows reach rank 0 on node1 through its node's link, not through
    # shared memory (without UCX_TLS=tcp,self only kilobytes of control traffic would)
    for node in (2, 3):
        done = items[f"node{node}"]
        assert done > 0 and crossed[node] >= done * row_bytes, (crossed, items)
