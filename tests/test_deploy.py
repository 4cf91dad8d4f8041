"""Deployment files: shell scripts, container recipes and Kubernetes manifests, checked offline.

The MPIJobs are validated against mpi-operator's CRD (found through HPCTHREADS_MPIJOB_CRD), and
each launcher's command line runs under a local mpiexec, so a manifest cannot drift from the CLI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml
from helpers import ROOT, mpiexec

SHELL_SCRIPTS = sorted(
    {*ROOT.glob("**/*.sh"), *ROOT.glob("slurm/*.sbatch"), ROOT / ".ci" / "run"} - set(ROOT.glob(".venv/**/*"))
)
MANIFESTS = [ROOT / "k8s" / "mpijob.yaml", ROOT / "k8s" / "mpijob-gpu.yaml"]
# Every MPIJob: those above and one that joins a campaign (tests/test_deploy_campaign.py)
MPIJOBS = [*MANIFESTS, ROOT / "k8s" / "campaign-mpijob.yaml"]
INSTALL_SCRIPT = "scripts/install-parallel-h5py.sh"


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_scripts_pass_shellcheck(script):
    proc = subprocess.run(
        [tool("shellcheck"), "-x", "-s", "bash", str(script.relative_to(ROOT))],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def header_of(text: str) -> str:
    """The comment block before a script's code."""
    return re.split(r"^(?:set -euo pipefail|HPCTHREADS_PYTHON=)", text, maxsplit=1, flags=re.M)[0]


def test_slurm_scripts_document_their_variables():
    library = header_of((ROOT / "slurm" / "lib.sh").read_text())
    for script in [*ROOT.glob("slurm/*.sbatch"), *ROOT.glob("slurm/*.sh")]:
        text = script.read_text()
        # Scripts that source lib.sh share its documented variables
        header = header_of(text) + (library if "slurm/lib.sh" in text else "")
        for name in sorted(set(re.findall(r"\$\{?(HPCTHREADS_[A-Z_]+)", text))):
            assert name in header, f"{script.name}: {name} is not documented at the top"


def test_dockerfile_passes_hadolint():
    proc = subprocess.run(
        [tool("hadolint"), "containers/Dockerfile"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def apptainer_sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The header (key: value lines before the first section) and the %sections' bodies."""
    header: dict[str, str] = {}
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"^%(\w+)\s*$", line)
        if match:
            current = match.group(1)
            assert current not in sections, f"section %{current} twice"
            sections[current] = ""
        elif current is None and line.strip() and not line.startswith("#"):
            key, sep, value = line.partition(":")
            assert sep, f"header line without a colon: {line!r}"
            header[key.strip()] = value.strip()
        elif current is not None:
            sections[current] += line + "\n"
    return header, sections


def test_apptainer_definition_parses():
    header, sections = apptainer_sections((ROOT / "containers" / "hpcthreads.def").read_text())
    assert header["Bootstrap"] == "docker" and header["From"].startswith("nvidia/cuda:")
    known = {"help", "labels", "files", "setup", "post", "environment", "runscript", "test", "startscript"}
    assert set(sections) <= known and {"post", "environment", "runscript", "test"} <= set(sections)
    # The %post body is a shell script too
    proc = subprocess.run(
        [tool("shellcheck"), "-s", "sh", "-"], input=sections["post"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout
    # %files sources exist in the checkout
    for line in filter(str.strip, sections["files"].splitlines()):
        assert (ROOT / line.split()[0]).exists(), line


def test_containers_install_with_the_same_script_and_base():
    docker = (ROOT / "containers" / "Dockerfile").read_text()
    _, sections = apptainer_sections((ROOT / "containers" / "hpcthreads.def").read_text())
    assert (ROOT / INSTALL_SCRIPT).exists()
    assert f"{INSTALL_SCRIPT} /opt/venv" in docker and f"{INSTALL_SCRIPT} /opt/venv" in sections["post"]
    assert (
        "pip install --no-cache-dir ." in docker
        and "pip install --no-cache-dir /opt/hpcthreads" in sections["post"]
    )
    # The base is a build argument (CI swaps it for a local Debian); its default is the release base
    assert re.search(r"^FROM \$\{BASE\}$", docker, re.M)
    base = re.search(r"^ARG BASE=(\S+)$", docker, re.M).group(1)
    header, _ = apptainer_sections((ROOT / "containers" / "hpcthreads.def").read_text())
    assert header["From"] == base


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def mpijob(path: Path) -> dict:
    return next(doc for doc in documents(path) if doc["kind"] == "MPIJob")


def strip_extensions(schema):
    """The CRD schema without the x-kubernetes-* keys jsonschema does not know."""
    if isinstance(schema, dict):
        return {k: strip_extensions(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if isinstance(schema, list):
        return [strip_extensions(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def mpijob_schema():
    given = os.environ.get("HPCTHREADS_MPIJOB_CRD")
    # A relative path is relative to the checkout's root, as CI sets it
    path = ROOT / given if given else None
    if path is None or not path.exists():
        pytest.skip(f"no MPIJob CRD: set HPCTHREADS_MPIJOB_CRD to mpi-operator's CRD file (now {given!r})")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v2beta1")
    return strip_extensions(version["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("path", MPIJOBS, ids=lambda p: p.name)
def test_mpijobs_match_the_mpi_operator_schema(path, mpijob_schema):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(mpijob(path), mpijob_schema)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_other_kinds_are_valid_kubernetes(path):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    others = [doc for doc in documents(path) if doc["kind"] != "MPIJob"]
    assert {doc["kind"] for doc in others} == {"PersistentVolumeClaim", "NetworkPolicy"}
    for doc in others:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def assert_pod_locked_down(template: dict, instance: str) -> None:
    """A pod template labelled as `instance`, not root, every container without escalation or capabilities."""
    pod = template["spec"]
    assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == instance
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, container["name"]
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], container["name"]


def assert_admits_only_its_pods(path: Path, instance: str) -> None:
    """The manifest's NetworkPolicy selects the pods of `instance` and admits only them."""
    policy = next(doc for doc in documents(path) if doc["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/instance": instance}
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": instance}}}]}
    ]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_mpijobs_are_locked_down(path):
    job = mpijob(path)
    spec = job["spec"]
    assert spec["launcherCreationPolicy"] == "WaitForWorkersReady"
    instance = job["metadata"]["labels"]["app.kubernetes.io/instance"]
    claims = {doc["metadata"]["name"] for doc in documents(path) if doc["kind"] == "PersistentVolumeClaim"}
    for role, replica in spec["mpiReplicaSpecs"].items():
        assert_pod_locked_down(replica["template"], instance)
        volumes = [
            v["persistentVolumeClaim"]["claimName"] for v in replica["template"]["spec"].get("volumes", [])
        ]
        assert set(volumes) <= claims, role
    worker = spec["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in worker["volumes"]] == sorted(claims)
    assert_admits_only_its_pods(path, instance)


def test_gpu_mpijob_gives_a_slot_per_gpu_and_the_launcher_none():
    spec = mpijob(ROOT / "k8s" / "mpijob-gpu.yaml")["spec"]
    worker = spec["mpiReplicaSpecs"]["Worker"]
    resources = worker["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == spec["slotsPerWorker"]
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(launcher["containers"][0]["resources"])
    assert spec.get("runLauncherAsWorker", False) is False
    command = launcher["containers"][0]["command"]
    # One rank per GPU, plus the coordinator
    assert int(command[command.index("-n") + 1]) == worker["replicas"] * spec["slotsPerWorker"] + 1


def launcher_command(path: Path) -> list[str]:
    container = mpijob(path)["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    return [*container.get("command", []), *container.get("args", [])]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_launcher_command_runs_under_a_local_mpiexec(path, tmp_path):
    command = launcher_command(path)
    assert command[:2] == ["mpiexec", "-n"] and command[3] == "hpcthreads", command
    args = command[4:]
    # Same arguments, small: 3 ranks, a small count, a temporary output
    small = {"--count": "20000", "--batch-size": "2000", "-o": str(tmp_path / "out.h5")}
    for i, arg in enumerate(args[:-1]):
        if arg in small:
            args[i + 1] = small[arg]
    proc = subprocess.run(
        [mpiexec(), "-n", "3", sys.executable, "-m", "hpcthreads", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    with h5py.File(tmp_path / "out.h5") as f:
        assert f.attrs["ranks"] == 3 and f.attrs["state"] == "complete"
