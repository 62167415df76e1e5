"""Tables generated from the catalog for the README: what each KAITO release does, and what it accepts.

The README holds their output between ``<!-- generated: ... -->`` markers; a test regenerates them and fails when
the README differs, so the tables are never typed by hand.
"""
from __future__ import annotations

from infra.catalog import Catalog, KaitoRelease
from infra.models import ResolveError, resolve
from infra.sizing import MemorySource, SizingError, SizingRequest, choose

NODES = {
    "reuse-by-instance-type": "reuses kaito-aks's pool (labels + instance type)",
    "kaito-provisions": "provisions its own nodes (no pool from kaito-aks)",
    "reuse-by-labels": "reuses kaito-aks's pool (labels)",
    "reuse-by-workspace-labels": "reuses kaito-aks's pool (labels + kaito.sh/workspace)",
}


def modes(catalog: Catalog) -> list[tuple[str, KaitoRelease, MemorySource]]:
    """(column title, release, memory source) for the README's seed-model table."""
    assert catalog.addon_default is not None
    first_addon = catalog.release(catalog.known_versions[0])
    assumed = catalog.release(catalog.addon_default.version)
    helm = catalog.release(catalog.default_helm_version)
    return [(f"add-on {first_addon.version}", first_addon, "sku-table"),
            (f"add-on {assumed.version} (assumed)", assumed, "sku-table"),
            (f"Helm {helm.version}", helm, "node-labels")]


def seed_table(catalog: Catalog) -> str:
    columns = modes(catalog)
    lines = ["| model | " + " | ".join(title for title, _, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for ref in catalog.readme_models:
        cells = []
        for _, release, source in columns:
            try:
                model = resolve(ref, release, catalog)
                chosen = choose(SizingRequest(model, "vllm", release, memory_source=source), catalog).chosen
                cells.append(f"`{model.preset}`: {chosen.nodes} x {chosen.instance_type.removeprefix('Standard_')} "
                             f"${chosen.usd_per_hour:.3f}/h")
            except (ResolveError, SizingError) as err:
                cells.append("refused: " + _short_reason(str(err)))
        lines.append(f"| `{ref}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short_reason(message: str) -> str:
    """The fix part of a refusal ("use the preset 'x'"), for a table cell."""
    for marker in ("use the preset", "use "):
        if marker in message:
            return message[message.index(marker):].split(", or")[0].split(";")[0]
    return message.split(";")[0]


def version_table(catalog: Catalog) -> str:
    lines = ["| KAITO | sizing | pre-created nodes (add-on) | spot | served name | any HF id | Helm path | vLLM |",
             "|---|---|---|---|---|---|---|---|"]
    seen: set[str] = set()
    for version in catalog.known_versions:
        release = catalog.release(version)
        if release.line in seen:
            continue
        seen.add(release.line)
        versions = ", ".join(v for v in catalog.known_versions if catalog.release(v).line == release.line)
        sizing = ("webhook requirements + count" if release.sizing == "kaito-0.6-webhook" else
                  f"estimator{' (/1.05)' if release.estimator and release.estimator.overhead_weight_factor else ''}")
        lines.append(
            f"| {versions} | {sizing} | {NODES[release.addon_nodes]} | {'yes' if release.spot_toleration else 'no'} "
            f"| {'preset' if release.served_name_rule == 'preset' else 'HF id, last part'} "
            f"| {'yes' if release.generic_hf_ids else 'no'} | {'yes' if release.helm_byo else 'no'} "
            f"| {release.vllm_version} |")
    return "\n".join(lines)


TABLES = {"seeds": seed_table, "versions": version_table}
