"""The code's layers, as the README's code map draws them, hold: no import cycle in infra/, no import against the
layer order, no infra import hidden inside a function, and infra/ never imports components/ or Pulumi's runtime
objects (the plan runs offline).

Layers, lowest first (a module may import its own layer and those below):

1. base     -- errors, names, ip_ranges, stack_yaml, the catalog data, prices
2. decide   -- settings, api_keys, models, sizing, plan: what to deploy and why
3. render   -- infra/render/*: the plan as Kubernetes objects, nginx text, Azure arguments, monitoring
4. runtime  -- talks to servers: endpoint, pod_transport, node_readiness, version_gate, preflight
5. cli      -- argument parsing and printing: cli*, catalog_report, __main__, and the Automation driver
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

LAYERS = {
    "base": {"infra", "infra.errors", "infra.names", "infra.ip_ranges", "infra.stack_yaml", "infra.catalog",
             "infra.prices"},
    "decide": {"infra.settings", "infra.api_keys", "infra.models", "infra.sizing", "infra.plan"},
    "render": {"infra.render"},   # and every module under it
    "runtime": {"infra.endpoint", "infra.pod_transport", "infra.node_readiness", "infra.version_gate",
                "infra.preflight"},
    "cli": {"infra.__main__", "infra.cli", "infra.automation", "infra.cli_plan", "infra.cli_check", "infra.cli_gateway",
            "infra.cli_catalog", "infra.cli_preflight", "infra.catalog_report"},
}
ORDER = list(LAYERS)


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    for layer, members in LAYERS.items():
        if module in members or any(module.startswith(m + ".") for m in members if m == "infra.render"):
            return layer
    raise AssertionError(f"{module} is in no layer: add it to tests/unit/test_layers.py and the README's code map")


def infra_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(INFRA.rglob("*.py"))}


def imports(path: pathlib.Path) -> list[tuple[str, ast.AST, bool]]:
    """(imported module, node, inside a function) for every import of the file, names of `from infra import x`
    resolved to the module infra.x where there is one."""
    known = infra_modules()
    tree = ast.parse(path.read_text())
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(sub) for sub in ast.walk(node) if sub is not node)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((a.name, node, id(node) in inside) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                candidate = f"{node.module}.{a.name}"
                found.append((candidate if candidate in known else node.module, node, id(node) in inside))
    return found


def infra_graph() -> dict[str, set[str]]:
    known = infra_modules()
    return {mod: {m for m, _, _ in imports(path) if m in known and m != mod} for mod, path in known.items()}


def test_every_module_has_a_layer():
    for module in infra_modules():
        layer_of(module)


def upward_imports(graph: dict[str, set[str]], module: str) -> list[str]:
    rank = ORDER.index(layer_of(module))
    return [f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)}), a higher layer"
            for target in sorted(graph[module]) if ORDER.index(layer_of(target)) > rank]


@pytest.mark.parametrize("module", sorted(infra_modules()))
def test_imports_follow_the_layer_order(module):
    assert upward_imports(infra_graph(), module) == []


def test_no_import_cycle_in_infra():
    graph = infra_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("path", sorted([*INFRA.rglob("*.py"), *(ROOT / "components").glob("*.py")]),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_project_import_inside_a_function(path):
    """Project modules are imported at the top (a cycle can't hide behind a late import); only heavy third-party
    clients a deploy alone needs (the Kubernetes and Azure SDKs, the Pulumi Automation API) may load late."""
    late = [(m, n.lineno) for m, n, inside in imports(path) if inside and m.split(".")[0] in ("infra", "components")]
    assert late == []


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_infra_never_imports_components_or_the_pulumi_program(path):
    """Decisions and rendering run offline (`python -m infra plan` has no Pulumi engine); only settings'
    load_from_pulumi and the Automation driver touch Pulumi's SDK, and neither imports components/."""
    targets = {m.split(".")[0] for m, _, _ in imports(path)}
    assert "components" not in targets and "__main__" not in targets


def test_the_layer_test_sees_a_violation():
    """The check above can fail: a render module importing the CLI is found (on a copy of the graph: the tree on
    disk is never touched, other test runs may be reading it)."""
    graph = infra_graph()
    graph["infra.render.nginx"] = graph["infra.render.nginx"] | {"infra.cli_plan"}
    assert upward_imports(graph, "infra.render.nginx") == [
        "infra.render.nginx (render) imports infra.cli_plan (cli), a higher layer"]


def test_components_take_name_args_opts_with_a_typed_args_dataclass():
    """The standard Pulumi component shape (pulumi-eks, pulumi/examples): ``Component(name, args, opts)``."""
    import dataclasses
    import importlib
    import inspect
    import typing

    import pulumi

    found = 0
    for path in sorted((ROOT / "components").glob("*.py")):
        module = importlib.import_module(f"components.{path.stem}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not issubclass(cls, pulumi.ComponentResource) or cls.__module__ != module.__name__:
                continue
            found += 1
            params = list(inspect.signature(cls.__init__).parameters)
            assert params == ["self", "name", "args", "opts"], (cls.__name__, params)
            args_type = typing.get_type_hints(cls.__init__)["args"]
            assert dataclasses.is_dataclass(args_type), (cls.__name__, args_type)
            assert "register_outputs" in inspect.getsource(cls), f"{cls.__name__} registers no outputs"
    assert found >= 6
