#!/usr/bin/env python3
"""Mutation testing for kaito-aks: which bugs would the tests miss? (issue 16; run by hand, not part of CI)

One command per module (``.venv/bin/python`` from the repository root; add ``nice -n 10`` on a shared machine)::

    python tools/mutate.py infra/sizing.py --sample 100 --seed 31       # unit + program tests
    python tools/mutate.py infra/settings.py --sample 100 --seed 31     # unit + program tests
    python tools/mutate.py infra/plan.py --sample 100 --seed 31         # unit + program tests
    python tools/mutate.py infra/render/nginx.py --sample 50 --seed 31  # the gateway: unit + program + integration
    python tools/mutate.py infra/endpoint.py --sample 50 --seed 31      # unit + program + integration (as CI)
    python tools/mutate.py infra/api_keys.py                            # every mutant of the gateway's keys

    python tools/mutate.py --show /tmp/kaito-aks-mutate/infra_sizing.json --list   # survivors, with diffs

Options: ``--list`` prints the survivors (line, operator, diff); ``--json``/``--markdown`` choose the report paths
(default ``$TMPDIR/kaito-aks-mutate/<module>.json`` and ``.md``); ``--only ID ...`` reruns given mutants;
``--confirm`` reruns every survivor against the module's whole test scope (not only the tests that execute its
line); ``--dry-run`` only counts the mutants; ``--jobs N`` runs N mutants at once (one tree copy each).

Why a script and not mutmut or cosmic-ray
-----------------------------------------
mutmut 3 (3.8.1 read for this) mutates only through per-function "trampolines": it skips every decorated
function (file_mutation.py: "ignore decorated functions ... @property decorators break the trampoline"), except
``@staticmethod``/``@classmethod`` alone, and keeps every module-level and class-body statement unmodified
("Else we keep the original node without modifications"). Here that drops exactly what matters:
``@field_validator``/``@model_validator`` bodies (stacked on ``@classmethod``), ``@property`` derivations
(``Settings.cluster_name``, ``SizingRequest.sizing_context``), pydantic ``Field(ge=..., le=...)`` bounds and
module constants (``MAX_NODES``). cosmic-ray mutates everything but needs a session database, a config file per
module and its own worker setup, for a handful of operators we can state in 300 lines. So this is a small
``ast`` script; mutants are applied as text patches, so reports show the real source line.

How a run works
---------------
1. The repository is copied once to a temporary directory (``.venv`` and ``.cache`` are symlinked), so the
   working tree other people edit is never touched; the copy is what gets mutated and tested.
2. Baseline: the module's test scope runs once in the copy with a line tracer (tools/_mutate_pytest.py, and
   tools/_mutate_site/sitecustomize.py for the ``python -m infra ...`` subprocesses tests start): which tests
   execute which lines, and how long each takes. Tests failing in the baseline are excluded (and reported).
3. Each mutant, one at a time: the mutated module is written into the copy (its ``.pyc`` removed), and
   ``pytest -x -q -p no:cacheprovider`` runs the tests that execute the mutated lines, cheapest files first.
   Code that runs at import time (module constants, class bodies: pydantic fields, dataclass defaults) or
   during collection is run against every test that executes any line of the module plus every test file that
   imports it. Exit status 0: survived; a failure, an error or the timeout (3x the baseline time, at least
   60 s; a hang counts as killed "timeout"): killed, once the same tests fail again on a second run (a failure
   that doesn't repeat is a flaky test, and the mutant counts as a survivor). A mutant no test executes survives
   without a run.

Test scope per module (``SCOPES``): sizing, settings and plan by the unit and program tests (tests/unit,
tests/program); gateway and endpoint by the suite as CI runs it (plus tests/integration, with
``KAITO_AKS_REQUIRE_SERVERS=1`` when nginx and vLLM are installed, so a server that can't start fails instead of
skipping).

Operators (``OPERATORS``)
-------------------------
boundary (``<``/``<=``, ``>``/``>=``); negate-compare (``<``->``>=``, ``==``/``!=``, ``in``/``not in``,
``is``/``is not``); arithmetic (``+``/``-``, ``*``->``/``, ``/``->``*``, ``//``->``*``, ``%``->``//``,
``**``->``*``, augmented assignments too, unary minus dropped); constant (int ``n``->``n+1`` and ``1``->``0``,
float ``x``->``x+1`` and ``1.0``->``0.0``, ``True``/``False``, a string -> ``""`` and ``""`` -> ``"XX"``, an
f-string -> ``""``); negate-condition (``if``/``while``/ternary/comprehension conditions -> ``not (...)``,
``not x`` -> ``x``); and-or (``and``/``or``); return-none (``return x`` -> ``return None``); delete-statement
(an expression statement, assignment, ``raise``, ``if``/``for``/``while``/``with``/``try``/``del``,
``break``/``continue`` -> ``pass``). All of them inside functions, methods, ``@property`` and pydantic
validators, class bodies (pydantic ``Field`` arguments, dataclass defaults) and module constants.

Not mutated, by design: docstrings; type annotations and type aliases (``Literal[...]``: types, not behaviour);
decorator expressions; f-string format specs and the literal pieces of an f-string (the f-string as a whole is, and the expressions in it are);
``Field(description=...)`` text (documentation only: nothing in the program reads it); ``assert`` statements
(invariants, stripped by ``python -O``); imports, ``def``/``class`` statements, ``if TYPE_CHECKING:``; a
line carrying ``# pragma: no mutate``. Strings joined with ``+``/``*``/``%`` keep their operator (a swap is a
``TypeError``, not a bug).

Equivalent mutants (no test can kill them: the program behaves the same) are listed with the reason in
tools/mutate_equivalent.json, by mutant id (a hash of the module, enclosing function, operator, original and
mutated text: stable when other lines move). The score is killed / (mutants run - equivalent survivors).
"""
from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import datetime as dt
import difflib
import hashlib
import json
import os
import pathlib
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Callable, Iterable

REPO = pathlib.Path(__file__).resolve().parent.parent
TOOLS = pathlib.Path(__file__).resolve().parent
EQUIVALENTS_FILE = TOOLS / "mutate_equivalent.json"
DEFAULT_OUT = pathlib.Path(tempfile.gettempdir()) / "kaito-aks-mutate"

UNIT_AND_PROGRAM = ("tests/unit", "tests/program")
CI_SUITE = ("tests/unit", "tests/program", "tests/integration")
SCOPES = {
    "infra/sizing.py": UNIT_AND_PROGRAM,
    "infra/settings.py": UNIT_AND_PROGRAM,
    "infra/plan.py": UNIT_AND_PROGRAM,
    "infra/gateway.py": CI_SUITE,              # before issue 15.1 split it into infra/render/nginx.py + ...
    "infra/render/nginx.py": CI_SUITE,         # the gateway's nginx configuration (auth, limits, routes)
    "infra/render/gateway_objects.py": CI_SUITE,
    "infra/api_keys.py": CI_SUITE,              # the gateway's keys: parsing, validation, the Secret's format
    "infra/endpoint.py": CI_SUITE,
}
OPERATORS = ("boundary", "negate-compare", "arithmetic", "constant", "negate-condition", "and-or", "return-none",
             "delete-statement")
PRAGMA = "pragma: no mutate"
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", ".cache", "__pycache__", ".mypy_cache", ".ruff_cache",
                                     ".pytest_cache", "*.pyc")

# ---------------------------------------------------------------------------------------------------------
# Generating mutants

COMPARE = {
    ast.Lt: [("boundary", ast.LtE), ("negate-compare", ast.GtE)],
    ast.LtE: [("boundary", ast.Lt), ("negate-compare", ast.Gt)],
    ast.Gt: [("boundary", ast.GtE), ("negate-compare", ast.LtE)],
    ast.GtE: [("boundary", ast.Gt), ("negate-compare", ast.Lt)],
    ast.Eq: [("negate-compare", ast.NotEq)],
    ast.NotEq: [("negate-compare", ast.Eq)],
    ast.In: [("negate-compare", ast.NotIn)],
    ast.NotIn: [("negate-compare", ast.In)],
    ast.Is: [("negate-compare", ast.IsNot)],
    ast.IsNot: [("negate-compare", ast.Is)],
}
ARITHMETIC = {
    ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Div], ast.Div: [ast.Mult], ast.FloorDiv: [ast.Mult],
    ast.Mod: [ast.FloorDiv], ast.Pow: [ast.Mult],
}
DELETABLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise, ast.If, ast.For, ast.While, ast.With,
             ast.Try, ast.Delete, ast.Break, ast.Continue)


@dataclasses.dataclass
class Mutant:
    id: str
    module: str
    line: int
    end_line: int
    operator: str
    description: str
    qualname: str
    original: str          # the source text replaced
    replacement: str       # what replaces it
    start: int             # byte offsets of the replaced text in the module source
    end: int
    stmt_lines: tuple[int, ...]   # lines whose execution means the mutated code runs
    import_time: bool      # module level or class body: runs when the module is imported
    status: str = "pending"       # killed | survived | timeout | not-covered | equivalent (survived, judged)
    detail: str = ""
    seconds: float = 0.0
    tests_run: int = 0

    def apply(self, source: bytes) -> bytes:
        return source[:self.start] + self.replacement.encode() + source[self.end:]

    def diff(self, source: bytes) -> str:
        before = source.decode().splitlines()
        after = self.apply(source).decode().splitlines()
        lines = difflib.unified_diff(before, after, self.module, self.module + " (mutant)", n=0, lineterm="")
        return "\n".join(list(lines)[2:])


class _Ctx:
    def __init__(self, qual: str = "", in_func: bool = False, anchor: ast.AST | None = None,
                 stmt: ast.stmt | None = None):
        self.qual, self.in_func, self.anchor, self.stmt = qual, in_func, anchor, stmt

    def but(self, **kw) -> "_Ctx":
        new = copy.copy(self)
        for k, v in kw.items():
            setattr(new, k, v)
        return new


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


TYPE_CONSTRUCTS = {"Literal", "Union", "Optional", "Annotated", "Callable", "TypeAlias"}


def _is_type_expression(node: ast.expr) -> bool:
    """``Literal["a", "b"]``, ``Optional[int]`` ...: a type written as a value (a type alias), not behaviour."""
    if not isinstance(node, ast.Subscript):
        return False
    head = node.value
    name = head.id if isinstance(head, ast.Name) else head.attr if isinstance(head, ast.Attribute) else ""
    return name in TYPE_CONSTRUCTS


def _is_docstring(stmt: ast.stmt, body: list[ast.stmt]) -> bool:
    return (body and body[0] is stmt and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


def _replace_child(root: ast.AST, old: ast.AST, new: ast.AST) -> ast.AST:
    """Replace ``old`` (somewhere under ``root``, or ``root`` itself) by ``new``; returns the new root."""
    if root is old:
        return new
    for parent in ast.walk(root):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return root
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
                        return root
    raise LookupError("node not found under its anchor")


class MutantGenerator:
    def __init__(self, module: str, source: str):
        self.module = module
        self.source = source
        self.bytes = source.encode()
        self.line_offsets = [0]
        for line in self.bytes.splitlines(keepends=True):
            self.line_offsets.append(self.line_offsets[-1] + len(line))
        self.tree = ast.parse(source)
        self.skip_lines = {i + 1 for i, line in enumerate(source.splitlines()) if PRAGMA in line}
        self.original_dump = ast.dump(self.tree)
        self.mutants: list[Mutant] = []
        self.invalid = 0
        self._seen: set[bytes] = set()
        self._occurrence: Counter = Counter()

    # -- positions
    def _offset(self, line: int, col: int) -> int:
        return self.line_offsets[line - 1] + col

    def _span(self, node: ast.AST) -> tuple[int, int]:
        return self._offset(node.lineno, node.col_offset), self._offset(node.end_lineno, node.end_col_offset)

    # -- emitting
    def emit(self, target: ast.AST, ctx: _Ctx, operator: str, description: str,
             make: Callable[[ast.AST], ast.AST | str]) -> None:
        """One mutant: ``make`` gets a copy of ``target`` and returns its replacement (a node, or source text)."""
        anchor = ctx.anchor or target
        if any(line in self.skip_lines for line in range(anchor.lineno, anchor.end_lineno + 1)):
            return
        index = next(i for i, n in enumerate(ast.walk(anchor)) if n is target)
        anchor_copy = copy.deepcopy(anchor)
        target_copy = next(n for i, n in enumerate(ast.walk(anchor_copy)) if i == index)
        new = make(target_copy)
        if isinstance(new, str):
            assert anchor is target, "text replacements are for whole nodes"
            text = new
        else:
            result = _replace_child(anchor_copy, target_copy, new)
            text = ast.unparse(result)
            if isinstance(anchor, ast.expr):
                text = f"({text})"
        start, end = self._span(anchor)
        original = self.bytes[start:end].decode()
        mutated = self.bytes[:start] + text.encode() + self.bytes[end:]
        if mutated in self._seen:
            return
        try:
            tree = ast.parse(mutated)
            compile(tree, self.module, "exec")
        except (SyntaxError, ValueError):
            self.invalid += 1
            return
        if ast.dump(tree) == self.original_dump:
            return
        self._seen.add(mutated)
        key = (ctx.qual, operator, original, text)
        occurrence = self._occurrence[key]
        self._occurrence[key] += 1
        ident = hashlib.sha1("|".join((self.module, *key, str(occurrence))).encode()).hexdigest()[:10]
        stmt = ctx.stmt
        if stmt is None or anchor is stmt:
            lines = tuple(range(anchor.lineno, anchor.end_lineno + 1))
        elif hasattr(stmt, "body") and isinstance(stmt.body, list) and stmt.body and not isinstance(stmt, ast.Lambda):
            first_body = stmt.body[0]
            header_end = getattr(first_body, "lineno", stmt.lineno) - 1
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and stmt.decorator_list:
                header_start = stmt.decorator_list[0].lineno
            else:
                header_start = stmt.lineno
            lines = tuple(range(header_start, max(header_end, stmt.lineno) + 1))
            lines = tuple(sorted(set(lines) | set(range(anchor.lineno, anchor.end_lineno + 1))))
        else:
            lines = tuple(range(stmt.lineno, stmt.end_lineno + 1))
        self.mutants.append(Mutant(
            id=ident, module=self.module, line=anchor.lineno, end_line=anchor.end_lineno, operator=operator,
            description=description, qualname=ctx.qual or "<module>", original=original, replacement=text,
            start=start, end=end, stmt_lines=lines, import_time=not ctx.in_func,
        ))

    # -- walking
    def run(self) -> list[Mutant]:
        self._body(self.tree.body, _Ctx())
        return self.mutants

    def _body(self, body: list[ast.stmt], ctx: _Ctx) -> None:
        for stmt in body:
            if _is_docstring(stmt, body):
                continue
            self._stmt(stmt, ctx.but(stmt=stmt), body)

    def _stmt(self, node: ast.stmt, ctx: _Ctx, body: list[ast.stmt]) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.Pass)):
            return
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = ctx.but(qual=f"{ctx.qual}.{node.name}".lstrip("."), in_func=True)
            for default in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]:
                self._expr(default, ctx)                  # evaluated when the def runs
            self._body(node.body, inner)
            return
        if isinstance(node, ast.ClassDef):
            for kw in node.keywords:
                self._expr(kw.value, ctx)
            self._body(node.body, ctx.but(qual=f"{ctx.qual}.{node.name}".lstrip(".")))
            return
        if isinstance(node, ast.Assert):
            return
        # delete the statement
        if isinstance(node, DELETABLE) and not (isinstance(node, ast.AnnAssign) and node.value is None) \
                and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            self.emit(node, ctx, "delete-statement", f"delete {type(node).__name__.lower()}", lambda n: "pass")
        if isinstance(node, ast.Return) and node.value is not None \
                and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            self.emit(node, ctx, "return-none", "return None", lambda n: "return None")
        if isinstance(node, ast.AugAssign):
            for new_op in ARITHMETIC.get(type(node.op), ()):
                if _is_str(node.value) and isinstance(node.op, (ast.Add, ast.Mult, ast.Mod)):
                    break
                self.emit(node, ctx, "arithmetic", f"{_op(node.op)}= -> {_op(new_op())}=",
                          lambda n, o=new_op: ast.AugAssign(target=n.target, op=o(), value=n.value))
        if isinstance(node, (ast.If, ast.While)):
            self._negate(node.test, ctx)
        # children
        for field, value in ast.iter_fields(node):
            if field in ("annotation", "returns", "decorator_list", "type_comment", "target", "targets"):
                if field in ("target", "targets"):
                    for t in (value if isinstance(value, list) else [value]):
                        self._targets(t, ctx)
                continue
            if field in ("body", "orelse", "finalbody") and isinstance(value, list) and value \
                    and isinstance(value[0], ast.stmt):
                self._body(value, ctx)
            elif field == "handlers":
                for handler in value:
                    if handler.type is not None:
                        self._expr(handler.type, ctx.but(stmt=handler))
                    self._body(handler.body, ctx)
            elif field == "items":                              # with-items
                for item in value:
                    self._expr(item.context_expr, ctx)
            elif isinstance(value, ast.expr):
                self._expr(value, ctx)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.expr):
                        self._expr(item, ctx)

    def _targets(self, target: ast.AST, ctx: _Ctx) -> None:
        """Subscript indexes in assignment targets are expressions too (``x[i + 1] = ...``)."""
        if isinstance(target, ast.Subscript):
            self._expr(target.slice, ctx)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._targets(elt, ctx)

    def _negate(self, test: ast.expr, ctx: _Ctx) -> None:
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return                                           # `not x` -> `x` is generated for the UnaryOp
        self.emit(test, ctx, "negate-condition", "negate the condition",
                  lambda n: ast.UnaryOp(op=ast.Not(), operand=n))

    def _expr(self, node: ast.expr, ctx: _Ctx) -> None:
        if _is_type_expression(node):
            return                                            # a type alias (``Literal[...]``): types, not behaviour
        if isinstance(node, ast.JoinedStr):
            if ctx.anchor is None:
                self.emit(node, ctx, "constant", "f-string -> ''", lambda n: ast.Constant(""))
            inner = ctx if ctx.anchor is not None else ctx.but(anchor=node)
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    self._expr(value.value, inner)             # not the format spec
            return
        if isinstance(node, ast.Constant):
            self._constant(node, ctx)
            return
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                for operator, new_op in COMPARE.get(type(op), ()):
                    def make(n, i=i, new_op=new_op):
                        ops = list(n.ops)
                        ops[i] = new_op()
                        return ast.Compare(left=n.left, ops=ops, comparators=n.comparators)
                    self.emit(node, ctx, operator, f"{_op(op)} -> {_op(new_op())}", make)
        elif isinstance(node, ast.BinOp):
            stringy = _is_str(node.left) or _is_str(node.right)
            if not (stringy and isinstance(node.op, (ast.Add, ast.Mult, ast.Mod))):
                for new_op in ARITHMETIC.get(type(node.op), ()):
                    self.emit(node, ctx, "arithmetic", f"{_op(node.op)} -> {_op(new_op())}",
                              lambda n, o=new_op: ast.BinOp(left=n.left, op=o(), right=n.right))
        elif isinstance(node, ast.BoolOp):
            other = ast.Or if isinstance(node.op, ast.And) else ast.And
            self.emit(node, ctx, "and-or", f"{_op(node.op)} -> {_op(other())}",
                      lambda n, o=other: ast.BoolOp(op=o(), values=n.values))
        elif isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                self.emit(node, ctx, "negate-condition", "not x -> x", lambda n: n.operand)
            elif isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant):
                self.emit(node, ctx, "arithmetic", "-x -> x", lambda n: n.operand)
        elif isinstance(node, ast.IfExp):
            self._negate(node.test, ctx)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for gen in node.generators:
                for cond in gen.ifs:
                    self._negate(cond, ctx)
        elif isinstance(node, ast.Lambda):
            for default in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]:
                self._expr(default, ctx)
            self._expr(node.body, ctx.but(in_func=True))
            return
        elif isinstance(node, ast.Call):
            self._expr(node.func, ctx)
            for arg in node.args:
                self._expr(arg, ctx)
            for kw in node.keywords:
                if kw.arg == "description" and (_is_str(kw.value) or isinstance(kw.value, ast.BinOp)):
                    continue                                  # documentation only (see the module docstring)
                self._expr(kw.value, ctx)
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self._expr(child, ctx)
            elif isinstance(child, ast.comprehension):
                self._expr(child.iter, ctx)
                for cond in child.ifs:
                    self._expr(cond, ctx)
            elif isinstance(child, ast.keyword):
                self._expr(child.value, ctx)

    def _constant(self, node: ast.Constant, ctx: _Ctx) -> None:
        v = node.value
        if isinstance(v, bool):
            self.emit(node, ctx, "constant", f"{v} -> {not v}", lambda n: ast.Constant(not v))
        elif isinstance(v, int):
            self.emit(node, ctx, "constant", f"{v} -> {v + 1}", lambda n: ast.Constant(v + 1))
            if v == 1:
                self.emit(node, ctx, "constant", "1 -> 0", lambda n: ast.Constant(0))
        elif isinstance(v, float):
            self.emit(node, ctx, "constant", f"{v} -> {v + 1}", lambda n: ast.Constant(v + 1.0))
            if v == 1.0:
                self.emit(node, ctx, "constant", "1.0 -> 0.0", lambda n: ast.Constant(0.0))
        elif isinstance(v, str):
            if v:
                self.emit(node, ctx, "constant", "string -> ''", lambda n: ast.Constant(""))
            else:
                self.emit(node, ctx, "constant", "'' -> 'XX'", lambda n: ast.Constant("XX"))


_OP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
            ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
            ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.And: "and", ast.Or: "or"}


def _op(op: ast.AST) -> str:
    return _OP_TEXT.get(type(op), type(op).__name__)


def generate(module: str, source: str) -> tuple[list[Mutant], int]:
    gen = MutantGenerator(module, source)
    mutants = gen.run()
    mutants.sort(key=lambda m: (m.start, m.operator, m.replacement))
    return mutants, gen.invalid


# ---------------------------------------------------------------------------------------------------------
# Running

def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    """Stop a timed-out pytest and everything it started (servers in their own sessions included), by pid."""
    pids = [proc.pid, *_descendants(proc.pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(1)


class Worktree:
    """A copy of the repository where one mutant at a time is applied and tested."""

    def __init__(self, root: pathlib.Path, module: str, original: bytes):
        self.root, self.module, self.original = root, module, original
        self.path = root / module

    @classmethod
    def copy_of(cls, src: pathlib.Path, dest: pathlib.Path, module: str) -> "Worktree":
        shutil.copytree(src, dest, ignore=COPY_IGNORE, symlinks=True)
        for name in (".venv", ".cache"):
            if (REPO / name).exists() and not (dest / name).exists():
                (dest / name).symlink_to(REPO / name)
        return cls(dest, module, (dest / module).read_bytes())

    def write(self, content: bytes) -> None:
        self.path.write_bytes(content)
        for pyc in (self.path.parent / "__pycache__").glob(self.path.stem + ".*.pyc"):
            pyc.unlink(missing_ok=True)

    def restore(self) -> None:
        self.write(self.original)


def _base_env(root: pathlib.Path, scope: tuple[str, ...]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TOOLS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("MUTATE_TRACE_OUT", None)
    env.pop("MUTATE_CURRENT_TEST", None)
    if "tests/integration" in scope and shutil.which("nginx", path=env.get("PATH", "") + ":/usr/sbin") \
            and (REPO / ".cache" / "vllm" / "venv" / "bin" / "python").exists():
        env.setdefault("KAITO_AKS_REQUIRE_SERVERS", "1")
    return env


def _pytest_cmd(files: Iterable[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "_mutate_pytest",
            "-o", "addopts=", "--no-header", *files]


def baseline(tree: Worktree, scope: tuple[str, ...], out_dir: pathlib.Path) -> dict:
    """Run the scope once with line tracing: lines per test, durations, failures."""
    trace_dir = out_dir / "subprocess-traces"
    shutil.rmtree(trace_dir, ignore_errors=True)
    trace_dir.mkdir(parents=True)
    trace_out = out_dir / "trace.json"
    env = _base_env(tree.root, scope)
    env.update(MUTATE_TRACE_OUT=str(trace_out), MUTATE_TARGET=str(tree.path), MUTATE_TRACE_DIR=str(trace_dir),
               MUTATE_PREFIX=sys.prefix)
    env["PYTHONPATH"] = os.pathsep.join([str(TOOLS / "_mutate_site"), env["PYTHONPATH"]])
    cmd = [c for c in _pytest_cmd(scope) if c != "-x"]
    print(f"baseline: {' '.join(cmd[1:])} (traced; takes longer than a plain run)", flush=True)
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=tree.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.monotonic() - started
    if not trace_out.exists():
        sys.exit(f"baseline produced no trace; pytest said:\n{done.stdout[-3000:]}")
    data = json.loads(trace_out.read_text())
    for sub in trace_dir.glob("sub-*.json"):
        entry = json.loads(sub.read_text())
        test = data["tests"].get(entry["test"])
        if test is not None:
            test["lines"] = sorted(set(test["lines"]) | set(entry["lines"]))
    touching = sum(1 for t in data["tests"].values() if t["lines"])
    print(f"baseline: {touching} of {len(data['tests'])} tests execute lines of {tree.module}", flush=True)
    data["seconds"] = round(elapsed, 1)
    data["summary"] = (done.stdout.strip().splitlines() or [""])[-1]
    print(f"baseline: {data['summary']} ({elapsed:.0f} s)", flush=True)
    return data


def _imports_module(test_file: pathlib.Path, module: str) -> bool:
    dotted = module.removesuffix(".py").replace("/", ".")
    package, _, name = dotted.rpartition(".")
    text = test_file.read_text(errors="replace")
    return dotted in text or re.search(rf"from {re.escape(package)} import [^\n]*\b{re.escape(name)}\b", text) is not None


class Selector:
    """Which tests to run for a mutant: those executing its lines; everything touching the module for import-time
    code."""

    def __init__(self, trace: dict, tree_root: pathlib.Path, module: str):
        self.tests = {t: v for t, v in trace["tests"].items() if not v["failed"]}
        self.failed = sorted(t for t, v in trace["tests"].items() if v["failed"]) + \
            [t for t in trace["failed"] if t not in trace["tests"]]
        self.collection_lines = set(trace["collection"])
        self.by_line: dict[int, set[str]] = {}
        for test, info in self.tests.items():
            for line in info["lines"]:
                self.by_line.setdefault(line, set()).add(test)
        self.importing_files = {f for f in {t.split("::")[0] for t in self.tests}
                                if _imports_module(tree_root / f, module)}
        self.module_wide = {t for t, v in self.tests.items()
                            if v["lines"] or t.split("::")[0] in self.importing_files}
        self.file_cost: dict[str, float] = {}
        self.file_setup: dict[str, float] = {}
        for test, info in self.tests.items():
            f = test.split("::")[0]
            self.file_cost[f] = self.file_cost.get(f, 0.0) + info["duration"]
            self.file_setup[f] = max(self.file_setup.get(f, 0.0), info["setup"])

    def select(self, mutant: Mutant, everything: bool = False) -> list[str]:
        if everything:
            chosen = set(self.tests)
        elif mutant.import_time or self.collection_lines.intersection(mutant.stmt_lines):
            chosen = set(self.module_wide)
        else:
            chosen = set().union(*(self.by_line.get(line, set()) for line in mutant.stmt_lines))
        # the module's own test files first, cheapest files first (a killing test is found sooner), the file's own
        # order inside it
        order = {t: i for i, t in enumerate(self.tests)}
        return sorted(chosen, key=lambda t: (t.split("::")[0] not in self.importing_files,
                                             self.file_cost[t.split("::")[0]], t.split("::")[0], order[t]))

    def expected_seconds(self, tests: list[str]) -> float:
        files = {t.split("::")[0] for t in tests}
        return sum(self.tests[t]["duration"] for t in tests) + sum(self.file_setup[f] for f in files) + 10


RUNNING: set[subprocess.Popen] = set()       # pytest processes in flight (stopped on Ctrl-C / SIGTERM)
STOPPING = threading.Event()


def run_mutant(tree: Worktree, mutant: Mutant, tests: list[str], timeout: float, env: dict[str, str],
               select_file: pathlib.Path) -> None:
    if not tests:
        mutant.status, mutant.detail = "not-covered", "no test executes this line"
        return
    select_file.write_text(json.dumps({"tests": tests}))
    files = list(dict.fromkeys(t.split("::")[0] for t in tests))
    started = time.monotonic()
    rc, out = _pytest_on_mutant(tree, mutant, files, timeout, {**env, "MUTATE_SELECT": str(select_file)})
    if rc not in (None, 0, 5) and not STOPPING.is_set():
        # a kill must repeat: a test that fails once under load (a timing test on two busy cores) and then passes
        # on the same mutant is flaky, and the mutant is counted as a survivor, not a kill
        rc_again, _ = _pytest_on_mutant(tree, mutant, files, timeout, {**env, "MUTATE_SELECT": str(select_file)})
        if rc_again == 0:
            first = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, flags=re.M)
            rc, out = 0, f"flaky: {first[0] if first else 'a test'} failed once, then every test passed"
    if STOPPING.is_set():
        return                                        # interrupted: the mutant stays pending
    mutant.seconds = round(time.monotonic() - started, 1)
    mutant.tests_run = len(tests)
    if rc is None:
        mutant.status, mutant.detail = "timeout", f"no result after {timeout:.0f} s"
    elif rc == 0:
        mutant.status = "survived"
        mutant.detail = out if out.startswith("flaky:") else f"{len(tests)} tests passed"
    elif rc == 5:
        mutant.status, mutant.detail = "not-covered", "pytest collected no test"
    else:
        failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, flags=re.M)
        mutant.status = "killed"
        mutant.detail = failed[0] if failed else (out.strip().splitlines() or [f"pytest exit {rc}"])[-1][:200]


def _pytest_on_mutant(tree: Worktree, mutant: Mutant, files: list[str], timeout: float,
                      env: dict[str, str]) -> tuple[int | None, str]:
    """(pytest's exit code, or None on a timeout; its output) for the selected tests, with the mutant in place."""
    tree.write(mutant.apply(tree.original))
    proc = subprocess.Popen(_pytest_cmd(files), cwd=tree.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        return None, ""
    finally:
        RUNNING.discard(proc)
        tree.restore()


# ---------------------------------------------------------------------------------------------------------
# Reports

def load_equivalents(module: str) -> dict[str, dict]:
    if not EQUIVALENTS_FILE.exists():
        return {}
    return json.loads(EQUIVALENTS_FILE.read_text()).get(module, {})


def score(mutants: list[Mutant], equivalents: dict[str, dict]) -> dict:
    ran = [m for m in mutants if m.status != "pending"]
    killed = [m for m in ran if m.status in ("killed", "timeout")]
    survived = [m for m in ran if m.status in ("survived", "not-covered")]
    equivalent = [m for m in survived if m.id in equivalents]
    killed_but_judged = [m.id for m in killed if m.id in equivalents]
    denominator = len(ran) - len(equivalent)
    return {
        "mutants": len(ran), "killed": len(killed), "timeouts": sum(m.status == "timeout" for m in ran),
        "survived": len(survived) - len(equivalent), "equivalent": len(equivalent),
        "not_covered": sum(m.status == "not-covered" and m.id not in equivalents for m in ran),
        "score": round(100 * len(killed) / denominator, 1) if denominator else None,
        "judged_equivalent_but_killed": killed_but_judged,
    }


def markdown(report: dict, source: bytes) -> str:
    meta, s = report["meta"], report["score"]
    eq = report["equivalents"]
    mutants = [Mutant(**m) for m in report["mutants"]]
    lines = [
        f"### {meta['module']}",
        "",
        f"- Source: commit {meta['commit'][:12]} ({meta['commit_date']}), {meta['module']} "
        f"{'with uncommitted changes' if meta['dirty'] else 'as committed'}, sha256 {meta['sha256'][:12]}",
        f"- Command: `{meta['command']}`; tests: {', '.join(meta['scope'])}; date {meta['date']}",
        f"- Mutants: {meta['generated']} generated, {s['mutants']} run"
        + (f" (sample of {meta['sample']}, seed {meta['seed']})" if meta.get("sample") else ""),
        f"- Killed {s['killed']} (timeouts {s['timeouts']}), survived {s['survived']} "
        f"(of which no test executes {s['not_covered']}), judged equivalent {s['equivalent']}: "
        f"**score {s['score']}%** = killed / (run - equivalent)",
        "",
    ]
    by_op = Counter((m.operator, m.status in ("killed", "timeout")) for m in mutants if m.status != "pending")
    lines.append("| operator | run | killed |")
    lines.append("|---|---:|---:|")
    for op in OPERATORS:
        total = by_op[(op, True)] + by_op[(op, False)]
        if total:
            lines.append(f"| {op} | {total} | {by_op[(op, True)]} |")
    lines.append("")
    survivors = [m for m in mutants if m.status in ("survived", "not-covered") and m.id not in eq]
    judged = [m for m in mutants if m.status in ("survived", "not-covered") and m.id in eq]
    if survivors:
        lines += ["Survivors:", ""]
        for m in survivors:
            lines.append(f"- `{m.id}` line {m.line} ({m.qualname}), {m.operator}: {m.description}"
                         f"{' (no test executes it)' if m.status == 'not-covered' else ''}")
        lines.append("")
    if judged:
        lines += ["Judged equivalent:", ""]
        for m in judged:
            lines.append(f"- `{m.id}` line {m.line} ({m.qualname}), {m.description}: {eq[m.id]['why']}")
        lines.append("")
    if report["baseline_failed"]:
        lines += ["Excluded (failing before any mutation): " + ", ".join(report["baseline_failed"]), ""]
    return "\n".join(lines)


def print_list(report: dict, source: bytes) -> None:
    eq = report["equivalents"]
    for m in (Mutant(**d) for d in report["mutants"]):
        if m.status not in ("survived", "not-covered"):
            continue
        tag = "EQUIVALENT: " + eq[m.id]["why"] if m.id in eq else m.status.upper()
        print(f"--- {m.id} {m.module}:{m.line} [{m.operator}] {m.description} in {m.qualname} -- {tag}")
        print(m.diff(source))
        print()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ---------------------------------------------------------------------------------------------------------
# CLI

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="See the module docstring (tools/mutate.py) and tools/README.md.")
    p.add_argument("module", nargs="?", help="e.g. infra/sizing.py")
    p.add_argument("--sample", type=int, help="run a random sample of this many mutants")
    p.add_argument("--seed", type=int, default=16, help="seed of the sample (default 16)")
    p.add_argument("--only", nargs="+", metavar="ID", help="run only these mutant ids")
    p.add_argument("--tests", nargs="+", metavar="PATH", help="test scope (default: SCOPES[module])")
    p.add_argument("--jobs", type=int, default=1, help="mutants at once, one tree copy each (default 1)")
    p.add_argument("--timeout-factor", type=float, default=3.0)
    p.add_argument("--confirm", action="store_true",
                   help="rerun survivors against the module's whole scope, not only the tests executing the line")
    p.add_argument("--json", type=pathlib.Path, help="report path (default $TMPDIR/kaito-aks-mutate/<module>.json)")
    p.add_argument("--markdown", type=pathlib.Path, help="markdown summary path (default next to the JSON)")
    p.add_argument("--reuse-baseline", action="store_true", help="reuse the trace of the previous run")
    p.add_argument("--list", action="store_true", help="print survivors with their diffs")
    p.add_argument("--dry-run", action="store_true", help="generate and count mutants only")
    p.add_argument("--rerun-survivors", type=pathlib.Path, metavar="JSON",
                   help="take a previous report of the same source: keep its killed mutants, rerun its survivors")
    p.add_argument("--show", type=pathlib.Path, metavar="JSON", help="print a previous report (with --list)")
    args = p.parse_args(argv)

    if args.show:
        report = json.loads(args.show.read_text())
        report["equivalents"] = load_equivalents(report["meta"]["module"])
        mutants = [Mutant(**m) for m in report["mutants"]]
        report["score"] = score(mutants, report["equivalents"])
        source = report["source"].encode()
        print(markdown(report, source))
        if args.list:
            print_list(report, source)
        return 0
    if not args.module:
        p.error("name a module (e.g. infra/sizing.py) or --show a report")
    module = args.module
    scope = tuple(args.tests or SCOPES.get(module, UNIT_AND_PROGRAM))
    source_bytes = (REPO / module).read_bytes()
    mutants, invalid = generate(module, source_bytes.decode())
    generated = len(mutants)
    print(f"{module}: {generated} mutants ({invalid} discarded: not valid Python); "
          + ", ".join(f"{op} {n}" for op, n in Counter(m.operator for m in mutants).most_common()), flush=True)
    previous: dict[str, dict] = {}
    if args.rerun_survivors:
        old = json.loads(args.rerun_survivors.read_text())
        if old["meta"]["sha256"] != hashlib.sha256(source_bytes).hexdigest():
            sys.exit(f"{args.rerun_survivors} is a report of another version of {module}; run it afresh")
        previous = {m["id"]: m for m in old["mutants"]}
        args.sample, args.seed = old["meta"].get("sample"), old["meta"].get("seed")
        mutants = [m for m in mutants if m.id in previous]
        for m in mutants:
            if previous[m.id]["status"] in ("killed", "timeout"):
                for key in ("status", "detail", "seconds", "tests_run"):
                    setattr(m, key, previous[m.id][key])
    if args.only:
        mutants = [m for m in mutants if m.id in set(args.only)]
    elif args.sample and not previous and args.sample and args.sample < len(mutants):
        mutants = sorted(random.Random(args.seed).sample(mutants, args.sample), key=lambda m: m.start)
    if args.dry_run:
        for m in mutants:
            print(f"{m.id} {m.line:4d} {m.operator:16s} {m.description:24s} {m.qualname}")
        return 0

    out_json = args.json or DEFAULT_OUT / (module.replace("/", "_").removesuffix(".py") + ".json")
    out_md = args.markdown or out_json.with_suffix(".md")
    work_dir = out_json.parent / (out_json.stem + ".work")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    trace_file = work_dir / "baseline.json"
    for stale in work_dir.glob("tree-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)

    # the commit the copy is made from (the baseline and the mutants can take an hour; HEAD may move meanwhile)
    commit, commit_date = _git("rev-parse", "HEAD"), _git("show", "-s", "--format=%cI", "HEAD")
    trees = [Worktree.copy_of(REPO, work_dir / "tree-0", module)]
    if trees[0].original != source_bytes:
        sys.exit(f"{module} changed while it was copied; run again")
    if args.reuse_baseline and trace_file.exists():
        trace = json.loads(trace_file.read_text())
        print(f"baseline: reused {trace_file} ({trace.get('summary', '')})")
    else:
        trace = baseline(trees[0], scope, work_dir)
        trace_file.write_text(json.dumps(trace))
    selector = Selector(trace, trees[0].root, module)
    if selector.failed:
        print(f"excluded, failing before any mutation: {', '.join(selector.failed)}", flush=True)
    for i in range(1, max(1, args.jobs)):
        trees.append(Worktree.copy_of(trees[0].root, work_dir / f"tree-{i}", module))

    equivalents = load_equivalents(module)
    report = {
        "meta": {
            "module": module, "commit": commit, "commit_date": commit_date,
            "dirty": bool(_git("status", "--porcelain", "--", module)),
            "sha256": hashlib.sha256(source_bytes).hexdigest(), "scope": list(scope),
            "command": "python tools/mutate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, nproc {os.cpu_count()}, {_ram_gib()} GiB RAM, Python "
                       f"{platform.python_version()}",
            "generated": generated, "invalid": invalid, "sample": args.sample, "seed": args.seed,
            "baseline": trace.get("summary", ""), "baseline_seconds": trace.get("seconds"),
        },
        "source": source_bytes.decode(),
        "baseline_failed": selector.failed,
        "equivalents": equivalents,
        "mutants": [],
    }

    lock = threading.Lock()
    todo = [m for m in mutants if m.status == "pending"]
    n_todo = len(todo)
    done_count = [0]

    def save() -> None:
        report["mutants"] = [dataclasses.asdict(m) for m in mutants]
        report["score"] = score(mutants, equivalents)
        tmp = out_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(out_json)

    def worker(tree: Worktree, n: int) -> None:
        env = _base_env(tree.root, scope)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        select_file = work_dir / f"select-{n}.json"
        while True:
            with lock:
                if not todo:
                    return
                m = todo.pop(0)
            tests = selector.select(m)
            timeout = max(60.0, args.timeout_factor * selector.expected_seconds(tests)) if tests else 0
            if STOPPING.is_set():
                return
            run_mutant(tree, m, tests, timeout, env, select_file)
            if STOPPING.is_set():
                return
            if args.confirm and m.status in ("survived", "not-covered"):
                everything = selector.select(m, everything=True)
                run_mutant(tree, m, everything,
                           max(60.0, args.timeout_factor * selector.expected_seconds(everything)), env, select_file)
                if m.status in ("killed", "timeout"):
                    m.detail += " (confirm: killed by the whole scope)"
            with lock:
                done_count[0] += 1
                mark = {"killed": "x", "timeout": "T", "survived": "S", "not-covered": "N"}[m.status]
                print(f"[{done_count[0]}/{n_todo}] {mark} {m.id} line {m.line} {m.operator}: {m.description}"
                      f" ({m.tests_run} tests, {m.seconds:.1f} s){'  ' + m.detail if m.status != 'killed' else ''}",
                      flush=True)
                save()

    def stop(signum, frame):
        STOPPING.set()
        for proc in list(RUNNING):
            _kill_tree(proc)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [threading.Thread(target=worker, args=(tree, n)) for n, tree in enumerate(trees)]
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
    finally:
        for tree in trees:
            tree.restore()
    save()
    if STOPPING.is_set():
        print(f"interrupted; partial report: {out_json} (rerun the rest with --rerun-survivors {out_json})")
        return 130
    text = markdown(report, source_bytes)
    out_md.write_text(text + "\n")
    print()
    print(text)
    print(f"report: {out_json}\nsummary: {out_md}")
    if args.list:
        print_list(report, source_bytes)
    return 0


def _ram_gib() -> int:
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", pathlib.Path("/proc/meminfo").read_text()).group(1))
        return round(kb / 1024 / 1024)
    except (OSError, AttributeError):
        return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:              # `... --dry-run | head`
        sys.exit(0)
