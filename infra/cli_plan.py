"""`python -m infra plan`: what a stack would deploy, why each GPU size was chosen, and what it costs."""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from infra.errors import UserError, bounded_line, bounded_repr
from infra.plan import HOURS_PER_MONTH, Plan, build_plan
from infra.render.stack_objects import write_manifests
from infra.settings import load_stack_file


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="show the deployment plan of a stack (offline)",
                       description="Show what a stack would deploy, why each GPU size was chosen and its cost.")
    p.add_argument("--stack", required=True, help="stack name (reads Pulumi.<stack>.yaml)")
    p.add_argument("--file", help="stack file to read instead of Pulumi.<stack>.yaml")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--manifests", metavar="DIR", help="also write every Kubernetes object as YAML, one file each")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.manifests == "":
        raise UserError("--manifests is empty: name the directory to write the manifests to")
    plan = build_plan(load_stack_file(args.stack, args.file))
    if args.manifests:
        try:
            written = write_manifests(plan, pathlib.Path(args.manifests))
        except OSError as err:
            raise UserError(f"--manifests {bounded_repr(args.manifests, 120)}: can't write there "
                            f"({err.strerror or err}); name a directory that can be created, or an empty one") from None
        print(f"wrote {len(written)} manifests to {bounded_line(args.manifests)}", file=sys.stderr)
        if plan.settings.gateway_enabled:
            print(f"the gateway's API-keys Secret is not written (it holds the keys): python -m infra gateway-secret "
                  f"--stack {args.stack} --api-keys-env VAR | kubectl apply -f -", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print(render_table(plan))
    return 0


def hardening_line(plan: Plan) -> str:
    """Whether the stack gets production hardening, why, and how clients reach the models."""
    settings = plan.settings
    reach = ("through the nginx gateway, with API keys" if settings.gateway_enabled
             else "directly on each model's LoadBalancer, without API keys (gateway.enabled: true adds them)")
    if settings.access.internal:
        reach += ", on a private IP"
    return (f"Production: {'yes' if settings.is_production else 'no'} ({settings.production_reason}); clients reach "
            f"the models {reach}")


def rollout_line(plan: Plan) -> str:
    surge = plan.surge()
    recreate = [m for m in plan.model_names if m not in surge["models"]]
    parts = []
    if surge["models"]:
        quota = ", ".join(f"{fam}: +{n}" for fam, n in sorted(surge["extra_quota_vcpus"].items()))
        parts.append(f"{', '.join(surge['models'])} surge: a change runs the new replicas beside the old ones until "
                     f"their checks pass, up to +${surge['extra_usd_per_hour']:.3f}/hour and {quota} vCPUs of quota "
                     "meanwhile")
    if recreate:
        parts.append(f"{', '.join(recreate)} recreate: a change deletes the replica first; the model is down until "
                     "the new one is ready")
    return "Rollouts: " + "; ".join(parts)


def upgrade_line(plan: Plan) -> str:
    up = plan.upgrades()
    window = up["maintenance_window"]
    if window:
        every = f" every {window['interval_weeks']} weeks" if window["interval_weeks"] > 1 else ""
        when = (f"in the maintenance window, {window['day_of_week']}s {window['start_time']} "
                f"(UTC{window['utc_offset']}) for {window['duration_hours']} h{every}")
    else:
        when = "at any time (no maintenance window: set cluster.maintenanceWindow)"
    return (f"Upgrades: GPU pools one node at a time without a surge node (maxSurge {up['gpu_pool_max_surge']}), so no "
            f"GPU quota beyond the above; a replica is down while its node is reimaged; {when}")


def render_table(plan: Plan) -> str:
    header = ("replica (Workspace)", "model -> preset", "runtime", "KAITO", "Azure size", "nodes x GPUs",
              "GPU GiB need/have", "$/hour")
    rows = []
    for r in plan.replicas:
        model = r.model_ref if r.model_ref == r.preset else f"{r.model_ref} -> {r.preset}"
        if r.resolution == "generic-hf":
            model += " (HF)"
        rows.append((
            r.slot if r.workspace == r.slot else f"{r.slot} ({r.workspace})", model, r.runtime,
            f"{r.kaito_version} {r.kaito_mode}", r.instance_type + (" spot" if r.spot else ""),
            f"{r.nodes} x {r.gpus_per_node}", f"{r.gpu_memory_required_gib:.0f}/{r.gpu_memory_available_gib:.0f}",
            f"{r.usd_per_hour:.3f}",
        ))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]   # every row has every column
    line = lambda cells: "  ".join(str(c).ljust(w) if i < len(cells) - 1 else str(c).rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    out = [f"Stack {plan.stack}: KAITO {plan.kaito_version} ({plan.kaito_mode}), "
           f"cluster {plan.settings.cluster_name} in {plan.settings.cluster.location}", hardening_line(plan)]
    if plan.kaito_version_source != "stack":
        out.append(f"KAITO version {plan.kaito_version} is {plan.kaito_version_source}. `pulumi up` checks the version "
                   "the add-on really runs before creating GPU pools; set kaito.version to plan for another")
    out += ["",
           line(header), line(tuple("-" * w for w in widths))]
    out += [line(row) for row in rows]
    out.append("")
    out.append(f"Total: ${plan.usd_per_hour:.3f}/hour, ${plan.usd_per_month:,.2f}/month ({HOURS_PER_MONTH} h) "
               "for the GPU pools (system pool, disks and load balancers not included)")
    budget = plan.settings.budget.max_usd_per_hour
    if budget:
        out.append(f"Budget: ${budget:.2f}/hour ({plan.usd_per_hour / budget:.0%} used)")
    out.append("")
    out.append("Why:")
    for name in plan.model_names:
        first = plan.replicas_of(name)[0]
        out.append(f"  {name}: {first.reason}")
        if first.max_model_len:
            out.append(f"    max-model-len {first.max_model_len} ({first.max_model_len_source})")
        if first.inference_config is not None and first.config_map is not None:
            flags = ", ".join(f"{k} {v}" for k, v in first.inference_config["vllm"].items())
            out.append(f"    inference config {first.config_map}: vllm {flags} "
                       "(KAITO's template for the version, with the plan's flags)")
        if first.alternatives:
            alts = ", ".join(f"{a.nodes} x {a.instance_type} ${a.usd_per_hour:.3f}" for a in first.alternatives[:3])
            out.append(f"    alternatives: {alts}")
        for note in first.notes:
            out.append(f"    note: {note}")
        if first.pool_owner == "kaito":
            out.append(f"    nodes: KAITO {first.kaito_version} provisions them itself (it reuses no pre-created "
                       "pool), so quota errors show in the Workspace's status, not in `pulumi up`; `pulumi destroy` "
                       "deletes the Workspace and KAITO then deletes its nodes")
    out.append("")
    quota = ", ".join(f"{fam}: {n} vCPUs" for fam, n in sorted(plan.quota_vcpus().items()))
    out.append(f"GPU quota needed in {plan.settings.cluster.location}: {quota}")
    out.append(upgrade_line(plan))
    out.append(rollout_line(plan))
    spot = ", spot replicas at spot prices" if any(r.spot for r in plan.replicas) else ""
    out.append(f"Prices: {plan.price_source}{spot}")
    for note in plan.price_notes:
        out.append(f"  note: {note}")
    return "\n".join(out)
