"""The plan rendered: plain dicts and text that components/ turns into resources unchanged, and that
`python -m infra plan --manifests` writes as files. Pure functions of the Plan; nothing here talks to a cluster,
to Azure or to Pulumi.

- ``common``: API versions, ports, labels, taints, Service exposure (LoadBalancer spec, annotations, ranges)
- ``namespace_objects``: the Namespace, default-deny ingress, the HF token Secret, quota and limits
- ``model_objects``: per replica, the inference ConfigMap, Workspace, endpoint Service and NetworkPolicy
- ``nginx``: the gateway's nginx configuration and keys map as text (no Plan)
- ``gateway_objects``: the gateway's Deployment, Service, Secret, ConfigMap, budget and policy
- ``monitoring``: scrape objects, dashboard, alert rules and the Azure monitoring resources' arguments
- ``azure_args``: the AKS cluster, GPU pools, maintenance windows and KAITO's chart values
- ``stack_objects``: every Kubernetes object of a stack in apply order (the one assembly point)
"""
