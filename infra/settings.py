"""Stack settings: typed, validated, and read the same way offline and inside a Pulumi run.

Settings live in the stack file under the ``kaito-aks:`` namespace, one config key per group::

    config:
      kaito-aks:cluster: {location: eastus, apiServerAuthorizedIpRanges: [203.0.113.0/24]}
      kaito-aks:kaito: {mode: addon}
      kaito-aks:models:
        - {name: phi3, model: phi-3-mini-4k-instruct}
      kaito-aks:hfToken: {secure: AAABA...}        # pulumi config set --secret hfToken ...

Offline (``python -m infra plan``) the stack file is read directly; inside ``pulumi up`` the same keys come
from ``pulumi.Config``. Both go through :func:`settings_from_config`, so a mistake gives the same message in
both places: one line per problem, naming the key path (``kaito-aks:models[1].model``) and the fix.

Shape and value checks live here; checks that need the KAITO version's rules (is this preset served by
0.12? does this size fit?) live in ``infra.plan``.
"""
from __future__ import annotations

import difflib
import hashlib
import ipaddress
import pathlib
import re
import urllib.parse
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from infra.catalog import Dtype, KaitoMode, Runtime
from infra.errors import UserError, bounded_line, bounded_repr
from infra.ip_ranges import breadth_problem
from infra.stack_yaml import load_yaml_mapping

PROJECT = "kaito-aks"
# Where kaito-aks installs KAITO's Helm chart (the add-on runs it in kube-system). A stack's namespace gets a
# default-deny NetworkPolicy, a ResourceQuota and a LimitRange, so it must never be a namespace someone else runs.
KAITO_HELM_NAMESPACE = "kaito-workspace"
RESERVED_NAMESPACES = frozenset({
    "default", KAITO_HELM_NAMESPACE,
    # namespaces AKS add-ons and extensions run in (Azure Policy, app routing, Calico network policy, Istio)
    "gatekeeper-system", "app-routing-system", "calico-system", "tigera-operator", "aks-istio-system",
})
PROJECT_DIR = pathlib.Path(__file__).resolve().parent.parent
SECRET_KEYS = ("hfToken", "apiKeys", "alertWebhookUrl")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")        # always used with fullmatch
# Hugging Face repo ids: ASCII letters, digits, '-', '_', '.'; no '--' or '..'; not starting or ending with '-' or
# '.'; at most 96 characters per part (huggingface_hub's validate_repo_id).
_HF_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?", re.ASCII)
_AKS_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?", re.ASCII)
_RESOURCE_GROUP = re.compile(r"[A-Za-z0-9._()-]{0,89}[A-Za-z0-9_()-]", re.ASCII)
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_CONTEXT = 10_000_000            # tokens; no model has more
MAX_RANGES = 200                     # AKS allows 200 authorized IP ranges; LB source ranges are NSG rules
# Parallel requests in the endpoint check's load probe: endpointCheck.concurrency, `check-endpoint --concurrency`,
# infra.endpoint and the EndpointCheck provider all take this range and default.
MIN_CHECK_CONCURRENCY = 1
MAX_CHECK_CONCURRENCY = 64
DEFAULT_CHECK_CONCURRENCY = 4

Rollout = Literal["surge", "recreate"]     # how a change reaches a model (ModelSettings.rollout)


def is_dns_label(value: str, max_len: int = 63) -> bool:
    return len(value) <= max_len and _DNS_LABEL.fullmatch(value) is not None


def is_hf_id(value: str) -> bool:
    parts = value.split("/")
    return (len(parts) == 2 and all(_HF_PART.fullmatch(p) for p in parts)
            and not any(".." in p or "--" in p for p in parts))


def is_aks_name(value: str) -> bool:
    return _AKS_NAME.fullmatch(value) is not None


def is_resource_group_name(value: str) -> bool:
    return _RESOURCE_GROUP.fullmatch(value) is not None


def _plain_text_problem(value: str) -> str | None:
    """Why a setting string can't be used as written, or None: no control characters, no edge whitespace."""
    if any(not ch.isprintable() for ch in value):
        return "contains a control character (a stray newline or tab?); write it on one line"
    if value != value.strip():
        return "starts or ends with whitespace; remove it"
    return None


class _Settings(BaseModel):
    """camelCase keys in YAML (``instanceType``), snake_case in Python; unknown keys are errors."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True,
        allow_inf_nan=False,          # `.inf` is not a budget, a timeout or a model size
    )

    @field_validator("*", mode="before")
    @classmethod
    def _whole_strings(cls, v: Any) -> Any:
        """Every string setting, at any depth, is used whole: a trailing newline is an error, not a name."""
        for text in _strings_in(v):
            problem = _plain_text_problem(text)
            if problem:
                raise ValueError(f"{bounded_repr(text)} {problem}")
        return v


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for item in value[:MAX_RANGES + 1] for s in _strings_in(item)]
    return []


def _cidr(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{bounded_repr(value)} is not an IP range; write it as CIDR, e.g. 203.0.113.0/24")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{bounded_repr(value)} is not an IP range; write it as CIDR, e.g. 203.0.113.0/24") from None


def _cidrs(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    if len(value) > MAX_RANGES:
        raise ValueError(f"{len(value)} ranges; at most {MAX_RANGES} (Azure's limit): summarize them")
    return [_cidr(x) for x in value]


class SystemPool(_Settings):
    vm_size: str = Field("Standard_D4ds_v5", pattern=r"^Standard_[A-Za-z0-9_]+$")
    count: StrictInt = Field(2, ge=1, le=20)


class MaintenanceWindow(_Settings):
    """When AKS may upgrade Kubernetes and reimage nodes (GPU nodes reload their model afterwards)."""

    enabled: StrictBool | None = Field(None, description="default: on in production (weekly), off elsewhere (any time)")
    day_of_week: Literal["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"] = "Sunday"
    start_time: str = Field("00:00", description="HH:MM in utcOffset's time zone")
    duration_hours: StrictInt = Field(4, ge=4, le=24, description="AKS needs at least 4 hours for auto-upgrade")
    utc_offset: str = Field("+00:00", description="e.g. +01:00")
    interval_weeks: StrictInt = Field(1, ge=1, le=4)

    @field_validator("start_time")
    @classmethod
    def _hh_mm(cls, v: str) -> str:
        if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", v):
            raise ValueError(f"{bounded_repr(v)} is not a time of day as HH:MM, e.g. 02:00")
        return v

    @field_validator("utc_offset")
    @classmethod
    def _offset(cls, v: str) -> str:
        if not re.fullmatch(r"[+-](0[0-9]|1[0-4]):[0-5][0-9]", v):
            raise ValueError(f"{bounded_repr(v)} is not a UTC offset as +HH:MM or -HH:MM, e.g. +01:00")
        return v


class ClusterSettings(_Settings):
    name: str | None = Field(None, description="AKS cluster name; default kaito-<stack>")
    resource_group: str | None = Field(None, description="resource group; default rg-<cluster name>")
    location: str = Field("eastus", pattern=r"^[a-z0-9]+$")
    kubernetes_version: str | None = Field(None, pattern=r"^\d+\.\d+(\.\d+)?$")
    system_pool: SystemPool = SystemPool()
    api_server_authorized_ip_ranges: tuple[str, ...] = ()
    network_policy: Literal["cilium", "azure", "calico"] = "cilium"
    azure_rbac: StrictBool = Field(False, description="Entra ID + Azure RBAC for Kubernetes, local accounts off")
    admin_group_object_ids: tuple[str, ...] = ()
    maintenance_window: MaintenanceWindow = MaintenanceWindow()

    @field_validator("name")
    @classmethod
    def _cluster_name(cls, v: str | None) -> str | None:
        if v is not None and not is_aks_name(v):
            raise ValueError(f"{bounded_repr(v)}: AKS names are 1-63 ASCII letters, digits, '-' or '_', starting and "
                             "ending with a letter or digit")
        return v

    @field_validator("resource_group")
    @classmethod
    def _resource_group_name(cls, v: str | None) -> str | None:
        if v is not None and not is_resource_group_name(v):
            raise ValueError(f"{bounded_repr(v)}: resource group names are 1-90 ASCII letters, digits, '-', '_', "
                             "'.', '(' or ')', not ending with '.'")
        return v

    @field_validator("admin_group_object_ids")
    @classmethod
    def _object_ids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            if not _GUID.fullmatch(item):
                raise ValueError(f"{bounded_repr(item)} is not an Entra ID object id (a GUID)")
        return v

    @field_validator("api_server_authorized_ip_ranges", mode="before")
    @classmethod
    def _ranges(cls, v: Any) -> Any:
        return _cidrs(v)

    @field_validator("api_server_authorized_ip_ranges")
    @classmethod
    def _not_the_internet(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        problem = breadth_problem(v)
        if problem:
            raise ValueError(f"{problem}; list the CIDRs of your admins and CI runners")
        return v


class KaitoSettings(_Settings):
    mode: KaitoMode = "addon"
    version: str | None = Field(None, description=(
        "the KAITO release the plan follows: helm, the chart installed; addon, the version the add-on runs "
        "(default: infra/catalog/kaito.yaml)"))
    provisioner_identity: StrictBool | None = Field(
        None, description="removed: refused with the reason (see the validator)")

    @field_validator("provisioner_identity")
    @classmethod
    def _identity_removed(cls, v: bool | None) -> bool | None:
        if v is not None:
            raise ValueError(
                "no longer exists: since July 2025 the AKS add-on's gpu-provisioner runs in the AKS control plane "
                "and needs no role assignment or federated credential (AKS release notes 2025-06-17), so the "
                "Contributor grant it made was unused; delete kaito.provisionerIdentity from the stack file"
            )
        return v

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_text(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):   # YAML reads `version: 0.12` as a number
            raise ValueError(f"{bounded_repr(v)} is a number; write the release as text with its patch, e.g. "
                             "version: \"0.12.0\"")
        return v

    @field_validator("version")
    @classmethod
    def _version_shape(cls, v: str | None) -> str | None:
        # no leading zeros: the text is the Helm chart version and the image tag, so 0.12.007 is not 0.12.7
        if v is not None and not re.fullmatch(r"(?:0|[1-9]\d{0,2})\.(?:0|[1-9]\d{0,2})\.(?:0|[1-9]\d{0,2})", v):
            raise ValueError(f"{bounded_repr(v)} is not a KAITO release version (MAJOR.MINOR.PATCH without "
                             "leading zeros, e.g. 0.12.0)")
        return v


class ModelFactsSettings(_Settings):
    """For a Hugging Face id that kaito-aks's catalog doesn't know: what sizing needs (from config.json)."""

    weights_gib: float = Field(alias="weightsGiB", gt=0, le=10_000, description="sum of the *.safetensors sizes, GiB")
    layers: StrictInt = Field(ge=1, le=1000, description="num_hidden_layers")
    kv_heads: StrictInt = Field(ge=1, le=1024, description="num_key_value_heads")
    head_dim: StrictInt = Field(ge=1, le=4096, description="head_dim, or hidden_size / num_attention_heads")
    context_limit: StrictInt = Field(2048, ge=1, le=MAX_CONTEXT, description="max_position_embeddings")
    gated: StrictBool = Field(False, description="the repo needs an accepted licence and an HF token")


class ModelSettings(_Settings):
    name: str = Field(description="Workspace name: a DNS label")
    model: str = Field(description="a KAITO preset name, or a Hugging Face id org/model")
    runtime: Runtime = "vllm"
    instance_type: str = Field("auto",
                               description="'auto' (cheapest that KAITO accepts and that fits) or an Azure size")
    max_model_len: StrictInt | None = Field(None, ge=1, le=MAX_CONTEXT)
    dtype: Dtype | None = None
    replicas: StrictInt = Field(1, ge=1, le=16)
    spot: StrictBool = False
    rollout: Rollout | None = Field(
        None, description="how a change reaches the model: surge (new replica beside the old, traffic moves after its "
                          "check) or recreate (delete first); default surge in production, recreate elsewhere")
    facts: ModelFactsSettings | None = None

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        # the exact limit (52 for a Workspace, '-rN' included) depends on the replicas; infra.plan checks it
        if not is_dns_label(v):
            raise ValueError(
                f"{bounded_repr(v)} must be a DNS label (lower-case letters, digits, '-', starting and ending with a "
                "letter or digit, at most 63 characters): KAITO names the Workspace after it"
            )
        return v

    @field_validator("model")
    @classmethod
    def _model_ref(cls, v: str) -> str:
        if not v:
            raise ValueError("empty; name a KAITO preset (e.g. phi-3-mini-4k-instruct) or a Hugging Face id")
        if "/" in v:
            if not is_hf_id(v):
                raise ValueError(f"{bounded_repr(v)} is not a Hugging Face id; write it as org/model with ASCII "
                                 "letters, digits, '-', '_' or '.', e.g. microsoft/Phi-3-mini-4k-instruct")
        elif not _HF_PART.fullmatch(v):
            raise ValueError(f"{bounded_repr(v)} is not a KAITO preset name (ASCII letters, digits, '-', '_', '.'); "
                             "e.g. phi-3-mini-4k-instruct, or a Hugging Face id org/model")
        return v

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, v: str) -> str:
        if v != "auto" and not re.fullmatch(r"[Ss][Tt][Aa][Nn][Dd][Aa][Rr][Dd]_[A-Za-z0-9_]{1,60}", v):
            raise ValueError(f"{bounded_repr(v)} is neither 'auto' nor an Azure VM size name like "
                             "Standard_NC24ads_A100_v4")
        return v


class BudgetSettings(_Settings):
    max_usd_per_hour: float | None = Field(None, gt=0, le=1_000_000)


class AccessSettings(_Settings):
    """Who may reach the endpoints (the gateway's, or each model's LoadBalancer without a gateway)."""

    source_ranges: tuple[str, ...] = ()
    allow_any_source: StrictBool = Field(False, description="allow 0.0.0.0/0; must be said explicitly")
    internal: StrictBool = Field(False, description="Azure internal load balancer (private IP in the cluster VNet)")
    dns_label: str | None = Field(None, description="Azure DNS label: <label>.<region>.cloudapp.azure.com")

    @field_validator("source_ranges", mode="before")
    @classmethod
    def _ranges(cls, v: Any) -> Any:
        return _cidrs(v)

    @field_validator("dns_label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        if v is not None and not is_dns_label(v):
            raise ValueError(f"{bounded_repr(v)} must be a DNS label (lower-case letters, digits, '-', at most 63)")
        return v

    @model_validator(mode="after")
    def _no_silent_world(self) -> AccessSettings:
        problem = breadth_problem(self.source_ranges)
        if problem and not self.allow_any_source:
            raise ValueError(
                f"sourceRanges: {problem}; list your client ranges, or set access.allowAnySource: true to mean it"
            )
        return self


class GatewaySettings(_Settings):
    enabled: StrictBool | None = Field(None, description="authenticated nginx gateway; default on when production")
    replicas: StrictInt = Field(2, ge=1, le=10)
    rate_limit_per_minute: StrictInt = Field(600, ge=1, le=1_000_000, description="per API key")
    unauthenticated_per_minute: StrictInt = Field(60, ge=1, le=100_000,
                                            description="requests without a valid key, per client address")
    max_body_kib: StrictInt = Field(1024, ge=1, le=1024 * 1024, description="largest request body")
    read_timeout_seconds: StrictInt = Field(600, ge=1, le=86_400,
                                            description="longest generation the gateway waits for")


class EndpointCheckSettings(_Settings):
    enabled: StrictBool = True
    url: str | None = Field(None, description="check this URL instead of the Service address (internal endpoints)")
    timeout_seconds: StrictInt = Field(2400, ge=1, le=86_400, description="deadline for the endpoint to answer")
    concurrency: StrictInt = Field(DEFAULT_CHECK_CONCURRENCY, ge=MIN_CHECK_CONCURRENCY, le=MAX_CHECK_CONCURRENCY)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            problem = http_url_problem(v)
            if problem:
                raise ValueError(problem)       # never quoted: a URL can carry a password or a token anywhere
        return v


MAX_URL_CHARS = 2048


def _split_plain_url(url: str) -> urllib.parse.SplitResult | Literal["spaces", "port"]:
    """A URL's parts, or the first rule every URL setting shares that it breaks: at most MAX_URL_CHARS printable
    characters without spaces ("spaces"); a port, if any, that is a number from 0 to 65535 ("port")."""
    if len(url) > MAX_URL_CHARS or any(ch.isspace() or not ch.isprintable() for ch in url):
        return "spaces"
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port                         # raises for ports that aren't 0-65535 numbers
    except ValueError:
        return "port"
    return parts


def webhook_url_problem(url: object) -> str | None:
    """Why the secret ``alertWebhookUrl`` can't be an action group's webhook, or None. Never quotes it."""
    if not isinstance(url, str) or not url:
        return "must be an https URL (a string)"
    parts = _split_plain_url(url)
    if parts == "spaces":
        return f"must be an https URL of at most {MAX_URL_CHARS} characters without spaces"
    if parts == "port":
        return "must be an https URL with a numeric port"
    if parts.scheme != "https" or not parts.hostname:
        return "must be an https URL with a host (Azure Monitor calls it over TLS)"
    if parts.username is not None or parts.password is not None or parts.fragment:
        return "must be an https URL without user:password@ or a #fragment"
    return None


def http_url_problem(url: str) -> str | None:
    """Why ``url`` is not a plain http(s) base URL, or None."""
    parts = _split_plain_url(url)
    if parts == "spaces":
        return "must be an http(s) URL without spaces"
    if parts == "port":
        return "must be an http(s) URL with a numeric port from 1 to 65535"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host, e.g. http://10.0.0.9"
    if parts.port == 0:
        return "must be an http(s) URL with a numeric port from 1 to 65535"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@); URLs are shown in logs and outputs"
    if parts.query or parts.fragment:
        return "must be a base URL without '?query' or '#fragment'"
    return None


class GrafanaSettings(_Settings):
    """Azure Managed Grafana linked to the stack's Azure Monitor workspace, with the stack's dashboard."""

    enabled: StrictBool = Field(True, description="create Azure Managed Grafana (when observability is on)")
    admin_group_object_ids: tuple[str, ...] | None = Field(
        None, description="Entra ID groups made Grafana Admin; default: cluster.adminGroupObjectIds")
    deployer_principal_type: Literal["User", "ServicePrincipal"] = Field(
        "User", description="what runs `pulumi up` (made Grafana Admin to upload the dashboard): a user (az login) "
                            "or a service principal (CI)")

    @model_validator(mode="before")
    @classmethod
    def _bool_shorthand(cls, data: Any) -> Any:
        return {"enabled": data} if isinstance(data, bool) else data       # `grafana: false`

    @field_validator("admin_group_object_ids")
    @classmethod
    def _object_ids(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for item in v or ():
            if not _GUID.fullmatch(item):
                raise ValueError(f"{bounded_repr(item)} is not an Entra ID object id (a GUID)")
        return v


_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+", re.ASCII)


class AlertSettings(_Settings):
    """Prometheus alert rules (Azure Monitor rule groups) and who is notified (an Azure Monitor action group)."""

    enabled: StrictBool = True
    action_group_emails: tuple[str, ...] = Field((), max_length=20, description="emailed when an alert fires")
    # the webhook itself is the secret setting kaito-aks:alertWebhookUrl; this key only says so when it's used
    webhook_url: str | None = Field(None, description="refused: use the secret alertWebhookUrl")
    queue_depth: StrictInt = Field(10, ge=1, le=100_000, description="waiting requests per replica, for 10 minutes")
    kv_cache_usage: float = Field(0.9, gt=0, le=1, description="KV-cache fraction in use per replica, for 10 minutes")
    ttft_p95_seconds: float = Field(5.0, gt=0, le=3600, description="p95 time to first token per replica")
    gateway_5xx_ratio: float = Field(0.05, alias="gateway5xxRatio", gt=0, le=1,
                                     description="share of a route's gateway responses that are 5xx")
    model_down_minutes: StrictInt = Field(5, ge=1, le=1440, description="how long a replica is down before it alerts")
    node_not_ready_minutes: StrictInt = Field(10, ge=1, le=1440, description="how long a GPU node is NotReady")

    @field_validator("action_group_emails")
    @classmethod
    def _emails(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            if not _EMAIL.fullmatch(item):
                raise ValueError(f"{bounded_repr(item)} is not an email address")
        return v

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        if v is not None:   # never echoed: a webhook URL carries its own credential (a path token, a ?sig=)
            raise ValueError("a webhook URL is a credential; remove it here and run `pulumi config set --secret "
                             "alertWebhookUrl https://...` so it is encrypted")
        return v


class ObservabilitySettings(_Settings):
    """Managed Prometheus scraping the models and the gateway, a Grafana dashboard, alert rules (README
    "Observability")."""

    enabled: StrictBool | None = Field(None, description="default: on in production")
    grafana: GrafanaSettings = GrafanaSettings()
    alerts: AlertSettings = AlertSettings()


class Settings(_Settings):
    """Everything a stack says, plus the stack name and which secrets are set (never their values)."""

    stack: str
    cluster: ClusterSettings = ClusterSettings()
    kaito: KaitoSettings = KaitoSettings()
    models: tuple[ModelSettings, ...] = Field(min_length=1, max_length=100)
    budget: BudgetSettings = BudgetSettings()
    namespace: str = "llm"
    production: bool | None = Field(None, description="prod hardening; default: stack name starts with 'prod'")
    access: AccessSettings = AccessSettings()
    gateway: GatewaySettings = GatewaySettings()
    endpoint_check: EndpointCheckSettings = EndpointCheckSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    secrets_set: frozenset[str] = frozenset()

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        if not is_dns_label(v) or v.startswith("kube-"):
            raise ValueError(f"{bounded_repr(v)} must be a DNS label (lower-case letters, digits, '-', at most 63) "
                             "not starting with 'kube-'")
        if v in RESERVED_NAMESPACES:
            raise ValueError(f"{v!r} is a namespace Kubernetes, AKS or KAITO itself uses, and the stack would put a "
                             "default-deny NetworkPolicy and quotas on it; choose the stack's own, e.g. 'llm'")
        return v

    @model_validator(mode="after")
    def _derived_names(self) -> Settings:
        """Names derived from the stack name are checked like given ones (``--stack a.b`` makes no AKS name)."""
        if self.cluster.name is None and not is_aks_name(self.cluster_name):
            raise ValueError(
                f"cluster.name: the default, {bounded_repr(self.cluster_name)} (from the stack name), is not a valid "
                "AKS name (ASCII letters, digits, '-', '_'); set cluster.name explicitly"
            )
        if self.cluster.resource_group is None and not is_resource_group_name(self.resource_group):
            raise ValueError(
                f"cluster.resourceGroup: the default, {bounded_repr(self.resource_group)}, is not a valid resource "
                "group name; set cluster.resourceGroup explicitly"
            )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: dict[str, int] = {}
        for i, m in enumerate(self.models):
            if m.name in seen:
                raise ValueError(
                    f"models[{i}].name: {m.name!r} is already used by models[{seen[m.name]}]; names become "
                    "Workspace names and must be unique"
                )
            seen[m.name] = i
        return self

    @property
    def is_production(self) -> bool:
        return self.production if self.production is not None else self.stack.lower().startswith("prod")

    @property
    def production_reason(self) -> str:
        """Why :attr:`is_production` is what it is (the plan prints it)."""
        if self.production is not None:
            return f"production: {str(self.production).lower()}"
        return f"the stack name {'starts' if self.is_production else 'does not start'} with 'prod'"

    @property
    def cluster_name(self) -> str:
        """``kaito-<stack>``; a name past AKS's 63 characters is cut and ends in a hash of the whole stack name, so
        two long stack names that share their first 54 characters never get the same cluster."""
        if self.cluster.name:
            return self.cluster.name
        name = f"kaito-{self.stack}"
        return name if len(name) <= 63 else f"{name[:54]}-{hashlib.sha256(self.stack.encode()).hexdigest()[:8]}"

    @property
    def resource_group(self) -> str:
        return self.cluster.resource_group or f"rg-{self.cluster_name}"

    def rollout_of(self, model: ModelSettings) -> Rollout:
        return model.rollout or ("surge" if self.is_production else "recreate")

    @property
    def maintenance_window(self) -> MaintenanceWindow | None:
        """The window AKS upgrades and reimages in, or None: AKS may do it at any time."""
        window = self.cluster.maintenance_window
        enabled = window.enabled if window.enabled is not None else self.is_production
        return window if enabled else None

    @property
    def gateway_enabled(self) -> bool:
        return self.gateway.enabled if self.gateway.enabled is not None else self.is_production

    @property
    def observability_enabled(self) -> bool:
        """Monitoring is on when the stack says so; by default in production."""
        return self.observability.enabled if self.observability.enabled is not None else self.is_production

    @property
    def grafana_enabled(self) -> bool:
        return self.observability_enabled and self.observability.grafana.enabled

    @property
    def alerts_enabled(self) -> bool:
        return self.observability_enabled and self.observability.alerts.enabled

    @property
    def alert_webhook_set(self) -> bool:
        """The secret alertWebhookUrl is set (its value is only read by `pulumi up`)."""
        return "alertWebhookUrl" in self.secrets_set


# ---------------------------------------------------------------------------------------------------------
# Loading: a stack file offline, pulumi.Config online, one validation path.

_TOP_KEYS = {
    name: (field.alias or name)
    for name, field in Settings.model_fields.items()
    if name not in ("stack", "secrets_set")
}
KNOWN_KEYS = tuple(sorted(set(_TOP_KEYS.values()) | set(SECRET_KEYS)))


def settings_from_config(
    stack: str,
    values: dict[str, Any],
    secret_keys: set[str],
    location_fallback: str | None = None,
) -> Settings:
    """Validate the ``kaito-aks:`` config of a stack.

    ``values`` maps un-namespaced keys (``models``, ``cluster``, ...) to their parsed values; secret values
    are never needed, only ``secret_keys``: which of ``hfToken`` / ``apiKeys`` are set *as secrets*.
    ``location_fallback`` is ``azure-native:location`` when the stack sets it.
    Raises :class:`UserError` with one line per problem.
    """
    problems: list[str] = []
    for key in values:
        if key not in KNOWN_KEYS:
            problems.append(f"{PROJECT}:{key}: unknown setting{_did_you_mean(key, KNOWN_KEYS)}")
    for key in SECRET_KEYS:
        if key in values and key not in secret_keys:
            problems.append(
                f"{PROJECT}:{key}: is stored in plain text; remove it and run "
                f"`pulumi config set --secret {key} <value>` so it is encrypted"
            )
    data: dict[str, Any] = {"stack": stack, "secretsSet": frozenset(k for k in SECRET_KEYS if k in secret_keys)}
    for key, value in values.items():
        if key in _TOP_KEYS.values():
            data[key] = value
    if location_fallback and isinstance(data.get("cluster", {}), dict) and "location" not in data.get("cluster", {}):
        data["cluster"] = {**data.get("cluster", {}), "location": location_fallback}
    if "models" not in data:
        problems.append(
            f"{PROJECT}:models: no models; add at least one, e.g. "
            "`kaito-aks:models: [{name: phi3, model: phi-3-mini-4k-instruct}]`"
        )
    try:
        settings = Settings.model_validate(data)
    except ValidationError as err:
        problems.extend(_format_validation_error(err, skip_missing_models="models" not in data))
        settings = None
    if problems:
        raise UserError(problems)
    assert settings is not None
    return settings


def _format_validation_error(err: ValidationError, skip_missing_models: bool) -> list[str]:
    lines = []
    errors = err.errors(include_url=False)
    item_errors = any(len(e["loc"]) > 1 and e["loc"][0] == "models" for e in errors)
    for e in errors:
        loc = list(e["loc"])
        if loc == ["models"] and (skip_missing_models or (item_errors and e["type"] == "too_short")):
            continue  # the items' own errors say more
        # a model_validator's message may itself start with the path it is about ("models[1].name: ...")
        message = e["msg"].removeprefix("Value error, ")
        path = _key_path(loc)
        if e["type"] == "extra_forbidden":
            parent_fields = _fields_at(loc[:-1])
            lines.append(f"{PROJECT}:{path}: unknown setting{_did_you_mean(str(loc[-1]), parent_fields)}")
            continue
        if e["type"] == "missing":
            lines.append(f"{PROJECT}:{path}: required, but not set")
            continue
        inner = re.fullmatch(r"(models\[\d+\]\.\w+|\w+(?:\.\w+)*): (.*)", message, flags=re.DOTALL)
        if inner and not loc:
            path, message = inner.group(1), inner.group(2)
        elif inner and e["type"] == "value_error" and inner.group(1).split(".")[0] in _fields_at(loc):
            path, message = f"{path}.{inner.group(1)}", inner.group(2)
        got = e.get("input")
        # pydantic names its own classes ("instance of BudgetSettings", "a valid tuple"): say what to write instead
        if e["type"] in ("model_type", "model_attributes_type", "dict_type"):
            message = "must be a mapping of settings (`key: value` lines under it), not a single value"
        elif e["type"] in ("tuple_type", "list_type"):
            message = "must be a list, e.g. [a, b] (or one `- item` line each)"
        elif e["type"] == "int_type":       # strict: `true` is not 1, and "2" is text
            message = "must be a whole number, written without quotes, e.g. 2"
        elif e["type"] == "bool_type":      # strict: 1 and "yes" are not booleans
            message = "must be true or false, written without quotes"
        suffix = ""
        if e["type"] not in ("value_error", "assertion_error") and not isinstance(got, (dict, list)):
            suffix = f" (got {bounded_repr(got)})"
        lines.append(f"{PROJECT}:{path}: {message}{suffix}")
    return lines


def _key_path(loc: list) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_at(loc: list) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or to_camel(n)) == part or n == part), None)
        if field is None:
            return None
        ann = field.annotation
        model = _first_model(ann)
    return model


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found:
            return found
    return None


def _fields_at(loc: list) -> tuple[str, ...]:
    model = _model_at(loc)
    if model is None:
        return ()
    names = [f.alias or to_camel(n) for n, f in model.model_fields.items()]
    return tuple(n for n in names if n not in ("stack", "secretsSet"))


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if choices:
        hint += f" (known: {', '.join(choices)})"
    return hint


def stack_file(stack: str, path: str | pathlib.Path | None = None) -> pathlib.Path:
    return pathlib.Path(path) if path is not None else PROJECT_DIR / f"Pulumi.{stack}.yaml"


def load_stack_file(stack: str, path: str | pathlib.Path | None = None) -> Settings:
    """Offline: read ``Pulumi.<stack>.yaml`` (or ``path``) and validate its ``kaito-aks:`` settings."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", stack) or stack in (".", ".."):
        raise UserError(f"--stack: {bounded_repr(stack)} is not a stack name (ASCII letters, digits, '-', '_', '.')")
    if path is not None and str(path) == "":
        raise UserError("--file is empty: name the stack file, or leave --file out to read Pulumi.<stack>.yaml")
    file = stack_file(stack, path)
    try:
        doc = load_yaml_mapping(file)
    except FileNotFoundError:
        if path is not None:
            raise UserError(f"--file {bounded_repr(str(path), 120)}: no such file") from None
        stacks = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in PROJECT_DIR.glob("Pulumi.*.yaml"))
        raise UserError(
            f"{file}: no such stack file; create it with `pulumi stack init {stack}`, or use one of: "
            f"{', '.join(stacks) or 'none'}"
        ) from None
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise UserError(f"{file}: `config:` must be a mapping of settings")
    return settings_from_stack_config(stack, config)


def settings_from_stack_config(stack: str, config: dict[str, Any]) -> Settings:
    """Validate a stack file's `config:` mapping (fully qualified keys; `{secure: ...}` for secrets)."""
    values: dict[str, Any] = project_defaults()   # what Pulumi injects from Pulumi.yaml in a real run
    secret_keys: set[str] = set()
    problems: list[str] = []
    for full_key, value in config.items():
        text = str(full_key)
        namespace, sep, key = text.partition(":")
        if not sep or not namespace or not key:
            problems.append(f"{bounded_repr(text)}: config keys are `namespace:name` (Pulumi refuses others); "
                            f"write `{PROJECT}:{bounded_line(key or namespace, 40)}`")
            continue
        if namespace != PROJECT:
            if _looks_like_project(namespace):
                problems.append(f"{bounded_repr(text)}: settings are read under `{PROJECT}:` only; write "
                                f"`{PROJECT}:{bounded_line(key, 40)}`")
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            problem = _ciphertext_problem(value["secure"])
            if problem:
                problems.append(f"{PROJECT}:{bounded_line(key, 40)}: {problem}")
            secret_keys.add(key)  # encrypted: we only need to know it is set
        values[key] = value
    try:
        settings = settings_from_config(stack, values, secret_keys,
                                        location_fallback=config.get("azure-native:location"))
    except UserError as err:
        raise UserError(problems + err.lines) from None
    if problems:
        raise UserError(problems)
    return settings


def _looks_like_project(namespace: str) -> bool:
    """A namespace meant as ``kaito-aks`` (``kaito_aks``, `` kaito-aks``, ``Kaito-AKS``, ``kaito-ask``)."""
    folded = re.sub(r"[^a-z0-9]", "", namespace.lower())
    return difflib.SequenceMatcher(None, folded, "kaitoaks").ratio() >= 0.8


class _FromEnvironment:
    """The ``secure:`` value of a secret a run takes from the environment (the Automation driver's --secret-env):
    set, with no ciphertext in the file. An object, not text, so no stack file can claim it."""

    def __repr__(self) -> str:
        return "(from the environment)"


SECRET_FROM_ENVIRONMENT = _FromEnvironment()


def _ciphertext_problem(ciphertext: object) -> str | None:
    """Why ``{secure: ...}`` can't be a value Pulumi encrypted (base64, or ``v1:nonce:ciphertext``), or None."""
    if ciphertext is SECRET_FROM_ENVIRONMENT:
        return None
    if not isinstance(ciphertext, str) or not ciphertext:
        return "`secure:` holds no ciphertext; set the value with `pulumi config set --secret`"
    if not re.fullmatch(r"[A-Za-z0-9+/=:_-]{1,65536}", ciphertext) or ciphertext.startswith(("hf_", "sk-")):
        return ("`secure:` holds text Pulumi didn't encrypt (it may be the secret itself, in plain text); remove it "
                "and set the value with `pulumi config set --secret`")
    return None


def project_defaults() -> dict[str, Any]:
    """Defaults declared in Pulumi.yaml's typed `config:` section (Pulumi passes them to the program too)."""
    try:
        project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text()) or {}
    except FileNotFoundError:
        return {}
    out = {}
    for key, decl in (project.get("config") or {}).items():
        name = str(key).removeprefix(f"{PROJECT}:")
        if ":" not in name and isinstance(decl, dict) and "default" in decl:
            out[name] = decl["default"]
    return out


def load_from_pulumi() -> Settings:
    """Inside ``pulumi up``/``preview``: the same settings, read through ``pulumi.Config``."""
    import json

    import pulumi
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = {}
    secret_keys: set[str] = set()
    prefix = f"{PROJECT}:"
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    for full_key in sorted(keys):
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        raw = runtime_config.get_config(full_key)
        if runtime_config.is_config_secret(full_key):
            secret_keys.add(key)      # its value is read by the component that needs it, as a secret Output
            continue
        try:
            values[key] = json.loads(raw)
        except (TypeError, ValueError):
            values[key] = raw
        except RecursionError:
            raise UserError(f"{full_key}: nested too deeply to read; a setting nests at most 4 levels") from None
    location = pulumi.Config("azure-native").get("location")
    return settings_from_config(pulumi.get_stack(), values, secret_keys, location_fallback=location)
