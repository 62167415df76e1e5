"""Which model KAITO will actually run for a stack's `model:` setting, per KAITO release line.

KAITO 0.6 (the AKS add-on) accepts only its 22 registered presets. KAITO 0.12 accepts its catalog (by
Hugging Face id or legacy short name) and, best effort, any other ``org/model`` id; it deprecated phi-2 and
removed the falcon presets. :func:`resolve` turns what the user wrote into what goes into the Workspace's
``inference.preset.name``, the name the server will answer to, and the facts sizing needs, or raises
:class:`ResolveError` with a message that names the replacement.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from infra.catalog import Catalog, KaitoRelease, ModelFacts, PresetV06


class ResolveError(ValueError):
    """The model can't be served by this KAITO version; the message says what to use instead."""


@dataclass(frozen=True)
class ResolvedModel:
    ref: str                    # what the stack wrote
    preset: str                 # Workspace inference.preset.name
    hf_id: str                  # the Hugging Face repo KAITO downloads (or packaged, for 0.6 presets)
    served_name: str            # the "model" the server answers to (GET /v1/models)
    path: str                   # "preset" (0.6 registry) | "catalog" (0.12) | "generic-hf" (0.12 best effort)
    facts: ModelFacts | None    # weights + KV geometry, when known
    preset_v06: PresetV06 | None
    runtimes: tuple[str, ...]
    distributed: bool           # can span nodes (vLLM + Ray)
    disk_gib: int               # KAITO's DiskStorageRequirement: where the weights land on the node
    gated: bool                 # needs an HF token to download
    secret_rule: str            # "required" | "forbidden" (0.6 webhook) | "recommended" | "optional" (0.12)
    notes: tuple[str, ...] = ()

    @property
    def context_limit(self) -> int | None:
        return self.facts.context_limit if self.facts else None


def resolve(
    ref: str,
    release: KaitoRelease,
    catalog: Catalog,
    user_facts: ModelFacts | None = None,
) -> ResolvedModel:
    if release.line == "0.6":
        return _resolve_v06(ref, release, catalog)
    return _resolve_v012(ref, release, catalog, user_facts)


def _resolve_v06(ref: str, release: KaitoRelease, catalog: Catalog) -> ResolvedModel:
    helm = "kaito.mode=helm (KAITO 0.12.0)"
    preset = release.presets.get(ref)
    if preset is None and "/" in ref:
        # An HF id KAITO 0.6 ships as a preset. Two presets download DeepSeek-R1-0528; prefer the one named after it.
        matches = [p for p in release.presets.values() if p.hf_id.lower() == ref.lower()]
        matches.sort(key=lambda p: p.name != ref.split("/")[-1].lower())
        preset = matches[0] if matches else None
        if preset is None:
            replacement = release.replacements.get(ref.lower())
            use = f"use the preset '{replacement}', or " if replacement else "use one of its presets, or "
            raise ResolveError(
                f"'{ref}' is not served by KAITO {release.version} (the AKS add-on accepts only its "
                f"{len(release.presets)} presets, not Hugging Face ids); {use}{helm}"
            )
    if preset is None:
        exact_case = next((p for p in release.presets if p.lower() == ref.lower()), None)
        if exact_case:
            raise ResolveError(f"KAITO {release.version} matches preset names exactly; write '{exact_case}'")
        newer = catalog.releases.get("0.12")
        if newer and (ref in newer.legacy_names):
            raise ResolveError(f"'{ref}' is a KAITO {newer.version} preset, not in {release.version}; use {helm}")
        raise ResolveError(
            f"'{ref}' is not a KAITO {release.version} preset{_did_you_mean(ref, release.presets)}"
        )
    facts = catalog.model_facts(preset.hf_id)
    notes = (preset.note,) if preset.note else ()
    return ResolvedModel(
        ref=ref,
        preset=preset.name,
        hf_id=preset.hf_id,
        served_name=preset.served_name or preset.name,
        path="preset",
        facts=facts,
        preset_v06=preset,
        runtimes=preset.runtimes,
        distributed=preset.distributed,
        disk_gib=preset.disk_gib,
        gated=preset.model_access_secret == "required",
        secret_rule=preset.model_access_secret,
        notes=notes,
    )


def _resolve_v012(ref: str, release: KaitoRelease, catalog: Catalog, user_facts: ModelFacts | None) -> ResolvedModel:
    addon = "kaito.mode=addon (0.6)"
    if "/" not in ref:
        name = ref.lower()
        if name in release.deprecated:
            repl = release.deprecated[name]["replacement"]
            raise ResolveError(f"'{ref}' is deprecated in KAITO {release.version}; use {repl}, or {addon}")
        if name in release.removed:
            info = release.removed[name]
            raise ResolveError(
                f"'{ref}' was removed in KAITO {info['since']}; use {info['replacement']}, or {addon}"
            )
        if name not in release.legacy_names:
            raise ResolveError(
                f"'{ref}' is not a KAITO {release.version} preset{_did_you_mean(name, release.legacy_names)}; "
                "or give a Hugging Face id (org/model)"
            )
        hf_id = release.in_catalog(release.legacy_names[name]) or release.legacy_names[name]
        preset_name = name
        path = "catalog"
    else:
        catalog_id = release.in_catalog(ref)
        short = next((s for s, h in release.legacy_names.items() if catalog_id and h.lower() == catalog_id.lower()), None)
        if catalog_id:
            # KAITO's own examples name catalog models by their short names; use them when there is one.
            hf_id, preset_name, path = catalog_id, short or catalog_id, "catalog"
        else:
            hf_id, preset_name, path = ref, ref, "generic-hf"
    facts = user_facts or catalog.model_facts(hf_id)
    if facts is None:
        raise ResolveError(
            f"'{ref}' is not in KAITO {release.version}'s catalog, so kaito-aks needs its facts to size it: "
            "set facts.weightsGiB (sum of its *.safetensors), facts.layers, facts.kvHeads, facts.headDim and "
            "facts.contextLimit (from its config.json)"
        )
    transformers_ok = path == "catalog" and any(hf_id.lower() == t.lower() for t in release.transformers_runtime)
    notes = ()
    if path == "generic-hf":
        notes = (
            f"not in KAITO {release.version}'s catalog: KAITO reads its config from Hugging Face at admission "
            "(best effort; needs egress to huggingface.co)",
        )
    return ResolvedModel(
        ref=ref,
        preset=preset_name,
        hf_id=hf_id,
        served_name=hf_id.split("/")[-1].lower(),
        path=path,
        facts=facts,
        preset_v06=None,
        runtimes=("vllm", "transformers") if transformers_ok else ("vllm",),
        distributed=True,
        disk_gib=int(facts.weights_gib + release.disk_base_gib),
        gated=facts.gated,
        secret_rule="recommended" if facts.gated else "optional",
        notes=notes,
    )


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
