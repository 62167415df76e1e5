"""Read a stack file's YAML the way Pulumi would accept it, within bounds, with one-line errors.

A stack file is user input. ``yaml.safe_load`` alone lets a few hundred bytes expand (through aliases) into
gigabytes of validation work and error text, silently keeps the last of two duplicate keys (Pulumi's own reader
refuses them), and raises tracebacks for deep nesting, non-UTF-8 bytes or numbers with thousands of digits.
:func:`load_yaml_mapping` refuses each of those with a :class:`~infra.errors.UserError` naming the file and line.
"""
from __future__ import annotations

import pathlib
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from infra.errors import UserError

MAX_FILE_BYTES = 1024 * 1024      # a stack file of 100 models is ~10 KiB
MAX_NODES = 50_000                # after alias expansion: what validation would walk
MAX_DEPTH = 32                    # settings nest 4 levels deep
MAX_INT_DIGITS = 20               # no setting needs a bigger number; Python refuses > 4300 digits anyway


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and absurd integers instead of guessing."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise ConstructorError(None, None, "a mapping key must be a plain value", key_node.start_mark) from None
            if key in seen:
                raise ConstructorError(
                    None, None, f"duplicate key {str(key)[:80]!r} (first on line {seen[key] + 1}); Pulumi refuses "
                    "duplicate keys: keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise ConstructorError(None, None, f"a number with {digits} digits; no setting takes more than "
                                   f"{MAX_INT_DIGITS}", node.start_mark)
        return super().construct_yaml_int(node)


# (mappings need no registration: SafeLoader's map constructor already calls the construct_mapping above)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def _expanded_size(root: Node) -> int:
    """Nodes a consumer would visit with every alias expanded (computed without expanding anything)."""
    sizes: dict[int, int] = {}
    order: list[tuple[Node, int]] = [(root, 0)]
    stack = [root]
    seen: set[int] = set()
    # iterative post-order over the node graph (aliases are shared Node objects: a DAG, maybe with cycles)
    while stack:
        node = stack[-1]
        if id(node) in sizes:
            stack.pop()
            continue
        children = _children(node)
        pending = [c for c in children if id(c) not in sizes]
        if pending and id(node) not in seen:
            seen.add(id(node))
            for child in pending:
                if id(child) in seen:     # a recursive alias: infinite when expanded
                    return MAX_NODES + 1
                stack.append(child)
            continue
        total = 1 + sum(sizes.get(id(c), MAX_NODES + 1) for c in children)
        sizes[id(node)] = min(total, MAX_NODES + 1)
        stack.pop()
    del order
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _depth(root: Node) -> int:
    deepest, stack = 0, [(root, 1)]
    visited: set[tuple[int, int]] = set()
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH or (id(node), depth) in visited:
            continue
        visited.add((id(node), depth))
        stack.extend((child, depth + 1) for child in _children(node))
    return deepest


def parse_yaml_text(text: str, where: str) -> Any:
    """Parse YAML text within the bounds above; ``where`` names the source in errors."""
    try:
        loader = _StrictLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            if _depth(root) > MAX_DEPTH:
                raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep; a stack file's settings "
                                "nest 4 levels")
            if _expanded_size(root) > MAX_NODES:
                raise UserError(f"{where}: expands to more than {MAX_NODES:,} values (through YAML aliases?); "
                                "write the settings out plainly")
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise UserError(f"{where}:{line} not valid YAML ({problem})") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read; a stack file's settings nest 4 levels") from None


def read_text_file(path: pathlib.Path, what: str = "file") -> str:
    """A small UTF-8 text file, or one line saying why it can't be read."""
    try:
        if path.is_dir():
            raise UserError(f"{path}: is a directory, not a {what}")
        if path.exists() and not path.is_file():   # a FIFO or a device: reading could block forever
            raise UserError(f"{path}: is not a regular file; give the {what} itself")
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except UserError:
        raise
    except FileNotFoundError:
        raise
    except OSError as err:
        raise UserError(f"{path}: can't read the {what} ({err.strerror or err})") from None
    if len(data) > MAX_FILE_BYTES:
        raise UserError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB; a {what} is a few KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text; save the {what} as UTF-8") from None


def load_yaml_mapping(path: pathlib.Path, what: str = "stack file") -> dict[str, Any]:
    """A YAML file whose top level must be a mapping (``{}`` when empty)."""
    doc = parse_yaml_text(read_text_file(path, what), str(path))
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UserError(f"{path}: the top level must be a mapping (`config:` ...), not a {type(doc).__name__}")
    return doc
