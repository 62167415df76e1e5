"""Which pod a surge rollout's pre-switch check talks to (infra.pod_transport.ready_pod), on pod lists shaped like
`kubectl get pods -o json` (tests/data/pods/README.md says where the shapes come from)."""
from __future__ import annotations

import json
import pathlib

import pytest

from infra.pod_transport import INFERENCE_PORT, NoReadyPodError, PodTarget, ready_pod

PODS = pathlib.Path(__file__).parents[1] / "data" / "pods"
SELECTOR = {"kaito.sh/workspace": "llama-70b-3f9e1c"}


def pods(name: str) -> list[dict]:
    return json.loads((PODS / name).read_text())["items"]


def test_the_leader_of_a_multi_node_group_is_waited_for_even_when_a_worker_is_ready():
    leader = PodTarget("kaito-aks", SELECTOR, pod="llama-70b-3f9e1c-0", label="llama-70b-3f9e1c")
    with pytest.raises(NoReadyPodError, match="pod llama-70b-3f9e1c-0 of llama-70b-3f9e1c is not Ready yet"):
        ready_pod(pods("multi-node-leader-loading.json"), leader)
    assert ready_pod(pods("multi-node-ready.json"), leader) == "llama-70b-3f9e1c-0"


def test_any_ready_pod_serves_a_single_node_replica():
    target = PodTarget("kaito-aks", SELECTOR)
    assert ready_pod(pods("multi-node-leader-loading.json"), target) == "llama-70b-3f9e1c-1"
    assert ready_pod(pods("multi-node-ready.json"), target) == "llama-70b-3f9e1c-0"   # the first, by name


def test_terminating_and_pending_pods_are_not_ready():
    with pytest.raises(NoReadyPodError, match="has 2 pod\\(s\\), none Ready yet"):
        ready_pod(pods("terminating-and-pending.json"), PodTarget("kaito-aks", SELECTOR))
    with pytest.raises(NoReadyPodError, match="is not Ready yet"):
        ready_pod(pods("terminating-and-pending.json"), PodTarget("kaito-aks", SELECTOR, pod="llama-70b-3f9e1c-0"))


def test_no_pod_yet_is_said_and_is_retryable():
    with pytest.raises(NoReadyPodError, match="llama-70b-3f9e1c has no pod yet") as err:
        ready_pod([], PodTarget("kaito-aks", SELECTOR, label="llama-70b-3f9e1c"))
    assert isinstance(err.value, OSError)     # the check retries OSErrors like refused connections
    with pytest.raises(NoReadyPodError, match="does not exist yet"):
        ready_pod([], PodTarget("kaito-aks", SELECTOR, pod="llama-70b-3f9e1c-0"))


def test_the_target_round_trips_through_provider_state_and_names_itself():
    target = PodTarget("kaito-aks", {"kaito.sh/workspace": "m-abc123", "a": "b"}, pod="m-abc123-0", label="m-abc123")
    assert PodTarget.from_dict(json.loads(json.dumps(target.to_dict()))) == target
    assert target.label_selector == "a=b,kaito.sh/workspace=m-abc123"
    assert target.port == INFERENCE_PORT == 5000
    assert target.base_url() == "http://m-abc123-0.kaito-aks.port-forward:5000"
    assert PodTarget("ns", SELECTOR, label="ws").base_url() == "http://ws.ns.port-forward:5000"
