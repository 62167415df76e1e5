"""infra.node_readiness: when a GPU pool is ready for its Workspace, judged on recorded Node objects.

The Node shapes come from tests/data/nodes/ (KAITO v0.12.0's own test fixtures and real nodes transcribed from
public `kubectl describe node` output; README.md there names each source). States a recording doesn't show
(NotReady, relabelling, a second node) are derived from them here, by changing one field.
"""
from __future__ import annotations

import copy
import json
import pathlib

import pytest

from infra.node_readiness import PoolExpectation, PoolNotReadyError, expectation_for, judge, wait_until_ready
from infra.plan import build_plan
from infra.settings import settings_from_config

NODES = pathlib.Path(__file__).resolve().parents[1] / "data" / "nodes"


def load(name: str):
    return json.loads((NODES / name).read_text())


AKS_NODE = load("aks-nc6sv3-gpunp-describe.json")                 # real AKS GPU node, no GFD
BYO_NODE = load("kaito-v0.12.0-byo-a10-24q.json")                 # KAITO's BYO fixture, GFD labels
A10_GFD_NODE = load("azure-nv36ads-a10-v5-gfd-timeslicing.json")  # real NV36ads_A10_v5 with GFD labels
MOCK_NODES = load("kaito-v0.12.0-mocknodes.json")["items"]         # KAITO's MockNodes

AKS_POOL = PoolExpectation(pool_name="gpunp", workspace="ws", selector={"kubernetes.azure.com/agentpool": "gpunp"},
                           instance_type="Standard_NC6s_v3", count=1, gpus_per_node=1, gfd=False)


def with_(node, labels=None, ready=None, name=None, capacity=None, deleting=False):
    node = copy.deepcopy(node)
    meta = node.setdefault("metadata", {})
    if labels:
        meta.setdefault("labels", {}).update(labels)
    if name:
        meta["name"] = name
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T00:00:00Z"
    if ready is not None:
        node.setdefault("status", {})["conditions"] = [{"type": "Ready", "status": ready, "reason": "KubeletNotReady"}]
    if capacity is not None:
        node.setdefault("status", {})["capacity"] = {"nvidia.com/gpu": capacity}
    return node


def test_a_ready_aks_gpu_node_of_the_right_size_makes_the_pool_ready():
    verdict = judge([AKS_NODE], AKS_POOL)
    assert verdict.ready and verdict.nodes == ("aks-gpunp-10282168-vmss000000",)


def test_fewer_ready_nodes_than_the_count_is_not_ready_and_says_which_node_waits():
    second = with_(AKS_NODE, name="aks-gpunp-10282168-vmss000001", ready="False")
    verdict = judge([AKS_NODE, second], PoolExpectation(**{**AKS_POOL.to_dict(), "count": 2}))
    assert not verdict.ready and not verdict.mismatch
    assert verdict.summary == ("GPU pool gpunp (Workspace ws): 1 of 2 nodes Ready "
                               "(aks-gpunp-10282168-vmss000001: Ready=False (KubeletNotReady))")


def test_nodes_of_other_pools_and_deleting_nodes_do_not_count():
    other = with_(AKS_NODE, labels={"kubernetes.azure.com/agentpool": "other"}, name="other-0")
    going = with_(AKS_NODE, name="aks-gpunp-10282168-vmss000009", deleting=True)
    verdict = judge([other, going], AKS_POOL)
    assert not verdict.ready and "0 of 1 nodes Ready" in verdict.summary


def test_a_node_of_another_instance_type_is_a_mismatch_kaito_would_not_count():
    exp = PoolExpectation(**{**AKS_POOL.to_dict(), "instance_type": "Standard_NC24ads_A100_v4"})
    verdict = judge([AKS_NODE], exp)
    assert not verdict.ready and verdict.mismatch
    assert "is a Standard_NC6s_v3, the plan sized Standard_NC24ads_A100_v4" in verdict.summary


def test_kaitos_mock_nodes_only_node1_qualifies():
    # node1: Ready, right instance type, capacity nvidia.com/gpu 1; node2: wrong type, no conditions; node3: NotReady
    exp = PoolExpectation(pool_name="p", workspace="ws", selector={}, instance_type="Standard_NV36ads_A10_v5",
                          count=1, gpus_per_node=1, gfd=False)
    verdict = judge(MOCK_NODES, exp)
    assert verdict.ready and verdict.nodes == ("node1",)
    assert not judge(MOCK_NODES, PoolExpectation(**{**exp.to_dict(), "count": 2})).ready


def test_a_node_whose_gpus_are_not_advertised_yet_is_not_ready():
    verdict = judge([with_(AKS_NODE, capacity="0")], AKS_POOL)
    assert not verdict.ready and "advertises 0 of 1 nvidia.com/gpu" in verdict.summary


# --- bring-your-own nodes (KAITO 0.12 under nodeProvisioner=byo): uniform GPU Feature Discovery labels ------

BYO_POOL = PoolExpectation(pool_name="gpool", workspace="ws", selector={"test-label-key": "test-label-value"},
                           instance_type="Standard_NV72ads_A10_v5", count=1, gpus_per_node=2, gfd=True,
                           gpu_memory_gib=24)


def byo(name="gpu-node-1", **labels):
    node = with_(BYO_NODE, name=name, capacity="2",
                 labels={"node.kubernetes.io/instance-type": "Standard_NV72ads_A10_v5", **labels})
    return node


def test_kaitos_byo_node_with_uniform_gfd_labels_is_ready():
    verdict = judge([byo()], BYO_POOL)
    assert verdict.ready, verdict.summary
    assert verdict.summary.endswith("with uniform GPU Feature Discovery labels")


def test_without_gfd_labels_a_byo_pool_waits():
    plain = with_(AKS_NODE, labels={"test-label-key": "test-label-value",
                                    "node.kubernetes.io/instance-type": "Standard_NV72ads_A10_v5"}, capacity="2")
    verdict = judge([plain], BYO_POOL)
    assert not verdict.ready and not verdict.mismatch
    assert "has no nvidia.com/gpu.product, nvidia.com/gpu.count, nvidia.com/gpu.memory label yet" in verdict.summary


def test_nodes_caught_mid_relabel_disagree_and_the_gate_waits_instead_of_admitting():
    relabelled = byo("gpu-node-2", **{"nvidia.com/gpu.product": "NVIDIA-A10-24Q-SHARED"})
    verdict = judge([byo(), relabelled], PoolExpectation(**{**BYO_POOL.to_dict(), "count": 2}))
    assert not verdict.ready and not verdict.mismatch
    assert "nodes disagree on nvidia.com/gpu.product (NVIDIA-A10-24Q, NVIDIA-A10-24Q-SHARED)" in verdict.summary


def test_gpu_memory_that_kaito_would_round_differently_from_the_plan_is_a_mismatch():
    # A100 80GB PCIe with driver 470 reports 80994 MiB: KAITO rounds to 79 GiB where the plan sized 80
    exp = PoolExpectation(**{**BYO_POOL.to_dict(), "gpu_memory_gib": 80})
    verdict = judge([byo(**{"nvidia.com/gpu.memory": "80994"})], exp)
    assert not verdict.ready and verdict.mismatch
    assert "80994 MiB (79 GiB per GPU as KAITO rounds it), the plan sized with 80 GiB" in verdict.summary


def test_a_real_a10_node_reports_the_vgpu_profile_the_catalog_pre_sets():
    settings = settings_from_config("prod", {
        "models": [{"name": "m", "model": "llama-3.1-8b-instruct", "maxModelLen": 4096}],
        "kaito": {"mode": "helm"}, "access": {"sourceRanges": ["203.0.113.0/24"]},
        "cluster": {"apiServerAuthorizedIpRanges": ["203.0.113.0/24"]}}, {"hfToken", "apiKeys"})
    (r,) = build_plan(settings).replicas
    assert r.instance_type == "Standard_NV36ads_A10_v5"
    real = A10_GFD_NODE["metadata"]["labels"]
    # the recorded node runs time-slicing (GFD then appends -SHARED); kaito-aks pools don't
    assert real["nvidia.com/gpu.product"].removesuffix("-SHARED") == r.gfd_labels["nvidia.com/gpu.product"]
    assert real["nvidia.com/gpu.memory"] == r.gfd_labels["nvidia.com/gpu.memory"] == "24512"
    exp = expectation_for(r)
    assert (exp.gfd, exp.gpu_memory_gib, exp.count, exp.selector) == (True, 24, 1, {"kaito-aks/workspace": r.workspace})


# --- the wait loop ----------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_wait_returns_as_soon_as_the_recorded_sequence_reaches_ready():
    states = iter([[], [with_(AKS_NODE, ready="False")], [AKS_NODE]])
    clock = Clock()
    verdict = wait_until_ready(lambda: next(states), AKS_POOL, poll_s=10, clock=clock, sleep=clock.sleep)
    assert verdict.ready and clock.now == 20


def test_the_wait_fails_at_its_deadline_with_the_last_reason():
    clock = Clock()
    with pytest.raises(PoolNotReadyError) as err:
        wait_until_ready(lambda: [with_(AKS_NODE, ready="False")], AKS_POOL, timeout_s=60, poll_s=10,
                         clock=clock, sleep=clock.sleep)
    assert str(err.value) == ("after 60 s: GPU pool gpunp (Workspace ws): 0 of 1 nodes Ready "
                              "(aks-gpunp-10282168-vmss000000: Ready=False (KubeletNotReady))")


def test_a_lasting_mismatch_fails_early_but_a_brief_one_is_waited_out():
    wrong = PoolExpectation(**{**AKS_POOL.to_dict(), "instance_type": "Standard_NC24ads_A100_v4"})
    clock = Clock()
    with pytest.raises(PoolNotReadyError, match="is a Standard_NC6s_v3"):
        wait_until_ready(lambda: [AKS_NODE], wrong, timeout_s=1800, poll_s=10, mismatch_grace_s=60,
                         clock=clock, sleep=clock.sleep)
    assert clock.now == 60
    relabel = [with_(BYO_NODE, capacity="2", labels={"node.kubernetes.io/instance-type": "Standard_NV72ads_A10_v5",
                                                    "nvidia.com/gpu.memory": "80994"}), byo()]
    states = iter([[relabel[0]], [relabel[1]]])
    clock = Clock()
    assert wait_until_ready(lambda: next(states), BYO_POOL, clock=clock, sleep=clock.sleep).ready


def test_api_errors_are_retried_until_the_deadline():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("apiserver unreachable")
        return [AKS_NODE]

    clock = Clock()
    assert wait_until_ready(flaky, AKS_POOL, clock=clock, sleep=clock.sleep).ready and len(calls) == 3


def test_a_not_ready_matching_node_without_gfd_labels_still_blocks_because_kaitos_webhook_reads_every_node():
    # KAITO's webhook lists every node matching the selector, Ready or not, and needs GFD labels on each
    spare = with_(AKS_NODE, name="spare", ready="False",
                  labels={"test-label-key": "test-label-value", "node.kubernetes.io/instance-type": "Standard_NV72ads_A10_v5"})
    verdict = judge([byo(), spare], BYO_POOL)
    assert not verdict.ready and "node spare has no nvidia.com/gpu.product" in verdict.summary


def test_memory_labels_that_round_to_the_same_gib_are_uniform_for_kaito():
    # 24512 and 24500 MiB are both 24 GiB as KAITO rounds and compares them
    two = PoolExpectation(**{**BYO_POOL.to_dict(), "count": 2})
    verdict = judge([byo(), byo("gpu-node-2", **{"nvidia.com/gpu.memory": "24500"})], two)
    assert verdict.ready, verdict.summary
