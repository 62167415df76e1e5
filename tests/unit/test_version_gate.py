"""infra.version_gate: the KAITO release a cluster runs, read from its controller image or its CRDs, against the plan.

Shapes: the Workspace CRD of each release is tests/data/kaito-crds/v*/ (verbatim upstream); the CRDs each release
installs are the files in kaito-project/kaito's charts/kaito/workspace/{crds,templates} and config/crd/bases at the
tag (listed below); the Deployment is the chart's templates/deployment.yaml with values.yaml's image
(``mcr.microsoft.com/aks/kaito/workspace:<tag>``), reduced to the fields read.
"""
from __future__ import annotations

import pathlib

import pytest
import yaml

from infra.version_gate import RunningKaito, gate_problem, line_from_crds, running_kaito, version_from_deployment

CRDS = pathlib.Path(__file__).resolve().parents[1] / "data" / "kaito-crds"
INSTALLED = {   # the kaito.sh CRDs each release's chart installs
    "0.6.0": ["ragengines.kaito.sh", "workspaces.kaito.sh"],
    "0.7.0": ["ragengines.kaito.sh", "workspaces.kaito.sh"],
    "0.8.0": ["inferencesets.kaito.sh", "ragengines.kaito.sh", "workspaces.kaito.sh"],
    "0.9.0": ["inferencesets.kaito.sh", "ragengines.kaito.sh", "workspaces.kaito.sh"],
    "0.10.0": ["inferencesets.kaito.sh", "ragengines.kaito.sh", "workspaces.kaito.sh"],
    "0.11.0": ["inferencesets.kaito.sh", "modelmirrors.kaito.sh", "multiroleinferences.kaito.sh",
               "ragengines.kaito.sh", "workspaces.kaito.sh"],
    "0.12.0": ["inferencesets.kaito.sh", "modelmirrors.kaito.sh", "multiroleinferences.kaito.sh",
               "ragengines.kaito.sh", "workspaces.kaito.sh"],
}


def workspace_crd(version: str) -> dict:
    return yaml.safe_load((CRDS / f"v{version}" / "kaito.sh_workspaces.yaml").read_text())


def deployment(image: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kaito-workspace"},
            "spec": {"template": {"spec": {"containers": [{"name": "manager", "image": image}]}}}}


@pytest.mark.parametrize("version", INSTALLED)
def test_each_release_line_is_recognised_from_its_own_crds(version):
    assert line_from_crds(INSTALLED[version], workspace_crd(version)) == ".".join(version.split(".")[:2])


def test_no_kaito_crds_is_no_line():
    assert line_from_crds(["certificates.cert-manager.io"], None) is None


@pytest.mark.parametrize("image,version", [
    ("mcr.microsoft.com/aks/kaito/workspace:0.11.2", "0.11.2"),
    ("mcr.microsoft.com/aks/kaito/workspace:v0.6.0", "0.6.0"),
    ("mcr.microsoft.com/aks/kaito/workspace:0.12.0-aks.1", "0.12.0"),
    ("mcr.microsoft.com/aks/kaito/workspace:0.12.0@sha256:" + "a" * 64, "0.12.0"),
    ("mcr.microsoft.com/aks/kaito/workspace@sha256:" + "b" * 64, None),     # a digest names no version
    ("mcr.microsoft.com/aks/kaito/workspace:latest", None),
    ("mcr.microsoft.com/oss/other/image:0.11.0", None),
])
def test_the_version_is_the_controller_images_tag(image, version):
    assert version_from_deployment(deployment(image)) == version


def test_a_mismatch_is_one_line_that_says_what_to_set():
    running = running_kaito("addon", deployment("mcr.microsoft.com/aks/kaito/workspace:0.11.2"), [], None)
    assert gate_problem(running, "0.6.0", "addon") == (
        "the AKS add-on runs KAITO 0.11.2 but this stack was planned for 0.6.0 (image "
        "mcr.microsoft.com/aks/kaito/workspace:0.11.2 in kube-system): set kaito.version: 0.11.2 and run "
        "python -m infra plan again")
    assert gate_problem(running, "0.11.2", "addon") is None


def test_without_a_versioned_image_the_crds_decide_the_line():
    digest = deployment("mcr.microsoft.com/aks/kaito/workspace@sha256:" + "c" * 64)
    running = running_kaito("addon", digest, INSTALLED["0.11.0"], workspace_crd("0.11.0"))
    assert (running.version, running.line) == (None, "0.11")
    assert gate_problem(running, "0.11.0", "addon") is None
    problem = gate_problem(running, "0.6.0", "addon")
    assert problem is not None and problem.startswith("the AKS add-on runs KAITO 0.11.x but this stack was planned "
                                                      "for 0.6.0 (its CRDs")


def test_a_helm_install_of_another_version_is_caught_too():
    running = running_kaito("helm", deployment("mcr.microsoft.com/aks/kaito/workspace:0.10.0"), [], None)
    assert gate_problem(running, "0.12.0", "helm").startswith("the cluster runs KAITO 0.10.0 but this stack was "
                                                              "planned for 0.12.0 (image")


def test_no_kaito_at_all_says_so():
    running = running_kaito("addon", None, [], None)
    assert running == RunningKaito(None, None, "no kaito-workspace Deployment in kube-system and no KAITO CRDs")
    assert gate_problem(running, "0.11.0", "addon") == (
        "the AKS add-on runs no KAITO yet (no kaito-workspace Deployment in kube-system and no KAITO CRDs); wait for "
        "it, then run `pulumi up` again")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_the_gate_waits_for_the_add_on_to_appear_then_passes():
    from infra.version_gate import wait_for_version
    states = iter([ConnectionError("api server starting"), running_kaito("addon", None, [], None),
                   running_kaito("addon", deployment("mcr.microsoft.com/aks/kaito/workspace:0.11.0"), [], None)])

    def read():
        state = next(states)
        if isinstance(state, Exception):
            raise state
        return state

    clock = Clock()
    assert wait_for_version(read, "0.11.0", "addon", poll_s=10, clock=clock, sleep=clock.sleep).version == "0.11.0"
    assert clock.now == 20


def test_the_gate_fails_at_once_on_another_version_and_at_its_deadline_without_kaito():
    from infra.version_gate import VersionGateError, wait_for_version
    clock = Clock()
    other = running_kaito("addon", deployment("mcr.microsoft.com/aks/kaito/workspace:0.12.0"), [], None)
    with pytest.raises(VersionGateError, match="runs KAITO 0.12.0 but this stack was planned for 0.11.0"):
        wait_for_version(lambda: other, "0.11.0", "addon", clock=clock, sleep=clock.sleep)
    assert clock.now == 0
    with pytest.raises(VersionGateError, match="runs no KAITO yet"):
        wait_for_version(lambda: running_kaito("addon", None, [], None), "0.11.0", "addon", timeout_s=60, poll_s=10,
                         clock=clock, sleep=clock.sleep)
    assert clock.now == 60
