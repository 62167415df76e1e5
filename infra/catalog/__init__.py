"""The catalogs kaito-aks decides from, loaded from the YAML files next to this module.

- ``models.yaml``          facts about Hugging Face models (weights, KV-cache geometry, context, gated)
- ``azure_gpu_skus.yaml``  Azure GPU VM sizes (GPUs, memory, compute capability, price, retirement)
- ``kaito-<line>.yaml``    one KAITO release line each: its SKU table, presets and admission constants

This module only parses and indexes; rules live in ``infra.models`` and ``infra.sizing``.
"""
from __future__ import annotations

import datetime as _dt
import functools
import pathlib
from dataclasses import dataclass, field

import yaml

CATALOG_DIR = pathlib.Path(__file__).resolve().parent
GIB = 1024**3


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
        """KAITO 0.12's BytesPerToken (fp16 hard-coded): generator.go calculateKVCacheTokenSize."""
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


@dataclass(frozen=True)
class KaitoSku:
    """A row of KAITO's own SKU table: memory is the node's total, in GiB."""

    name: str
    gpus: int
    total_gpu_memory_gib: int
    gpu_model: str
    nvme: bool = False


@dataclass(frozen=True)
class PresetV06:
    """A KAITO 0.6 inference preset with the webhook's requirements (SIZING.md A2)."""

    name: str
    hf_id: str
    gpus: int
    total_gpu_memory_gib: float
    per_gpu_memory_gib: float
    disk_gib: int
    distributed: bool
    runtimes: tuple[str, ...]
    model_access_secret: str  # "required" | "forbidden"
    tensor_parallel: bool = True
    vllm_dtype: str = "float16"
    served_name: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class EstimatorConstants:
    gpu_memory_utilization: float
    weight_expansion_factor: float
    base_overhead_gib: float
    overhead_weight_factor: float
    default_max_model_len: int


@dataclass(frozen=True)
class KaitoRelease:
    """One KAITO release line (0.6 = the AKS add-on, 0.12 = the Helm chart)."""

    version: str
    line: str
    deploy: str
    generic_hf_ids: bool
    sku_lookup_case_sensitive: bool
    spot_toleration: bool
    served_model_name: str
    skus: dict[str, KaitoSku]
    unknown_sku_prefixes: tuple[str, ...] = ()
    presets: dict[str, PresetV06] = field(default_factory=dict)
    replacements: dict[str, str] = field(default_factory=dict)
    legacy_names: dict[str, str] = field(default_factory=dict)
    deprecated: dict[str, dict] = field(default_factory=dict)
    removed: dict[str, dict] = field(default_factory=dict)
    transformers_runtime: tuple[str, ...] = ()
    catalog: tuple[str, ...] = ()
    estimator: EstimatorConstants | None = None
    disk_base_gib: int = 80
    inference_config_template: dict = field(default_factory=dict)   # KAITO's default inference_config.yaml

    def kaito_sku(self, name: str) -> KaitoSku | None:
        """KAITO's lookup of an instance type: exact in 0.6, case-insensitive in 0.12."""
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
class Catalog:
    models: dict[str, ModelFacts]
    sizes: dict[str, AzureGpuSize]
    releases: dict[str, KaitoRelease]
    price_source: str

    def model_facts(self, hf_id: str) -> ModelFacts | None:
        wanted = hf_id.lower()
        return next((m for key, m in self.models.items() if key.lower() == wanted), None)

    def size(self, name: str) -> AzureGpuSize | None:
        """An Azure size by its Azure name or KAITO's spelling of it (exact case)."""
        return self.sizes.get(name) or next((s for s in self.sizes.values() if name in s.names), None)

    def size_ignoring_case(self, name: str) -> AzureGpuSize | None:
        return next((s for s in self.sizes.values() if name.lower() in (n.lower() for n in s.names)), None)

    def release(self, version: str) -> KaitoRelease:
        """The release line that governs ``version`` (e.g. "0.12.0" -> the 0.12 rules)."""
        line = ".".join(version.split(".")[:2])
        try:
            return self.releases[line]
        except KeyError:
            known = ", ".join(f"{r.line}.x" for r in self.releases.values())
            raise KeyError(f"no sizing rules for KAITO {version} (kaito-aks knows {known})") from None


def _load_yaml(name: str) -> dict:
    return yaml.safe_load((CATALOG_DIR / name).read_text())


def _model_facts(hf_id: str, raw: dict) -> ModelFacts:
    return ModelFacts(hf_id=hf_id, **raw)


def _release(raw: dict) -> KaitoRelease:
    skus = {name: KaitoSku(name=name, **row) for name, row in raw.get("skus", {}).items()}
    presets = {}
    for name, row in (raw.get("presets") or {}).items():
        row = dict(row)
        row["runtimes"] = tuple(row["runtimes"])
        presets[name] = PresetV06(name=name, **row)
    estimator = EstimatorConstants(**raw["estimator"]) if raw.get("estimator") else None
    return KaitoRelease(
        version=raw["version"],
        line=raw["line"],
        deploy=raw["deploy"],
        generic_hf_ids=raw["generic_hf_ids"],
        sku_lookup_case_sensitive=raw["sku_lookup_case_sensitive"],
        spot_toleration=raw["spot_toleration"],
        served_model_name=raw["served_model_name"],
        skus=skus,
        unknown_sku_prefixes=tuple(raw.get("unknown_sku_prefixes", ())),
        presets=presets,
        replacements=dict(raw.get("replacements") or {}),
        legacy_names=dict(raw.get("legacy_names") or {}),
        deprecated=dict(raw.get("deprecated") or {}),
        removed=dict(raw.get("removed") or {}),
        transformers_runtime=tuple(raw.get("transformers_runtime", ())),
        catalog=tuple(raw.get("catalog", ())),
        estimator=estimator,
        disk_base_gib=raw.get("disk_base_gib", 80),
        inference_config_template=dict(raw.get("inference_config_template") or {}),
    )


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
    releases = {}
    for path in sorted(CATALOG_DIR.glob("kaito-*.yaml")):
        release = _release(yaml.safe_load(path.read_text()))
        releases[release.line] = release
    return Catalog(models=models, sizes=sizes, releases=releases, price_source=skus_raw["price_source"])
