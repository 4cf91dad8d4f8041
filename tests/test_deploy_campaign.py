"""The campaign's Kubernetes manifests, checked offline, and their pods' command lines run here.

k8s/campaign.yaml holds the campaign's volume and job file, a Job of worker pods and a Job that
merges; k8s/campaign-mpijob.yaml an MPIJob that joins the same campaign (its schema is checked
with the other MPIJobs in tests/test_deploy.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import h5py
import pytest
import yaml
from helpers import BIN, ROOT, cli, kill_run
from test_deploy import assert_admits_only_its_pods, assert_pod_locked_down, documents, mpijob, tool

CAMPAIGN = ROOT / "k8s" / "campaign.yaml"
CAMPAIGN_MPIJOB = ROOT / "k8s" / "campaign-mpijob.yaml"
EXIT_STOPPED = 75
# The sizes of the pods' command lines, made small: ranks, units per job
SMALL = {"-n": "2", "--units": "6"}


def named(path: Path, kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in documents(path) if doc["kind"] == kind}


def worker_job() -> dict:
    return named(CAMPAIGN, "Job")["hpcthreads-campaign"]


def merge_job() -> dict:
    return named(CAMPAIGN, "Job")["hpcthreads-campaign-merge"]


def containers(template: dict) -> dict[str, dict]:
    spec = template["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def test_core_kinds_are_valid_kubernetes():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = [*documents(CAMPAIGN), *(d for d in documents(CAMPAIGN_MPIJOB) if d["kind"] != "MPIJob")]
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == ["ConfigMap", "Job", "Job", "NetworkPolicy", "NetworkPolicy", "PersistentVolumeClaim"]
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_campaign_pods_are_locked_down():
    for job in (worker_job(), merge_job()):
        assert_pod_locked_down(job["spec"]["template"], "hpcthreads-campaign")
    assert_admits_only_its_pods(CAMPAIGN, "hpcthreads-campaign")
    job = mpijob(CAMPAIGN_MPIJOB)
    instance = job["metadata"]["labels"]["app.kubernetes.io/instance"]
    assert job["spec"]["launcherCreationPolicy"] == "WaitForWorkersReady"
    for replica in job["spec"]["mpiReplicaSpecs"].values():
        assert_pod_locked_down(replica["template"], instance)
    assert_admits_only_its_pods(CAMPAIGN_MPIJOB, instance)


def test_every_pod_uses_the_campaigns_volume_and_job_file():
    claims, maps = named(CAMPAIGN, "PersistentVolumeClaim"), named(CAMPAIGN, "ConfigMap")
    assert [claim["spec"]["accessModes"] for claim in claims.values()] == [["ReadWriteMany"]]
    replicas = mpijob(CAMPAIGN_MPIJOB)["spec"]["mpiReplicaSpecs"]
    templates = [worker_job()["spec"]["template"], merge_job()["spec"]["template"]]
    for template in [*templates, *(replica["template"] for replica in replicas.values())]:
        for volume in template["spec"]["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            elif "configMap" in volume:
                assert volume["configMap"]["name"] in maps
            else:
                assert volume["emptyDir"]["medium"] == "Memory", volume
    # The ranks write the units' parts: MPI workers mount the campaign
    worker = containers(replicas["Worker"]["template"])["worker"]
    assert "/data" in {mount["mountPath"] for mount in worker["volumeMounts"]}


def test_worker_job_is_a_work_queue_that_survives_scaling_down():
    spec = worker_job()["spec"]
    # completions unset: done once a pod succeeds (only when every unit is done) and all have ended
    assert "completions" not in spec and spec["parallelism"] > 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    stopped = [r for r in rules if EXIT_STOPPED in r.get("onExitCodes", {}).get("values", [])]
    assert [(r["action"], r["onExitCodes"]["containerName"]) for r in stopped] == [("Ignore", "worker")]
    assert "--no-wait" not in containers(spec["template"])["worker"]["command"]
    header = CAMPAIGN.read_text().split("\napiVersion:")[0]
    assert 'kubectl patch job hpcthreads-campaign --type=merge -p \'{"spec":{"parallelism":' in header


def test_mpijob_launcher_starts_a_rank_per_slot():
    spec = mpijob(CAMPAIGN_MPIJOB)["spec"]
    command = containers(spec["mpiReplicaSpecs"]["Launcher"]["template"])["launcher"]["command"]
    slots = spec["mpiReplicaSpecs"]["Worker"]["replicas"] * spec["slotsPerWorker"]
    assert command[:3] == ["mpiexec", "-n", str(slots)] and command[3:6] == [
        "hpcthreads",
        "run",
        "--campaign",
    ]


def here(container: dict, mounts: dict[str, Path]) -> list[str]:
    """A container's command line for this machine: the pods' mount paths as folders here, small sizes.

    (A launcher's paths are those of the worker pods, where its ranks run.)
    """
    command = [*container.get("command", []), *container.get("args", [])]
    out = []
    for i, arg in enumerate(command):
        if i and command[i - 1] in SMALL:
            arg = SMALL[command[i - 1]]
        for option, value in SMALL.items():
            arg = re.sub(rf"(?<= {option} )\d+", value, arg)  # inside a shell script
        for path, folder in mounts.items():
            arg = re.sub(rf"(?<![\w.]){re.escape(path)}(?![\w.-])", str(folder), arg)
        out.append(arg)
    return out


@pytest.fixture
def volumes(tmp_path) -> dict[str, Path]:
    """The pods' mount paths, as folders here; /config holds the ConfigMap's job file with small jobs."""
    mounts = {"/data": tmp_path / "data", "/config": tmp_path / "config"}
    for folder in mounts.values():
        folder.mkdir()
    text = named(CAMPAIGN, "ConfigMap")["hpcthreads-campaign-jobs"]["data"]["jobs.yaml"]
    jobs = yaml.safe_load(text)
    for job in jobs["jobs"]:
        size = "thread_count" if job["type"] == "thread" else "count"
        job["parameters"].update({size: 24000, "batch_size": 2000})
    (mounts["/config"] / "jobs.yaml").write_text(yaml.safe_dump(jobs))
    return mounts


def start(command: list[str]) -> subprocess.Popen:
    """A pod's command, with hpcthreads and mpiexec of this Python first on PATH."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


def finish(procs: list[subprocess.Popen], timeout: float = 240) -> None:
    """Wait for every process, which must exit 0; kill them all if one takes too long."""
    try:
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            kill_run(proc, signal.SIGKILL)
        raise
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, f"{proc.args}:\n{stderr}"


def test_pods_commands_create_share_and_merge_a_campaign(volumes):
    """Create as a worker pod does, then a Job pod and an MPIJob launcher at once, then merge."""
    job = containers(worker_job()["spec"]["template"])
    launcher = containers(mpijob(CAMPAIGN_MPIJOB)["spec"]["mpiReplicaSpecs"]["Launcher"]["template"])
    finish([start(here(job["create"], volumes))])
    campaign = volumes["/data"] / "campaign"
    made = (campaign / "campaign.json").stat().st_mtime_ns
    # The MPIJob's launcher finds the campaign made: its create step (the same) leaves it alone
    assert launcher["create"]["command"] == job["create"]["command"]
    finish([start(here(launcher["create"], volumes))])
    assert (campaign / "campaign.json").stat().st_mtime_ns == made
    finish([start(here(job["worker"], volumes)), start(here(launcher["launcher"], volumes))])
    assert len(list((campaign / "holders").glob("*.json"))) == 2
    assert cli("campaign", "status", str(campaign)).returncode == 0
    merge = containers(merge_job()["spec"]["template"])["merge"]
    finish([start(here(merge, volumes))])
    with h5py.File(volumes["/data"] / "campaign.h5") as f:
        assert f.attrs["state"] == "complete"


def test_pods_creating_the_campaign_at_once_all_succeed(volumes):
    create = containers(worker_job()["spec"]["template"])["create"]
    finish([start(here(create, volumes)) for _ in range(3)])
    assert cli("campaign", "status", str(volumes["/data"] / "campaign")).returncode == 1


def test_pods_shell_scripts_pass_shellcheck():
    pods = [worker_job()["spec"]["template"], merge_job()["spec"]["template"]]
    pods += [r["template"] for r in mpijob(CAMPAIGN_MPIJOB)["spec"]["mpiReplicaSpecs"].values()]
    scripts = [
        c["command"][2] for pod in pods for c in containers(pod).values() if c["command"][:2] == ["sh", "-c"]
    ]
    assert len(scripts) == 3
    for script in scripts:
        proc = subprocess.run(
            [tool("shellcheck"), "-s", "sh", "-"], input=script, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout
