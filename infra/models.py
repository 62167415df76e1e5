"""Which model KAITO will actually run for a stack's `model:` setting, for one KAITO release.

Releases up to 0.10 accept their registered presets (by name, or by the Hugging Face id a preset downloads), and
from 0.9 also any other ``org/model`` id. From 0.11 presets are Hugging Face ids of KAITO's model catalog, old short
names map to them, and any other ``org/model`` id is accepted best effort. Presets come and go between releases
(phi-2 deprecated in 0.8, falcon removed in 0.11). :func:`resolve` turns what the user wrote into what goes into the
Workspace's ``inference.preset.name``, the name the server will answer to, and the facts sizing needs, or raises
:class:`ResolveError` with a message that names the replacement.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from infra.catalog import Catalog, Dtype, KaitoRelease, ModelFacts, Preset, Runtime, SecretRule, version_key

Resolution = Literal["preset", "catalog", "generic-hf"]


class ResolveError(ValueError):
    """The model can't be served by this KAITO version; the message says what to use instead."""


@dataclass(frozen=True)
class ResolvedModel:
    ref: str                    # what the stack wrote
    preset: str                 # Workspace inference.preset.name
    hf_id: str                  # the Hugging Face repo KAITO downloads (or packaged, for 0.6 presets)
    served_name: str            # the "model" the server answers to (GET /v1/models)
    path: Resolution            # registered preset, catalog model (0.11+), or any Hugging Face id (0.9+, best effort)
    facts: ModelFacts | None    # weights + KV geometry, when known
    spec: Preset | None         # the registered preset (0.6-0.10), with 0.6's webhook requirements
    runtimes: tuple[Runtime, ...]
    distributed: bool           # can span nodes (vLLM + Ray)
    tensor_parallel: bool       # False: one GPU must hold the model (falcon-7b)
    disk_gib: int               # where the weights land on the node
    gated: bool                 # needs an HF token to download
    secret_rule: SecretRule     # required / forbidden (the webhook) / optional
    kaito_dtype: Dtype = "bfloat16"   # the --dtype KAITO passes unless the stack sets one
    notes: tuple[str, ...] = ()

    @property
    def context_limit(self) -> int | None:
        return self.facts.context_limit if self.facts else None


def resolve(ref: str, release: KaitoRelease, catalog: Catalog, user_facts: ModelFacts | None = None) -> ResolvedModel:
    if release.uses_model_catalog:
        return _resolve_catalog(ref, release, catalog, user_facts)
    return _resolve_preset(ref, release, catalog, user_facts)


def _resolve_preset(ref: str, release: KaitoRelease, catalog: Catalog, user_facts: ModelFacts | None) -> ResolvedModel:
    preset = release.presets.get(ref)
    if preset is None and "/" in ref:
        # An HF id a registered preset downloads. Two 0.6 presets download DeepSeek-R1-0528: prefer the one named
        # after it
        matches = [p for p in release.presets.values() if p.hf_id.lower() == ref.lower()]
        matches.sort(key=lambda p: p.name != ref.split("/")[-1].lower())
        preset = matches[0] if matches else None
        if preset is None:
            if release.generic_hf_ids:
                return _generic(ref, release, catalog, user_facts)
            replacement = release.replacements.get(ref.lower())
            use = f"use the preset '{replacement}', or " if replacement else "use one of its presets, or "
            raise ResolveError(
                f"'{ref}' is not served by KAITO {release.version} (it accepts only its {len(release.presets)} "
                f"presets, not Hugging Face ids); {use}{_newer_hint(catalog, release)}")
    if preset is None:
        raise ResolveError(_unknown_name(ref, release, catalog))
    facts = catalog.model_facts(preset.hf_id)
    gated = preset.model_access_secret == "required" or bool(facts and facts.gated)
    return ResolvedModel(
        ref=ref, preset=preset.name, hf_id=preset.hf_id, served_name=preset.served_name or preset.name,
        path="preset", facts=facts, spec=preset, runtimes=preset.runtimes, distributed=preset.distributed,
        tensor_parallel=preset.tensor_parallel,
        disk_gib=preset.disk_gib or int((facts.weights_gib if facts else 0) + release.disk_base_gib),
        gated=gated, secret_rule=preset.model_access_secret, kaito_dtype=preset.vllm_dtype,
        notes=(preset.note,) if preset.note else (),
    )


def _unknown_name(ref: str, release: KaitoRelease, catalog: Catalog) -> str:
    name = ref.lower()
    if name in release.deprecated:
        repl = release.deprecated[name].get("replacement")
        use = f"use {repl}, or " if repl else ""
        return f"'{ref}' is deprecated in KAITO {release.version}; {use}{_older_hint(catalog, release, name)}"
    exact_case = next((p for p in release.presets if p.lower() == name), None)
    if exact_case:
        return f"KAITO {release.version} matches preset names exactly; write '{exact_case}'"
    newer = _first_release_with(catalog, release, name)
    if newer is not None:
        return (f"'{ref}' is a KAITO preset from {newer.version} on, not in {release.version}; "
                f"{_newer_hint(catalog, release)}")
    return f"'{ref}' is not a KAITO {release.version} preset{_did_you_mean(ref, release.presets)}"


def _resolve_catalog(ref: str, release: KaitoRelease, catalog: Catalog, user_facts: ModelFacts | None) -> ResolvedModel:
    if "/" not in ref:
        name = ref.lower()
        if name in release.deprecated:
            repl = release.deprecated[name].get("replacement")
            use = f"use {repl}, or " if repl else ""
            raise ResolveError(f"'{ref}' is deprecated in KAITO {release.version}; "
                               f"{use}{_older_hint(catalog, release, name)}")
        if name in release.removed:
            info = release.removed[name]
            raise ResolveError(f"'{ref}' was removed in KAITO {info['since']}; use {info['replacement']}, or "
                               f"{_older_hint(catalog, release, name)}")
        if name not in release.legacy_names:
            raise ResolveError(f"'{ref}' is not a KAITO {release.version} preset"
                               f"{_did_you_mean(name, release.legacy_names)}; or give a Hugging Face id (org/model)")
        hf_id = release.in_catalog(release.legacy_names[name]) or release.legacy_names[name]
        preset_name = name
    else:
        catalog_id = release.in_catalog(ref)
        if not catalog_id:
            return _generic(ref, release, catalog, user_facts)
        short = next((s for s, h in release.legacy_names.items() if h.lower() == catalog_id.lower()), None)
        # KAITO's own examples name catalog models by their short names; use them when there is one.
        hf_id, preset_name = catalog_id, short or catalog_id
    facts = user_facts or catalog.model_facts(hf_id)
    if facts is None:
        raise ResolveError(_needs_facts(ref, release))
    transformers_ok = any(hf_id.lower() == t.lower() for t in release.transformers_runtime)
    return ResolvedModel(
        ref=ref, preset=preset_name, hf_id=hf_id, served_name=hf_id.split("/")[-1].lower(), path="catalog",
        facts=facts, spec=None, runtimes=("vllm", "transformers") if transformers_ok else ("vllm",),
        distributed=True, tensor_parallel=True, disk_gib=int(facts.weights_gib + release.disk_base_gib),
        gated=facts.gated, secret_rule="optional", kaito_dtype=_generated_dtype(facts),
    )


def _generic(ref: str, release: KaitoRelease, catalog: Catalog, user_facts: ModelFacts | None) -> ResolvedModel:
    """Any Hugging Face id (0.9+): KAITO reads its config from Hugging Face at admission, best effort."""
    facts = user_facts or catalog.model_facts(ref)
    if facts is None:
        raise ResolveError(_needs_facts(ref, release))
    return ResolvedModel(
        ref=ref, preset=ref, hf_id=ref, served_name=ref.split("/")[-1].lower(), path="generic-hf", facts=facts,
        spec=None, runtimes=("vllm",), distributed=True, tensor_parallel=True,
        disk_gib=int(facts.weights_gib + release.disk_base_gib), gated=facts.gated, secret_rule="optional",
        kaito_dtype=_generated_dtype(facts),
        notes=(f"not in KAITO {release.version}'s presets: KAITO reads its config from Hugging Face at admission "
               "(best effort; needs egress to huggingface.co)",),
    )


def _generated_dtype(facts: ModelFacts) -> Dtype:
    """KAITO's generator: auto for quantized models, else bfloat16 (presets/workspace/models/vllm_model.go)."""
    return "auto" if facts.quantization else "bfloat16"


def _needs_facts(ref: str, release: KaitoRelease) -> str:
    return (f"'{ref}' is not among KAITO {release.version}'s presets, so kaito-aks needs its facts to size it: set "
            "facts.weightsGiB (sum of its *.safetensors), facts.layers, facts.kvHeads, facts.headDim and "
            "facts.contextLimit (from its config.json)")


def _first_release_with(catalog: Catalog, release: KaitoRelease, name: str) -> KaitoRelease | None:
    """The first release after ``release`` that accepts the short name ``name``."""
    for other in sorted(catalog.releases.values(), key=lambda r: version_key(r.version)):
        if version_key(other.version) <= version_key(release.version):
            continue
        if name in other.presets or name in other.legacy_names:
            return other
    return None


def _newer_hint(catalog: Catalog, release: KaitoRelease) -> str:
    return f"kaito.mode=helm (installs KAITO {catalog.default_helm_version})"


def _older_hint(catalog: Catalog, release: KaitoRelease, name: str) -> str:
    older = [r for r in catalog.releases.values()
             if version_key(r.version) < version_key(release.version) and name in r.presets]
    if not older:
        return "another model"
    last = max(older, key=lambda r: version_key(r.version))
    return f"KAITO {last.version} or older (kaito.version)"


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
