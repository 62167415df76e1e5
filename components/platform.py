"""KaitoPlatform: the whole stack from its Plan -- cluster, namespace guardrails, models, gateway, checks."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi

from components import k8s
from components.cluster import KaitoCluster, KaitoClusterArgs
from components.endpoint_check import EndpointCheck
from components.gateway import Gateway, GatewayArgs
from components.model import ModelDeployment, ModelDeploymentArgs
from components.observability import Observability, ObservabilityArgs
from components.options import child_opts
from infra.plan import Plan
from infra.render import gateway_objects, namespace_objects, nginx


@dataclass(frozen=True)
class StackSecrets:
    """Secret settings as Pulumi secret Outputs (None when not set)."""

    hf_token: pulumi.Output[Any] | None = None
    alert_webhook_url: pulumi.Output[Any] | None = None
    api_keys: pulumi.Output[Any] | None = None


@dataclass(frozen=True)
class KaitoPlatformArgs:
    plan: Plan                   # what `python -m infra plan` shows: every decision is in it
    secrets: StackSecrets


class KaitoPlatform(pulumi.ComponentResource):
    """Everything ``python -m infra plan`` shows, as resources. No sizing decision is made here.

    Outputs (registered, and what the stack exports: :meth:`exports`): per model (``models``) the endpoint URL
    per replica, served model name, Azure size, nodes, $/hour and the endpoint checks' measurements;
    ``cluster_name``, ``resource_group``, ``gateway_url``, ``grafana_url``, ``kaito``, ``usd_per_hour``,
    ``kubeconfig`` (secret).
    """

    def __init__(self, name: str, args: KaitoPlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kaito-aks:index:KaitoPlatform", name, None, opts)
        plan, secrets = args.plan, args.secrets
        self.plan = plan
        self.cluster = KaitoCluster("cluster", KaitoClusterArgs(plan), opts=child_opts(self))
        k8s_opts = lambda deps=(): child_opts(self, provider=self.cluster.provider, depends_on=deps)

        ns = k8s.apply("namespace", namespace_objects.namespace(plan), k8s_opts())
        base = [ns]
        base.append(k8s.apply("default-deny", namespace_objects.default_deny_ingress(plan), k8s_opts([ns])))
        for obj in namespace_objects.namespace_guardrails(plan):
            base.append(k8s.apply(obj["metadata"]["name"], obj, k8s_opts([ns])))
        if namespace_objects.needs_hf_token(plan):
            if secrets.hf_token is None:
                raise pulumi.RunError("kaito-aks:hfToken: a gated model needs it; "
                                      "`pulumi config set --secret hfToken hf_...`")
            token = pulumi.Output.secret(secrets.hf_token)
            base.append(k8s.apply("hf-token", namespace_objects.hf_token_secret(plan, token), k8s_opts([ns])))

        gateway_labels = gateway_objects.pod_labels() if plan.settings.gateway_enabled else None
        self.models = {
            name: ModelDeployment(name, ModelDeploymentArgs(plan, name, self.cluster, base, gateway_labels),
                                  opts=child_opts(self))
            for name in plan.model_names
        }

        self.gateway: Gateway | None = None
        if plan.settings.gateway_enabled:
            if secrets.api_keys is None:
                raise pulumi.RunError("kaito-aks:apiKeys: the gateway needs API keys; "
                                      "`pulumi config set --secret apiKeys '[\"sk-...\"]'`")
            services = [rr.service for m in self.models.values() for rr in m.replicas]
            self.gateway = Gateway("gateway", GatewayArgs(plan, secrets.api_keys, self.cluster, [*base, *services]),
                                   opts=child_opts(self))

        self.observability: Observability | None = None
        if plan.settings.observability_enabled:
            replicas = [rr for m in self.models.values() for rr in m.replicas]
            self.observability = Observability("observability", ObservabilityArgs(
                plan=plan, resource_group_name=self.cluster.resource_group_name, cluster_id=self.cluster.cluster_id,
                alert_webhook_url=secrets.alert_webhook_url,
                k8s_provider=self.cluster.provider,
                # after the Workspaces: by then the managed Prometheus add-on has installed its CRDs
                k8s_depends_on=[*base, *[rr.service for rr in replicas], *[rr.workspace for rr in replicas],
                                *([self.gateway] if self.gateway else [])]),
                opts=child_opts(self))

        self.checks = self._endpoint_checks()
        self.register_outputs(self.exports())

    def _endpoint_checks(self) -> dict[str, list]:
        """One check per replica, after its endpoint has an address: direct, or through the gateway with a key."""
        settings = self.plan.settings.endpoint_check
        if not settings.enabled:
            return {}
        checks: dict[str, list] = {}
        for name, model in self.models.items():
            checks[name] = []
            for rr in model.replicas:
                r = rr.plan
                # the public path, after the slot's Service (moved to a new Workspace in surge) and the gateway
                url: pulumi.Input[str | None]
                api_key: pulumi.Output[str] | None
                deps: list[pulumi.Resource]
                if self.gateway is not None:
                    base = pulumi.Output.from_input(settings.url) if settings.url else self.gateway.url
                    url = base.apply(_under(nginx.replica_prefix(r.slot)))
                    api_key, deps = self.gateway.first_key, [self.gateway, rr.service, rr.workspace]
                else:
                    url = pulumi.Output.from_input(settings.url) if settings.url else rr.url
                    api_key, deps = None, [rr.service, rr.workspace]
                checks[name].append(EndpointCheck(
                    f"{r.slot}-check",
                    base_url=url,
                    runtime=r.runtime,
                    kaito_version=r.kaito_version,
                    expected_model=r.served_model,
                    api_key=api_key,
                    timeout_s=settings.timeout_seconds,
                    concurrency=settings.concurrency,
                    trigger=f"{r.workspace}|{r.identity}",   # a new replica behind the slot: check again
                    opts=child_opts(self, depends_on=deps),
                ))
        return checks

    def exports(self) -> dict:
        """What `pulumi stack output` shows: per model, and for the stack."""
        out_models = {}
        for name, model in self.models.items():
            replicas = self.plan.replicas_of(name)
            first = replicas[0]
            endpoint: pulumi.Output[str | None] | pulumi.Output[list[str]]
            if self.gateway is not None:
                endpoint = self.gateway.url.apply(_under(f"{nginx.model_prefix(name)}/v1"))
            else:
                endpoint = pulumi.Output.all(*[rr.url for rr in model.replicas]).apply(
                    lambda urls: [f"{u}/v1" for u in urls if u])
            checks = self.checks.get(name, [])
            out_models[name] = {
                "endpoint": endpoint,
                "served_model": first.served_model,
                "preset": first.preset,
                "instance_type": first.instance_type,
                "nodes_per_replica": first.nodes,
                "replicas": len(replicas),
                "usd_per_hour": round(sum(r.usd_per_hour for r in replicas), 4),
                "checks": [{"served_model": c.served_model, "latency_ms": c.latency_ms, "ttft_ms": c.ttft_ms,
                            "tokens_per_s": c.tokens_per_s, "checked_at": c.checked_at} for c in checks],
            }
        return {
            "models": out_models,
            "cluster_name": self.cluster.cluster_name,
            "resource_group": self.cluster.resource_group_name,
            "gateway_url": self.gateway.url if self.gateway else None,
            "grafana_url": self.observability.grafana_url if self.observability else None,
            "kaito": {"mode": self.plan.kaito_mode, "version": self.plan.kaito_version},
            "usd_per_hour": self.plan.usd_per_hour,
            "kubeconfig": self.cluster.kubeconfig,
        }


def _under(path: str) -> Callable[[str | None], str | None]:
    """``base`` + ``path`` (a route under the gateway), or None while the base address is unknown."""
    return lambda base: f"{base.rstrip('/')}{path}" if base else None
