"""kaito-aks's CrossGuard policies: what a stack must never deploy, checked by the engine on every preview/up.

Importable on purpose: ``PolicyPack(...)`` starts a gRPC server and blocks forever, so only ``__main__.py``
constructs it and the tests import the policies from here. Props are the engine's raw camelCase inputs
(``vmSize``, ``nodeTaints``, ``metadata.annotations``), already unwrapped from secrets, as ``Mapping`` /
``Sequence`` proxies that raise ``UnknownValueError`` on values unknown during preview (the engine then
reports "can't run during preview" as advisory, which is the right outcome for an unknown).

The constants below are deliberately written out rather than imported from ``infra``: a policy that reads the
program's own constants would agree with any mistake the program makes. Only KAITO's model catalog (data, not
decisions) comes from ``infra``, for the gated-model policy.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

if TYPE_CHECKING:
    from infra.catalog import Catalog

SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
WORKSPACE = "kubernetes:kaito.sh/v1beta1:Workspace"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
# azure-native also registers explicitly versioned types, e.g. azure-native:containerservice/v20240901:AgentPool
AGENT_POOL = re.compile(r"^azure-native:containerservice(/v[0-9a-z]+)?:AgentPool$")
MANAGED_CLUSTER = re.compile(r"^azure-native:containerservice(/v[0-9a-z]+)?:ManagedCluster$")

GATEWAY_NAME = "kaito-gateway"                  # infra/render/gateway_objects.py NAME: the Service and its app name
AZURE_INTERNAL_LB = "service.beta.kubernetes.io/azure-load-balancer-internal"
SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"   # honoured like the spec field
GPU_VM_SIZE = re.compile(r"^standard_n", re.IGNORECASE)                             # NC, ND, NV, NG, NCC families
GPU_TAINT = "sku=gpu:NoSchedule"
WAIT_FOR = ("pulumi.com/waitFor", "condition=WorkspaceSucceeded")
HF_TOKEN_KEY = "HF_TOKEN"
# Fallback only (infra's catalog not importable): Hugging Face orgs whose models need an accepted licence.
GATED_FAMILIES = ("meta-llama/", "llama-", "google/gemma", "gemma-", "mistralai/", "mistral-", "ministral-")


# ---------------------------------------------------------------------------------------------------------
# Reading props (Mapping/Sequence proxies, never dict/list)

def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return default
        obj = obj[key]
    return obj


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [str(v) for v in value]
    return []


def _k8s_id(props: Mapping[str, Any]) -> str:
    return f"{_get(props, 'metadata', 'namespace', default='default')}/{_get(props, 'metadata', 'name')}"


def _is_true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


# ---------------------------------------------------------------------------------------------------------
# 1. No LoadBalancer open to the internet

def _source_ranges(service: Mapping[str, Any]) -> list[str]:
    annotation = str(_get(service, "metadata", "annotations", SOURCE_RANGES_ANNOTATION, default=""))
    return _strings(_get(service, "spec", "loadBalancerSourceRanges")) + \
        [c.strip() for c in annotation.split(",") if c.strip()]


def _is_world(cidr: str) -> bool:
    """0.0.0.0/0, ::/0 (and spellings such as 0.0.0.0/00): any prefix of length 0."""
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def _is_gateway(service: Mapping[str, Any]) -> bool:
    return (_get(service, "metadata", "name") == GATEWAY_NAME
            and _get(service, "metadata", "labels", "app.kubernetes.io/name") == GATEWAY_NAME)


def public_exposure(service: Mapping[str, Any]) -> str | None:
    """Why a LoadBalancer Service is reachable from the whole internet, or None if it is not."""
    ranges = _source_ranges(service)
    world = [c for c in ranges if _is_world(c)]
    if world:
        return f"source range {world[0]}"
    if not ranges and not _is_true(_get(service, "metadata", "annotations", AZURE_INTERNAL_LB)):
        return "no loadBalancerSourceRanges and not internal"
    return None


def validate_no_public_load_balancer(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != SERVICE or _get(args.props, "spec", "type") != "LoadBalancer":
        return
    why = public_exposure(args.props)
    if why is None:
        return
    # KAITO's endpoints have no authentication: only the gateway (API keys) may ever face the internet, and
    # even it only when the policy's config says so -- a deliberate decision, not a forgotten sourceRanges.
    gateway = _is_gateway(args.props)
    if gateway and _is_true(args.get_config().get("allowPublicGateway", False)):
        return
    hint = "set kaito-aks:access.sourceRanges or access.internal: true"
    if gateway:
        hint += "; the authenticated gateway may be public only with the policy config allowPublicGateway: true"
    report(f"LoadBalancer Service {_k8s_id(args.props)} is open to the internet ({why}): {hint}")


no_public_load_balancer = ResourceValidationPolicy(
    name="no-public-load-balancer",
    description="LoadBalancer Services admit only listed client ranges or are internal; only the authenticated "
                "gateway may be public, and only with allowPublicGateway: true.",
    validate=validate_no_public_load_balancer,
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={"allowPublicGateway": {"type": "boolean", "default": False}}),
)


# ---------------------------------------------------------------------------------------------------------
# 2. Gated models have the HF-token Secret (stack policy: needs the Workspaces, Secrets and KAITO install)

def _catalog() -> Catalog | None:
    """kaito-aks's catalog of KAITO releases and models, or None when ``infra`` is not importable."""
    try:
        from infra.catalog import load_catalog
    except ImportError:
        return None
    return load_catalog()


def kaito_line(resources: Iterable[PolicyResource], catalog: Catalog) -> str | None:
    """The KAITO release the stack runs: its Helm chart's version, or the version the plan sized the AKS add-on for
    (the cluster's `kaito-version` tag; the program checks it against the running add-on). None when unknown: the
    policy then judges across every release."""
    resources = list(resources)
    for r in resources:
        if r.resource_type == HELM_RELEASE and _get(r.props, "chart") == "workspace":
            version = str(_get(r.props, "version", default=""))
            if version in catalog.releases:
                return version
    for r in resources:
        if MANAGED_CLUSTER.match(r.resource_type) and _is_true(_get(r.props, "aiToolchainOperatorProfile", "enabled")):
            version = str(_get(r.props, "tags", "kaito-version", default=""))
            if version in catalog.releases:
                return version
    return None


def secret_rule(preset: str, line: str | None, catalog: Catalog | None) -> str:
    """"required", "forbidden" or "optional": what KAITO needs of modelAccessSecret for this preset.

    From the catalog, per release line: e.g. KAITO 0.6's mistral-7b image packages its weights and its webhook
    *rejects* a secret, while 0.12 downloads the gated repo and needs one; DeepSeek-R1 on 0.6 needs one though
    it is not gated. With the line unknown, required if any line requires it (never forbidden). Without the
    catalog, or for a model outside it (a generic Hugging Face id), the gated families decide.
    """
    if catalog is None:
        return _family_rule(preset)
    from infra.models import ResolveError, resolve

    rules = []
    for name in [line] if line in catalog.releases else list(catalog.releases):
        try:
            resolved = resolve(preset, catalog.releases[name], catalog)
        except ResolveError:
            continue
        rules.append("forbidden" if resolved.secret_rule == "forbidden" else
                     "required" if resolved.gated else "optional")
    if not rules:
        return _family_rule(preset)
    if "required" in rules:
        return "required"
    # "forbidden" only when the stack's own line forbids it; across all lines, at most optional
    return rules[0] if line in catalog.releases else "optional"


def _family_rule(preset: str) -> str:
    return "required" if preset.lower().startswith(GATED_FAMILIES) else "optional"


def _token_secrets(resources: Iterable[PolicyResource]) -> set[tuple[str, str]]:
    """(namespace, name) of every Secret that carries an HF_TOKEN key."""
    found = set()
    for r in resources:
        if r.resource_type != SECRET:
            continue
        keys = set(_get(r.props, "data", default={}) or {}) | set(_get(r.props, "stringData", default={}) or {})
        if HF_TOKEN_KEY in keys:
            found.add((_get(r.props, "metadata", "namespace", default="default"), _get(r.props, "metadata", "name")))
    return found


def validate_gated_models_have_token(args: StackValidationArgs, report: ReportViolation) -> None:
    catalog = _catalog()
    line = kaito_line(args.resources, catalog) if catalog is not None else None
    secrets = _token_secrets(args.resources)
    for ws in (r for r in args.resources if r.resource_type == WORKSPACE):
        preset = str(_get(ws.props, "inference", "preset", "name", default=""))
        if not preset:
            continue                        # a template/adapter-only Workspace downloads no preset
        secret = _get(ws.props, "inference", "preset", "presetOptions", "modelAccessSecret")
        rule = secret_rule(preset, line, catalog)
        ns = _get(ws.props, "metadata", "namespace", default="default")
        where = f"KAITO {line}" if line else "KAITO"
        if rule == "required" and not secret:
            report(f"Workspace {_k8s_id(ws.props)} runs preset '{preset}', which needs a Hugging Face token "
                   f"({where}), but sets no inference.preset.presetOptions.modelAccessSecret", ws.urn)
        elif rule == "forbidden" and secret:
            report(f"Workspace {_k8s_id(ws.props)} sets modelAccessSecret, which {where} rejects for preset "
                   f"'{preset}' (its image packages the weights)", ws.urn)
        elif secret and (ns, secret) not in secrets:
            report(f"Workspace {_k8s_id(ws.props)} references Secret '{secret}', but the stack has no Secret "
                   f"{ns}/{secret} with key {HF_TOKEN_KEY}", ws.urn)


gated_models_have_token = StackValidationPolicy(
    name="gated-models-have-hf-token",
    description="Every Workspace whose preset downloads a gated model references presetOptions.modelAccessSecret, "
                "and that Secret, with key HF_TOKEN, is in the stack in the Workspace's namespace.",
    validate=validate_gated_models_have_token,
    enforcement_level=EnforcementLevel.MANDATORY,
)


# ---------------------------------------------------------------------------------------------------------
# 3. GPU pools are tainted

def _untainted_gpu_pools(pools: Iterable[Any]) -> list[tuple[str, str]]:
    """(pool name, VM size) of each GPU pool without the taint KAITO's inference pods tolerate."""
    return [(str(_get(p, "agentPoolName") or _get(p, "name")), str(_get(p, "vmSize")))
            for p in pools
            if GPU_VM_SIZE.match(str(_get(p, "vmSize", default="")))
            and GPU_TAINT not in _strings(_get(p, "nodeTaints"))]


def validate_gpu_pools_tainted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if AGENT_POOL.match(args.resource_type):
        pools: Sequence[Any] = [args.props]
    elif MANAGED_CLUSTER.match(args.resource_type):
        pools = _get(args.props, "agentPoolProfiles", default=[]) or []   # an inline GPU pool is no exception
    else:
        return
    for name, size in _untainted_gpu_pools(pools):
        # untainted, any pod (system add-ons, other tenants' jobs) can take the most expensive nodes
        report(f"GPU agent pool '{name}' ({size}) lacks the taint {GPU_TAINT} in nodeTaints, so any pod can be "
               "scheduled on its GPU nodes")


gpu_pools_tainted = ResourceValidationPolicy(
    name="gpu-pools-tainted",
    description=f"Every AKS agent pool with a GPU VM size (Standard_N*) has nodeTaints containing {GPU_TAINT}.",
    validate=validate_gpu_pools_tainted,
    enforcement_level=EnforcementLevel.MANDATORY,
)


# ---------------------------------------------------------------------------------------------------------
# 4. Workspaces are waited on and replaced on immutable changes

IDENTITY_ANNOTATION = "kaito-aks/identity"   # infra.render.common.IDENTITY_ANNOTATION (the pack runs without infra/)
SURGE_HASH_CHARS = 6                          # infra.names.SURGE_HASH_CHARS

def validate_workspace_lifecycle(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != WORKSPACE:
        return
    key, value = WAIT_FOR
    if _get(args.props, "metadata", "annotations", key) != value:
        report(f"Workspace {_k8s_id(args.props)} lacks the annotation {key}: {value}, so `pulumi up` would "
               "report success before the model serves")
    # replaceOnChanges is not sent to analyzers (AnalyzerResourceOptions has no such field in pulumi-policy
    # 1.21.0 / the engine's proto), so the policy checks what it can see: a replacement must delete first,
    # because the new Workspace has the same name.
    if args.opts.delete_before_replace is not True and not _named_by_identity(args.props):
        report(f"Workspace {_k8s_id(args.props)} must set deleteBeforeReplace: KAITO makes resource and "
               "inference.preset immutable, and its replacement reuses the name")


def _named_by_identity(props: Mapping[str, Any]) -> bool:
    """A surge-rollout Workspace: its name ends with the first 6 characters of its kaito-aks/identity annotation,
    so an immutable change is a new Workspace under a new name (created beside the old one, which is deleted after
    the switch), never a replacement reusing this name."""
    name = str(_get(props, "metadata", "name") or "")
    identity = str(_get(props, "metadata", "annotations", IDENTITY_ANNOTATION) or "")
    return len(identity) >= SURGE_HASH_CHARS and name.endswith(f"-{identity[:SURGE_HASH_CHARS]}")


workspace_lifecycle = ResourceValidationPolicy(
    name="workspace-waited-and-replaced",
    description=f"KAITO Workspaces carry {WAIT_FOR[0]}: {WAIT_FOR[1]} and deleteBeforeReplace "
                "(replaceOnChanges on resource and inference.preset is not visible to policies).",
    validate=validate_workspace_lifecycle,
    enforcement_level=EnforcementLevel.MANDATORY,
)


# ---------------------------------------------------------------------------------------------------------
# 5. Production clusters are hardened

def is_production(config: Mapping[str, Any]) -> bool:
    """The policy config's `production`, else the stack's kaito-aks:production, else a stack named prod*.

    The same rule as infra.settings (is_production). The engine gives a policy pack the stack's name and
    config in PULUMI_STACK and PULUMI_CONFIG.
    """
    if config.get("production") is not None:
        return _is_true(config["production"])
    stack_config = json.loads(os.environ.get("PULUMI_CONFIG") or "{}")
    if stack_config.get("kaito-aks:production") is not None:
        return _is_true(stack_config["kaito-aks:production"])
    return os.environ.get("PULUMI_STACK", "").split("/")[-1].startswith("prod")


def cluster_hardening_gaps(cluster: Mapping[str, Any]) -> list[str]:
    ranges = _strings(_get(cluster, "apiServerAccessProfile", "authorizedIPRanges"))
    private = _is_true(_get(cluster, "apiServerAccessProfile", "enablePrivateCluster"))
    gaps = []
    if not ranges and not private:
        gaps.append("has no API-server authorized IP ranges (apiServerAccessProfile.authorizedIPRanges; "
                    "set kaito-aks:cluster.apiServerAuthorizedIpRanges)")
    gaps += [f"opens its API server to the internet (authorized range {c})" for c in ranges if _is_world(c)]
    if not _is_true(_get(cluster, "oidcIssuerProfile", "enabled")):
        gaps.append("has no OIDC issuer (oidcIssuerProfile.enabled)")
    if not _is_true(_get(cluster, "securityProfile", "workloadIdentity", "enabled")):
        gaps.append("has no workload identity (securityProfile.workloadIdentity.enabled)")
    if str(_get(cluster, "networkProfile", "networkPolicy", default="") or "").lower() in ("", "none"):
        gaps.append("has no network-policy engine (networkProfile.networkPolicy), so NetworkPolicies are not enforced")
    return gaps


def validate_prod_cluster(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not MANAGED_CLUSTER.match(args.resource_type):
        return
    if not is_production(args.get_config()):
        args.not_applicable("not a production stack")
    name = _get(args.props, "resourceName") or args.name
    for gap in cluster_hardening_gaps(args.props):
        report(f"production AKS cluster '{name}' {gap}")


prod_cluster_hardened = ResourceValidationPolicy(
    name="prod-cluster-hardened",
    description="Production AKS clusters have API-server authorized IP ranges (or are private), an OIDC issuer, "
                "workload identity and a network-policy engine.",
    validate=validate_prod_cluster,
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={"production": {"type": "boolean"}}),
)


POLICIES = [no_public_load_balancer, gated_models_have_token, gpu_pools_tainted, workspace_lifecycle,
            prod_cluster_hardened]
