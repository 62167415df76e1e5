"""Every Kubernetes name kaito-aks writes, or KAITO derives from a Workspace's name, with its limit.

KAITO's webhook only checks that a Workspace name is a DNS label (63 characters), but KAITO runs every Workspace as
a StatefulSet named after it (kaito-project/kaito@v0.8.0 and later, pkg/workspace/manifests/manifests.go), and
Kubernetes labels each StatefulSet pod ``controller-revision-hash=<statefulset>-<10 characters>``, a label value of
at most 63 characters. A Workspace name over 52 characters is therefore admitted and then never gets a pod
(kubernetes/kubernetes#64023). The plan checks every name below before anything is deployed.
"""
from __future__ import annotations

DNS_LABEL_MAX = 63            # Service names, label values
DNS_SUBDOMAIN_MAX = 253       # ConfigMap, NetworkPolicy names
REVISION_HASH_CHARS = 11      # '-' + the 10-character hash Kubernetes appends for controller-revision-hash
WORKSPACE_MAX = DNS_LABEL_MAX - REVISION_HASH_CHARS   # 52


SURGE_HASH_CHARS = 6          # identity hash in a surge Workspace's name


def slot_name(model_name: str, replica: int) -> str:
    """A replica's stable name: replica 0 keeps the model's name, so scaling out never renames the first one. The
    endpoint Service, the gateway's per-replica route and the exported check carry it across rollouts."""
    return model_name if replica == 0 else f"{model_name}-r{replica}"


def workspace_name(model_name: str, replica: int, identity: str = "", surge: bool = False) -> str:
    """The Workspace of a replica: its slot name, plus (surge rollouts) a hash of what KAITO can't change in place,
    so a change is a new Workspace and GPU pool beside the old ones instead of a replacement of them."""
    slot = slot_name(model_name, replica)
    return f"{slot}-{identity[:SURGE_HASH_CHARS]}" if surge else slot


def endpoint_service_name(workspace: str) -> str:
    # KAITO creates its own Service named after the Workspace (ClusterIP, publishNotReadyAddresses); ours is
    # separate so it only routes to ready pods and carries the stack's exposure settings.
    return f"{workspace}-endpoint"


def config_map_name(workspace: str, config_hash: str) -> str:
    """The inference ConfigMap, named by its content: a new config is a new name, so the Workspace is replaced."""
    return f"{workspace}-inference-{config_hash}"


def network_policy_name(workspace: str) -> str:
    return f"{workspace}-inference"


def leader_pod_name(workspace: str) -> str:
    return f"{workspace}-0"


def derived_names(workspace: str) -> list[tuple[str, str, int]]:
    """(what, name, limit) for every name that follows from a Workspace's name."""
    return [
        ("the Workspace (its StatefulSet's pods are labelled controller-revision-hash=<name>-<10 characters>, "
         "at most 63)", workspace, WORKSPACE_MAX),
        ("KAITO's Service", workspace, DNS_LABEL_MAX),
        ("KAITO's headless Service", f"{workspace}-headless", DNS_LABEL_MAX),
        ("the endpoint Service", endpoint_service_name(workspace), DNS_LABEL_MAX),
        ("the leader pod's statefulset.kubernetes.io/pod-name label", leader_pod_name(workspace), DNS_LABEL_MAX),
        ("the inference ConfigMap", config_map_name(workspace, "0" * 8), DNS_SUBDOMAIN_MAX),
        ("the NetworkPolicy", network_policy_name(workspace), DNS_SUBDOMAIN_MAX),
    ]


def max_model_name_length(replicas: int, surge: bool = False) -> int:
    """The longest models[i].name whose every replica's Workspace (``<name>-rN[-<hash>]``) and derived names fit."""
    suffix = len(f"-r{replicas - 1}") if replicas > 1 else 0
    return WORKSPACE_MAX - suffix - (1 + SURGE_HASH_CHARS if surge else 0)
