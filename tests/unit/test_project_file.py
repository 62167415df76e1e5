"""Pulumi.yaml: a valid project file whose typed config agrees with the settings model."""
import pathlib

import yaml

from infra.settings import Settings, project_defaults

ROOT = pathlib.Path(__file__).resolve().parents[2]
SIMPLE_TYPES = {"string", "integer", "boolean", "array"}   # Pulumi's project config types


def test_project_file():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "kaito-aks"
    assert project["runtime"]["name"] == "python" and project["runtime"]["options"]["virtualenv"] == ".venv"
    for key, decl in project["config"].items():
        assert set(decl) <= {"type", "default", "description", "secret", "items"}, key
        assert decl["type"] in SIMPLE_TYPES, key
        assert "default" in decl, f"{key}: without a default Pulumi requires it on every stack"


def test_declared_defaults_match_the_settings_model():
    defaults = project_defaults()
    assert defaults, "Pulumi.yaml declares no default the settings read: this test would compare nothing"
    for key, default in defaults.items():
        field = next(f for n, f in Settings.model_fields.items() if (f.alias or n) == key)
        assert field.default == default, key
