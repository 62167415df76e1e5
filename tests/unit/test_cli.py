"""One CLI: `kaito-aks` (pyproject's console script) and `python -m infra` run the same commands, `stack` included."""
from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys
import tomllib

import pytest

from infra import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_console_script_points_at_a_function_that_exists():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["kaito-aks"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_every_command_is_listed(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"], prog="kaito-aks")
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: kaito-aks")
    for command in ("plan", "check-endpoint", "gateway-secret", "catalog", "preflight", "stack"):
        assert f"    {command}" in out


def test_stack_hands_its_arguments_to_the_automation_driver(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["stack", "--help"], prog="kaito-aks")
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: kaito-aks stack")
    assert "--skip-preflight" in out and "{preview,up,destroy,refresh,outputs}" in out
    with pytest.raises(SystemExit) as exit_:   # a usage mistake is the driver's one line, exit 2
        cli.main(["stack", "up"], prog="kaito-aks")
    assert exit_.value.code == 2 and "kaito-aks stack: error" in capsys.readouterr().err


def test_python_dash_m_infra_still_plans():
    done = subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", "dev", "--format", "json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.lstrip().startswith("{")
