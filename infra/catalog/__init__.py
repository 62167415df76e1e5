"""The catalogs kaito-aks decides from, loaded from the YAML files next to this module.

- ``models.yaml``          facts about Hugging Face models (weights, KV-cache geometry, context, gated)
- ``azure_gpu_skus.yaml``  Azure GPU VM sizes (GPUs, memory, compute capability, price, retirement, GFD labels)
- ``kaito-<line>.yaml``    one KAITO release line each (0.6 ... 0.12): its versions, its rules as named values, its SKU
                           table and presets. A line that shares most of another's data ``extends`` it and states only
                           what changed (``skus_removed``, ``presets_added``, ``preset_overrides``, ``catalog_added``).
- ``kaito.yaml``           the default version per mode, and the evidence for what the AKS add-on runs

This module parses, merges and indexes; it decides nothing. Every KAITO-version difference the code needs is a named
field or property of :class:`KaitoRelease`: code asks the release, never a version string.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import functools
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

CATALOG_DIR = pathlib.Path(__file__).resolve().parent
GIB = 1024**3

SizingRule = Literal["kaito-0.6-webhook", "estimator"]
AddonNodes = Literal["reuse-by-instance-type", "kaito-provisions", "reuse-by-labels", "reuse-by-workspace-labels"]
ServedNameRule = Literal["preset", "hf-last-segment-lower"]
TransformersApi = Literal["kaito-chat", "openai-chat"]
SecretRule = Literal["required", "forbidden", "optional"]
Runtime = Literal["vllm", "transformers"]                     # KAITO's inference runtimes
KaitoMode = Literal["addon", "helm"]      # how KAITO is installed: the AKS add-on, or its Helm chart (BYO nodes)
Dtype = Literal["auto", "float16", "bfloat16", "float32"]     # vLLM's --dtype values KAITO and the stack use


@dataclass(frozen=True)
class ModelFacts:
    """What sizing needs to know about a model's weights and KV cache."""

    hf_id: str
    weights_gib: float
    layers: int
    kv_heads: int
    head_dim: int
    context_limit: int
    gated: bool = False
    architecture: str | None = None
    attention_heads: int | None = None
    kv_lora_rank: int | None = None  # MLA models (DeepSeek V3 family) cache a compressed latent
    qk_rope_head_dim: int = 0
    quantization: str | None = None
    source: str = ""

    @property
    def kv_cache_bytes_per_token(self) -> int:
        """KAITO's BytesPerToken (fp16 hard-coded): generator.go calculateKVCacheTokenSize."""
        if self.kv_lora_rank is not None:
            elements = self.kv_lora_rank + self.qk_rope_head_dim
        else:
            elements = 2 * self.kv_heads * self.head_dim
        return elements * self.layers * 2


@dataclass(frozen=True)
class AzureGpuSize:
    name: str
    family: str
    vendor: str
    gpu_model: str
    gpus: int
    gpu_memory_gib: float
    vcpus: int
    compute_capability: float | None
    usd_per_hour: float | None
    retired: _dt.date | None
    kaito_name: str | None = None
    nvml_memory_mib: int | None = None        # GFD's nvidia.com/gpu.memory per GPU (None: not sourced)
    gfd_product: str | None = None            # GFD's nvidia.com/gpu.product (None: not sourced)
    vllm_gpu_memory_utilization: float | None = None   # the GPU needs less than KAITO's default (A10: 0.82)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,) if not self.kaito_name else (self.name, self.kaito_name)

    @property
    def node_gpu_memory_gib(self) -> float:
        """GPU memory of one VM, all its GPUs, as Azure sells it."""
        return self.gpus * self.gpu_memory_gib


@dataclass(frozen=True)
class KaitoSku:
    """A row of KAITO's own SKU table: memory is the node's total, in GiB."""

    name: str
    gpus: int
    total_gpu_memory_gib: int
    gpu_model: str
    nvme: bool = False


@dataclass(frozen=True)
class WebhookRequirements:
    """KAITO 0.6's webhook checks of a preset against a SKU (api/v1beta1/workspace_validation.go @ v0.6.0)."""

    gpus: int                             # GPUCountRequirement
    total_gpu_memory_gib: float           # TotalGPUMemoryRequirement
    per_gpu_memory_gib: float             # PerGPUMemoryRequirement


@dataclass(frozen=True)
class Preset:
    """A registered KAITO inference preset (KAITO 0.6-0.10; later releases use the model catalog).

    The GPU requirements are KAITO 0.6's webhook checks; presets of later releases don't have them (their sizing
    comes from the model's facts and the node estimator).
    """

    name: str
    hf_id: str
    runtimes: tuple[Runtime, ...]
    model_access_secret: SecretRule
    distributed: bool                     # SupportDistributedInference: may span nodes (vLLM + Ray)
    served_name: str | None = None        # when GET /v1/models lists another name than the preset's
    tensor_parallel: bool = True          # False: the preset disables tensor parallelism (falcon-7b)
    webhook: WebhookRequirements | None = None   # 0.6 only
    disk_gib: int | None = None           # DiskStorageRequirement
    vllm_dtype: Dtype = "float16"
    note: str | None = None


@dataclass(frozen=True)
class EstimatorConstants:
    """KAITO's node estimator (0.7+): pkg/workspace/estimator/.../estimator.go."""

    gpu_memory_utilization: float
    weight_expansion_factor: float
    base_overhead_gib: float
    overhead_weight_factor: float         # 0.05 from 0.11.0; 0 before (no /1.05)
    default_max_model_len: int
    multi_node_needs_distributed_preset: bool   # 0.7-0.10: a non-distributed preset over one node is an error


@dataclass(frozen=True)
class KaitoRelease:
    """One KAITO release, with its rules as named values (docs/kaito-versions.md)."""

    version: str
    line: str
    date: str
    commit: str
    note: str                             # a patch-level caveat, or ""
    sizing: SizingRule
    gpu_memory_utilization: float | None  # KAITO's --gpu-memory-utilization; None: 0.6's per-GPU formula
    max_model_len_required: bool          # 0.6: the webhook demands one for count > 1 or small multi-GPU SKUs
    sku_lookup_case_sensitive: bool
    spot_toleration: bool                 # inference pods tolerate kubernetes.azure.com/scalesetpriority=spot
    served_name_rule: ServedNameRule
    generic_hf_ids: bool                  # any org/model Hugging Face id is accepted
    transformers_api: TransformersApi     # what the transformers runtime serves
    addon_nodes: AddonNodes               # how KAITO treats pre-created nodes under node auto-provisioning
    helm_byo: bool                        # kaito-aks's Helm path (bring-your-own nodes sized from GFD labels) works
    vllm_version: str
    disk_base_gib: int                    # catalog models: DiskStorageRequirement = weights + this
    min_compute_capability: float         # GPUs below it don't run this release's vLLM (0: no known limit)
    crd_mark: str                         # a CRD ("crd:<name>") or Workspace field ("field:<path>") new in this line
    skus: dict[str, KaitoSku]
    estimator: EstimatorConstants | None = None      # KAITO's node estimator (0.7+)
    physical_fit: EstimatorConstants | None = None   # 0.6: the memory model kaito-aks checks vLLM's fit with
    byo_chart_values: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, Preset] = field(default_factory=dict)
    replacements: dict[str, str] = field(default_factory=dict)
    legacy_names: dict[str, str] = field(default_factory=dict)
    deprecated: dict[str, dict] = field(default_factory=dict)
    removed: dict[str, dict] = field(default_factory=dict)
    transformers_runtime: tuple[str, ...] = ()
    catalog: tuple[str, ...] = ()
    inference_config_template: dict = field(default_factory=dict)   # KAITO's default inference_config.yaml

    # --- named capabilities -----------------------------------------------------------------------------------
    @property
    def uses_model_catalog(self) -> bool:
        """Presets are Hugging Face ids of KAITO's model catalog (0.11+), not registered preset names."""
        return bool(self.catalog)

    @property
    def has_estimator(self) -> bool:
        return self.sizing == "estimator"

    @property
    def memory_model(self) -> EstimatorConstants:
        """The memory model sizing evaluates: KAITO's estimator, or for 0.6 kaito-aks's physical-fit model."""
        model = self.estimator or self.physical_fit
        assert model is not None, f"the catalog gives KAITO {self.version} no memory model"
        return model

    @property
    def reuses_pre_created_nodes(self) -> bool:
        """Under node auto-provisioning (the add-on), KAITO counts Ready nodes kaito-aks created; False: KAITO
        provisions every node itself (0.7), so kaito-aks must not create a pool."""
        return self.addon_nodes != "kaito-provisions"

    @property
    def nodes_need_workspace_labels(self) -> bool:
        """Reused nodes must carry kaito.sh/workspace and kaito.sh/workspacenamespace (0.11+)."""
        return self.addon_nodes == "reuse-by-workspace-labels"

    @property
    def workspace_has_count(self) -> bool:
        """The Workspace's resource.count decides the node count (0.6); later releases estimate it themselves."""
        return self.sizing == "kaito-0.6-webhook"

    def kaito_sku(self, name: str) -> KaitoSku | None:
        """KAITO's lookup of an instance type (case-sensitive before 0.10)."""
        if name in self.skus:
            return self.skus[name]
        if not self.sku_lookup_case_sensitive:
            for sku_name, sku in self.skus.items():
                if sku_name.lower() == name.lower():
                    return sku
        return None

    def in_catalog(self, hf_id: str) -> str | None:
        """The catalog's exact spelling of ``hf_id`` (matched case-insensitively), or None."""
        wanted = hf_id.lower()
        return next((c for c in self.catalog if c.lower() == wanted), None)


@dataclass(frozen=True)
class AddonDefault:
    version: str
    source: str
    date: str


class UnknownKaitoVersionError(ValueError):
    """The catalog has no rules for that version; the message lists the known ones."""


@dataclass(frozen=True)
class Catalog:
    models: dict[str, ModelFacts]
    sizes: dict[str, AzureGpuSize]
    releases: dict[str, KaitoRelease]          # by exact version, e.g. 0.11.0
    price_source: str
    default_helm_version: str = ""
    addon_default: AddonDefault | None = None
    addon_evidence: tuple[dict, ...] = ()
    readme_models: tuple[str, ...] = ()

    def model_facts(self, hf_id: str) -> ModelFacts | None:
        wanted = hf_id.lower()
        return next((m for key, m in self.models.items() if key.lower() == wanted), None)

    def size(self, name: str) -> AzureGpuSize | None:
        """An Azure size by its Azure name or KAITO's spelling of it (exact case)."""
        return self.sizes.get(name) or next((s for s in self.sizes.values() if name in s.names), None)

    def size_ignoring_case(self, name: str) -> AzureGpuSize | None:
        return next((s for s in self.sizes.values() if name.lower() in (n.lower() for n in s.names)), None)

    @property
    def known_versions(self) -> tuple[str, ...]:
        return tuple(sorted(self.releases, key=version_key))

    def release(self, version: str) -> KaitoRelease:
        """The rules of ``version``. A newer patch release of a known line follows that line's newest known patch
        (patch releases change no sizing or admission rule in any line kaito-aks knows, except 0.7.0's readiness
        fix, which 0.7.1 carries), so a cluster the add-on moved to 0.11.2 can still be planned; anything else is
        refused with the known versions."""
        if version in self.releases:
            return self.releases[version]
        line = ".".join(version.split(".")[:2])
        same_line = [r for r in self.releases.values() if r.line == line]
        if same_line and re.fullmatch(r"\d+\.\d+\.\d+", version):
            newest = max(same_line, key=lambda r: version_key(r.version))
            if version_key(version) > version_key(newest.version):
                note = f"a patch release kaito-aks hasn't seen: planned by {newest.version}'s rules"
                return dataclasses.replace(newest, version=version, date="", commit="", note=note)
        raise UnknownKaitoVersionError(
            f"kaito-aks has no rules for KAITO {version}; it knows {', '.join(self.known_versions)}")

    def lines_newest_first(self) -> tuple[KaitoRelease, ...]:
        """The newest known release of every line, newest line first."""
        lines = {r.line for r in self.releases.values()}
        return tuple(sorted((self.latest_of_line(line) for line in lines), key=lambda r: version_key(r.version),
                            reverse=True))

    def latest_of_line(self, line: str) -> KaitoRelease:
        return max((r for r in self.releases.values() if r.line == line), key=lambda r: version_key(r.version))


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


# ---------------------------------------------------------------------------------------------------------
# Loading

def _load_yaml(name: str) -> Any:
    return yaml.safe_load((CATALOG_DIR / name).read_text())


def _model_facts(hf_id: str, raw: dict) -> ModelFacts:
    return ModelFacts(hf_id=hf_id, **raw)


def _merged_line(name: str, files: dict[str, dict]) -> dict[str, Any]:
    """A line's data with what it ``extends`` (or takes ``skus_from``) merged in, the changes applied in order."""
    raw = files[name]
    if "extends" in raw:
        out = _merged_line(str(raw["extends"]), files)
    elif "skus_from" in raw:
        out = {"skus": copy.deepcopy(_merged_line(str(raw["skus_from"]), files)["skus"])}
    else:
        out = {}
    out = copy.deepcopy(out)
    for key, value in raw.items():
        if key in ("extends", "skus_from"):
            continue
        if key == "rules":
            out["rules"] = {**out.get("rules", {}), **value}
        elif key == "skus_removed":
            out["skus"] = {k: v for k, v in out["skus"].items() if k not in value}
        elif key == "presets_added":
            out["presets"] = {**out.get("presets", {}), **value}
        elif key == "preset_overrides":
            out["presets"] = {n: {**p, **value.get(n, {})} for n, p in out.get("presets", {}).items()}
        elif key == "catalog_added":
            out["catalog"] = [*out.get("catalog", []), *value]
        elif key in ("deprecated", "removed", "replacements", "legacy_names"):
            out[key] = {**out.get(key, {}), **(value or {})}
        else:
            out[key] = value
    out["line"] = str(raw.get("line", name))
    out["versions"] = raw["versions"]           # versions are never inherited
    return out


def _preset(name: str, row: dict) -> Preset:
    row = dict(row)
    row["runtimes"] = tuple(row["runtimes"])
    if "gpus" in row:
        row["webhook"] = WebhookRequirements(row.pop("gpus"), row.pop("total_gpu_memory_gib"),
                                             row.pop("per_gpu_memory_gib"))
    return Preset(name=name, **row)


def _releases(data: dict[str, Any]) -> list[KaitoRelease]:
    rules = data["rules"]
    skus = {name: KaitoSku(name=name, **row) for name, row in data.get("skus", {}).items()}
    deprecated = data.get("deprecated") or {}
    presets = {n: _preset(n, row) for n, row in (data.get("presets") or {}).items() if n not in deprecated}
    estimator = EstimatorConstants(**rules["estimator"]) if rules.get("estimator") else None
    physical_fit = EstimatorConstants(**rules["physical_fit"]) if rules.get("physical_fit") else None
    util = rules["gpu_memory_utilization"]
    out = []
    for version, meta in data["versions"].items():
        meta = meta or {}
        out.append(KaitoRelease(
            version=str(version), line=data["line"], date=str(meta.get("date", "")), commit=str(meta.get("commit", "")),
            note=str(meta.get("note", "")),
            sizing=rules["sizing"], gpu_memory_utilization=None if util == "kaito-0.6-formula" else float(util),
            max_model_len_required=rules["max_model_len_required"],
            sku_lookup_case_sensitive=rules["sku_lookup_case_sensitive"], spot_toleration=rules["spot_toleration"],
            served_name_rule=rules["served_name"], generic_hf_ids=rules["generic_hf_ids"],
            transformers_api=rules["transformers_api"], addon_nodes=rules["addon_nodes"], helm_byo=rules["helm_byo"],
            vllm_version=str(rules["vllm"]), disk_base_gib=int(rules["disk_base_gib"]),
            min_compute_capability=float(rules.get("min_compute_capability", 0.0)),
            crd_mark=str(rules["crd_mark"]),
            skus=skus, estimator=estimator, physical_fit=physical_fit,
            byo_chart_values=dict(data.get("byo_chart_values") or {}),
            presets=presets, replacements=dict(data.get("replacements") or {}),
            legacy_names=dict(data.get("legacy_names") or {}), deprecated=dict(deprecated),
            removed=dict(data.get("removed") or {}), transformers_runtime=tuple(data.get("transformers_runtime", ())),
            catalog=tuple(data.get("catalog", ())),
            inference_config_template=dict(data.get("inference_config_template") or {}),
        ))
    return out


@functools.lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """Parse every catalog file once per process (the plan of a 100-model stack reuses it)."""
    models_raw = _load_yaml("models.yaml")["models"]
    models = {hf_id: _model_facts(hf_id, raw) for hf_id, raw in models_raw.items()}
    skus_raw = _load_yaml("azure_gpu_skus.yaml")
    gpu_models = skus_raw.get("gpu_models") or {}
    sizes = {}
    for name, row in skus_raw["sizes"].items():
        row = dict(row)
        retired = row.pop("retired")
        gpu = gpu_models.get(row["gpu_model"], {})
        sizes[name] = AzureGpuSize(
            name=name,
            retired=_dt.date.fromisoformat(str(retired)) if retired else None,
            nvml_memory_mib=gpu.get("gfd_memory_mib"),
            gfd_product=gpu.get("gfd_product"),
            vllm_gpu_memory_utilization=gpu.get("vllm_gpu_memory_utilization"),
            **row,
        )
    files = {path.stem.removeprefix("kaito-"): yaml.safe_load(path.read_text())
             for path in sorted(CATALOG_DIR.glob("kaito-*.yaml"))}
    releases = {r.version: r for line in files for r in _releases(_merged_line(line, files))}
    defaults = _load_yaml("kaito.yaml")
    addon = defaults["defaults"]["addon"]
    return Catalog(
        models=models, sizes=sizes, releases=releases, price_source=skus_raw["price_source"],
        default_helm_version=str(defaults["defaults"]["helm"]),
        addon_default=AddonDefault(str(addon["version"]), " ".join(str(addon["source"]).split()), str(addon["date"])),
        addon_evidence=tuple(defaults.get("addon_evidence") or ()),
        readme_models=tuple(defaults.get("readme_models") or ()),
    )
