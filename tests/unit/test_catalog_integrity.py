"""The catalog files agree with each other and with what sizing assumes."""
import pytest

from infra.catalog import load_catalog
from infra.sizing import byo_per_gpu_gib

CAT = load_catalog()


def test_every_kaito_0_6_preset_has_model_facts_for_the_physical_fit_test():
    presets = CAT.release("0.6.0").presets
    assert len(presets) >= 20                      # every loop here checks something: none runs over nothing
    for preset in presets.values():
        assert CAT.model_facts(preset.hf_id) is not None, preset.name


def test_every_kaito_0_12_catalog_and_legacy_id_has_facts():
    release = CAT.release("0.12.0")
    assert release.catalog and release.legacy_names
    for hf_id in release.catalog:
        assert CAT.model_facts(hf_id) is not None, hf_id
    for short, hf_id in release.legacy_names.items():
        assert release.in_catalog(hf_id), short


@pytest.mark.parametrize("version", CAT.known_versions)
def test_every_kaito_sku_row_is_an_azure_size_we_know(version):
    release = CAT.release(version)
    assert release.skus
    for name in release.skus:
        assert CAT.size(name) is not None, name


def test_kaito_0_12_table_only_has_compute_capability_8_or_more():
    for name in CAT.release("0.12.0").skus:
        size = CAT.size(name)
        assert size.vendor == "amd" or size.compute_capability >= 8.0, name


def test_byo_memory_labels_agree_with_the_sku_table_for_every_priced_0_12_size():
    """Why sizing under bring-your-own nodes gives the same node counts as KAITO's SKU table (docs/kaito-sizing.md)."""
    release = CAT.release("0.12.0")
    checked = []
    for name, row in release.skus.items():
        size = CAT.sizes.get(name)
        if not size or size.usd_per_hour is None or size.vendor != "nvidia" or size.nvml_memory_mib is None:
            continue
        assert byo_per_gpu_gib(size.nvml_memory_mib) == row.total_gpu_memory_gib // row.gpus, name
        checked.append(name)
    assert len(checked) >= 5, checked


def test_prices_and_shapes_are_sane():
    for size in CAT.sizes.values():
        assert size.gpus >= 1 and size.gpu_memory_gib > 0 and size.vcpus > 0
        assert size.usd_per_hour is None or size.usd_per_hour > 0
        row = CAT.release("0.6.0").kaito_sku(size.name)
        if row:
            assert row.gpus == size.gpus, size.name


def test_kv_cache_geometry():
    llama = CAT.model_facts("meta-llama/Llama-3.1-8B-Instruct")
    assert llama.kv_cache_bytes_per_token == 131072                  # 128 KiB, as KAITO's BytesPerToken
    assert CAT.model_facts("microsoft/Phi-3-mini-4k-instruct").kv_cache_bytes_per_token == 393216
    assert CAT.model_facts("meta-llama/Llama-3.3-70B-Instruct").kv_cache_bytes_per_token == 327680
    deepseek = CAT.model_facts("deepseek-ai/DeepSeek-R1-0528")
    assert deepseek.kv_cache_bytes_per_token == (512 + 64) * 61 * 2   # MLA latent
    assert CAT.model_facts("tiiuae/falcon-40b-instruct").kv_cache_bytes_per_token == 1966080  # KAITO's own figure
