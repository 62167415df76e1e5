"""Gateway: the stack's one authenticated address in front of every model (nginx, configured by infra.render.nginx
and infra.render.gateway_objects)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from components import k8s
from components.cluster import KaitoCluster
from components.options import child_opts
from infra import api_keys
from infra.plan import Plan
from infra.render import gateway_objects, nginx


@dataclass(frozen=True)
class GatewayArgs:
    plan: Plan
    api_keys: pulumi.Output[Any]                 # the kaito-aks:apiKeys secret setting, as set
    cluster: KaitoCluster
    depends_on: Sequence[pulumi.Resource] = ()   # the namespace guardrails and the model Services it routes to


class Gateway(pulumi.ComponentResource):
    """nginx Deployment + LoadBalancer Service; API keys live only in a Kubernetes Secret built from the
    ``kaito-aks:apiKeys`` secret setting, and a key change rolls the pods one at a time (no downtime).

    Outputs: ``url`` (http://<address>), ``address``, ``first_key`` (secret: what the endpoint checks authenticate
    with).
    """

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kaito-aks:index:Gateway", name, None, opts)
        plan, api_keys, cluster, depends_on = args.plan, args.api_keys, args.cluster, list(args.depends_on)
        k8s_opts = lambda deps: child_opts(self, provider=cluster.provider, depends_on=deps)
        keys = pulumi.Output.secret(api_keys).apply(_parse_keys)
        keys_map: pulumi.Output[str] = pulumi.Output.secret(keys.apply(nginx.render_keys_map))
        keys_sha: pulumi.Output[str] = pulumi.Output.secret(keys_map.apply(nginx.keys_map_checksum))

        conf = k8s.apply("gateway-conf", gateway_objects.config_map(plan), k8s_opts(depends_on))
        secret = k8s.apply("gateway-keys", gateway_objects.keys_secret(plan, keys_map), k8s_opts(depends_on))
        deployment_obj = gateway_objects.deployment(plan, keys_checksum=keys_sha)
        deployment = k8s.apply("gateway", deployment_obj, k8s_opts([conf, secret, *depends_on]))
        k8s.apply("gateway-pdb", gateway_objects.disruption_budget(plan), k8s_opts(depends_on))
        k8s.apply("gateway-netpol", gateway_objects.network_policy(plan), k8s_opts(depends_on))
        service = k8s.apply_service("gateway-service", gateway_objects.service(plan), k8s_opts([deployment]))

        self.address = k8s.load_balancer_address(service)
        self.url = self.address.apply(lambda a: f"http://{a}" if a else None)
        self.first_key: pulumi.Output[str] = pulumi.Output.secret(keys.apply(lambda k: k[0]))
        self.register_outputs({"url": self.url, "address": self.address, "first_key": self.first_key})


def _parse_keys(raw: Any) -> list[str]:
    """The apiKeys setting, validated; a mistake stops `pulumi up` with the one-line reasons (which never quote a
    key), not a traceback."""
    try:
        return api_keys.parse_api_keys(raw)
    except api_keys.ApiKeysError as err:
        raise pulumi.RunError("invalid kaito-aks settings:\n  " + "\n  ".join(err.lines)) from None
