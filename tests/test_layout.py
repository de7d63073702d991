"""The house rules for the package's layout, checked on its source without importing it.

- **Size.** No module is much over 500 lines: at most ``MAX_LINES``.
- **Private stays private.** A module reads only public names of another. Two kinds of reach-in
  are reported, each as ``path:line: text``:

  a. Through a kit module: ``from .x import _name``, ``from wspatterns.x import _name``, or
     ``x._name`` where ``x`` was bound by ``import wspatterns.x`` or ``from . import x``.
     A private module (``_impl.py``) is private to its package: only modules inside that
     package may import it.
  b. Through an object: ``expr._name`` (or ``getattr(expr, "_name")``) where ``expr`` is not
     ``self`` or ``cls`` and this module does not define ``_name`` itself. A module defines a
     name with ``def``, ``class``, an assignment at module or class level, a ``__slots__``
     entry, or ``self._name = ...``; so ``super()._name`` passes when the base class is defined
     here too, and not when it comes from another module or from websockets.
     ``obj._name = ...`` on another object defines it too (a module may tag a websockets
     connection with its own attribute), but only when no other kit module defines ``_name``:
     writing another module's private attribute is a reach-in like reading it.
     Reads of websockets internals (``protocol._something``) are reach-ins too, allowed only in
     the modules of ``INTERNALS``. A few underscore names that the standard library documents
     as public (``PUBLIC_UNDERSCORE``: ``os._exit``, a named tuple's ``_replace``...) are
     allowed everywhere; undocumented ones such as ``sys._getframe`` are not.
     This is a heuristic on names, not types: a foreign object whose private attribute shares
     a name this module defines slips through, and so does an internal without an underscore.

- **websockets internals behind one gate.** Outside the modules of ``INTERNALS`` nothing
  reads a stack frame (``sys._getframe``, ``inspect.currentframe``), reassigns an object's
  ``__class__`` (``x.__class__ = ...``, ``setattr(x, "__class__", ...)``), takes a private name
  of websockets (``from websockets.x import _y``, ``import websockets._x``, ``Name._y`` where
  ``Name`` was imported from websockets), or matches websockets' log text: a string compared
  with ``==``, ``in``..., or given to ``startswith``, ``endswith`` or ``re``, that holds a
  message websockets logs or two words or more of one (read from its installed source).
  Check b. above also reports ``connection.protocol._state``; this one says what the gate is
  for, and sees what b. cannot: a frame read through a name imported from ``sys``, a class
  swapped, websockets' words.

- **Records read by name.** Outside ``RECORDS`` (the module defining a flow's records) no
  record, ``who`` or ``meta`` is indexed by position or unpacked: ``who[0]``, ``x.meta[1:]``,
  ``record[2]``, ``connection, server, client, at = end.who`` are reported; ``who.client`` is
  the way. A heuristic on the names the package gives them.

- **No cycles.** No two modules import each other, even inside functions: every ``import`` and
  ``from ... import`` statement counts, wherever it stands (module level, inside a function,
  under ``if TYPE_CHECKING:``: a type-only import still ties the two modules together).
  Only explicit statements count: the parent packages Python runs on the way to a submodule
  do not, nor do ``importlib`` calls.

Whether a module holds one concept is left to review: no parser can tell.
The checker is plain functions over any directory, so the tests below prove it on planted
packages in ``tmp_path`` before trusting its silence on the real one.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import textwrap
from collections import deque
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wspatterns"

MAX_LINES = 550  # the house says "not much over 500"

# The one small module holding every use of a websockets internal, with why and for which version.
INTERNALS = frozenset({"wspatterns.internals"})

# The module defining a flow's records, and the names the package gives records and their parts.
RECORDS = frozenset({"wspatterns.flow.records"})
RECORD_NAMES = frozenset({"who", "meta", "record", "tail"})

# Underscore names the standard library documents as public API (os._exit, named tuples).
PUBLIC_UNDERSCORE = frozenset(
    {"_exit", "_replace", "_asdict", "_fields", "_field_defaults", "_make"}
)


# The checker.


@dataclass
class Module:
    name: str  # dotted, as Python imports it: wspatterns.flow.sequence
    path: Path
    shown: str  # as reports print it: wspatterns/flow/sequence.py
    is_package: bool
    source: str
    tree: ast.Module


def load(root: Path) -> dict[str, Module]:
    """Every module of the package at ``root``, by dotted name; a package is its ``__init__``."""

    def skipped(relative: Path) -> bool:
        return any(part.startswith(".") or part == "__pycache__" for part in relative.parts)

    modules = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent)
        if skipped(relative):
            continue
        parts = list(relative.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        source = path.read_text(encoding="utf-8")
        name = ".".join(parts)
        modules[name] = Module(
            name, path, relative.as_posix(), is_package, source, ast.parse(source, str(path))
        )
    # A folder without __init__.py is still a package Python can import (a namespace package).
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        relative = folder.relative_to(root.parent)
        name = ".".join(relative.parts)
        if name not in modules and not skipped(relative):
            shown = relative.as_posix() + "/"
            modules[name] = Module(name, folder, shown, True, "", ast.Module([], []))
    return modules


def is_private(name: str) -> bool:
    return (
        len(name) > 1
        and name.startswith("_")
        and not (name.startswith("__") and name.endswith("__"))
    )


def where(module: Module, node: ast.AST, text: str) -> str:
    return f"{module.shown}:{node.lineno}: {text}"


def line_of(module: Module, node: ast.AST) -> str:
    return module.source.splitlines()[node.lineno - 1].strip()


def check_sizes(root: Path, limit: int = MAX_LINES) -> list[str]:
    """One report per module over ``limit`` lines, naming it and its count."""
    return [
        f"{module.shown}: {count} lines; at most {limit}"
        for module in load(root).values()
        if (count := len(module.source.splitlines())) > limit
    ]


def absolute(module: Module, level: int, target: str | None) -> str | None:
    """The dotted name a (possibly relative) import names, or None if it climbs out of the tree."""
    if level == 0:
        return target
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    if level - 1 >= len(package):
        return None
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imported(modules: dict[str, Module], module: Module):
    """(statement, kit module it loads, name it takes from it or None, local name, bound to).

    The last is the kit module the local name stands for, if any: ``import wspatterns.flow``
    loads ``wspatterns.flow`` but binds ``wspatterns``.

    ``from . import x`` takes the submodule ``x`` when there is one (``x.py`` or ``x/``), and
    otherwise the name ``x`` from the package's ``__init__``.
    """
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    if alias.asname:
                        yield node, alias.name, None, alias.asname, alias.name
                    else:
                        top = alias.name.split(".")[0]
                        yield node, alias.name, None, top, top
        elif isinstance(node, ast.ImportFrom):
            base = absolute(module, node.level, node.module)
            if base not in modules:
                continue
            for alias in node.names:
                bound = alias.asname or alias.name
                if f"{base}.{alias.name}" in modules:
                    yield node, f"{base}.{alias.name}", None, bound, f"{base}.{alias.name}"
                else:
                    yield node, base, alias.name, bound, None


def private_module(importer: str, target: str) -> str | None:
    """The private part of ``target``'s name that ``importer``, outside its package, may not see."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        owner = ".".join(parts[:i])
        if is_private(part) and importer != owner and not importer.startswith(owner + "."):
            return ".".join(parts[: i + 1])
    return None


def is_self(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Name) and expr.id in ("self", "cls")


class Definitions(ast.NodeVisitor):
    """The private names a module defines itself: ``strong``, and ``weak`` (``obj._x = ...``)."""

    def __init__(self, tree: ast.Module) -> None:
        self.strong: set[str] = set()
        self.weak: set[str] = set()
        self.functions = 0  # names bound inside functions are locals, not definitions
        self.visit(tree)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.strong.add(node.name)
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.strong.add(node.name)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store) and not self.functions:
            self.strong.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Store):
            (self.strong if is_self(node.value) else self.weak).add(node.attr)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            self.strong.update(
                each.value
                for each in ast.walk(node.value)
                if isinstance(each, ast.Constant) and isinstance(each.value, str)
            )
        self.generic_visit(node)


def private_reads(node: ast.AST) -> tuple[ast.expr, str] | None:
    """(expr, name) when ``node`` is ``expr._name`` or ``getattr(expr, "_name", ...)``."""
    if isinstance(node, ast.Attribute):
        expr, name = node.value, node.attr
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        expr, name = node.args[0], node.args[1].value
    else:
        return None
    return (expr, name) if is_private(name) and name not in PUBLIC_UNDERSCORE else None


def check_privacy(root: Path, internals: frozenset[str] = INTERNALS) -> list[str]:
    """One report per reach-in into another module's or another library's private names."""
    modules = load(root)
    definitions = {name: Definitions(module.tree) for name, module in modules.items()}
    reports = []  # (path, line, column, text), sorted to read in order

    for module in modules.values():

        def report(node: ast.AST, text: str, why: str, module: Module = module) -> None:
            reports.append((module.shown, node.lineno, node.col_offset, f"{text}  ({why})"))

        others_define = set().union(
            *(d.strong for name, d in definitions.items() if name != module.name)
        )
        mine = definitions[module.name]
        defined = mine.strong | (mine.weak - others_define)
        aliases = {}  # local name -> the kit module it stands for

        for node, target, name, bound, bound_to in imported(modules, module):
            if bound_to is not None:
                aliases[bound] = bound_to
            if name is None and (hidden := private_module(module.name, target)):
                report(node, line_of(module, node), f"imports {hidden}, private to its package")
            elif name is not None and is_private(name) and target != module.name:
                report(node, line_of(module, node), f"imports private {name} of {target}")

        def module_of(expr: ast.expr, aliases: dict[str, str] = aliases) -> str | None:
            if isinstance(expr, ast.Name):
                return aliases.get(expr.id)
            if isinstance(expr, ast.Attribute):
                base = module_of(expr.value)
                if base and f"{base}.{expr.attr}" in modules:
                    return f"{base}.{expr.attr}"
            return None

        for node in ast.walk(module.tree):
            if (read := private_reads(node)) is None:
                continue
            expr, name = read
            text = ast.get_source_segment(module.source, node) or line_of(module, node)
            owner = module_of(expr)
            if owner is None:
                if not (is_self(expr) or name in defined or module.name in internals):
                    report(node, text, f"{name} is not defined in this module")
            elif f"{owner}.{name}" in modules:
                if hidden := private_module(module.name, f"{owner}.{name}"):
                    report(node, text, f"{hidden} is private to its package")
            elif owner != module.name:
                report(node, text, f"private {name} of {owner}")

    return [f"{path}:{line}: {text}" for path, line, _, text in sorted(reports)]


# How a module reads a stack frame: sys._getframe(), inspect.currentframe().
FRAME_READERS = frozenset({"_getframe", "currentframe"})

LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "exception", "critical"})


@cache
def websockets_log_texts() -> frozenset[str]:
    """The words of every message the installed websockets logs, cut at its ``%s``-style
    placeholders: ``connection handler failed``, ``skipped broadcast: failed to write message:``.
    Pieces shorter than 8 characters are left out (``< EOF``)."""
    spec = importlib.util.find_spec("websockets")
    assert spec is not None and spec.origin is not None
    texts = set()
    for path in Path(spec.origin).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_LEVELS
                and "logger" in ast.unparse(node.func.value)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                pieces = re.split(r"%[-.0-9]*[a-z]", node.args[0].value)
                texts.update(piece.strip() for piece in pieces if len(piece.strip()) >= 8)
    return frozenset(texts)


def matched_texts(node: ast.AST) -> list[str]:
    """The strings ``node`` matches text against: the operands of a comparison, the arguments
    of ``startswith``, ``endswith`` and of the ``re`` module's functions."""
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and (
            node.func.attr in ("startswith", "endswith")
            or isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
        )
    ):
        operands = [*node.args]
    else:
        return []
    return [
        each.value
        for each in operands
        if isinstance(each, ast.Constant) and isinstance(each.value, str) and len(each.value) >= 8
    ]


def check_internals(
    root: Path, internals: frozenset[str] = INTERNALS, log_texts: frozenset[str] | None = None
) -> list[str]:
    """One report per use of websockets internals (or of frames and class swaps) outside
    ``internals``; ``log_texts`` (the installed websockets' when left out) are what it logs."""
    texts = websockets_log_texts() if log_texts is None else log_texts
    reports = []
    for module in load(root).values():
        if module.name in internals:
            continue

        def report(node: ast.AST, why: str, module: Module = module) -> None:
            text = ast.get_source_segment(module.source, node) or line_of(module, node)
            reports.append((module.shown, node.lineno, node.col_offset, f"{text}  ({why})"))

        from_websockets = set()  # local names bound to a websockets module or object
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "websockets":
                        if any(is_private(part) for part in alias.name.split(".")):
                            report(node, f"imports {alias.name}, private to websockets")
                        from_websockets.add(alias.asname or "websockets")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                parts = node.module.split(".")
                if parts[0] == "websockets":
                    names = [alias.name for alias in node.names]
                    if any(is_private(part) for part in parts + names):
                        report(node, "imports a name private to websockets")
                    from_websockets.update(alias.asname or alias.name for alias in node.names)
                if node.module in ("sys", "inspect"):
                    if any(alias.name in FRAME_READERS for alias in node.names):
                        report(node, "reads stack frames")

        for node in ast.walk(module.tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                if node.attr in FRAME_READERS:
                    report(node, "reads stack frames")
                elif (
                    is_private(node.attr)
                    and isinstance(node.value, ast.Name)
                    and node.value.id in from_websockets
                ):
                    report(node, f"private {node.attr} of websockets")
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = [
                    each
                    for target in node.targets
                    for each in (target.elts if isinstance(target, ast.Tuple) else [target])
                ]
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            elif (
                isinstance(node, ast.Call)
                and (
                    isinstance(node.func, ast.Name)
                    and node.func.id == "setattr"
                    or isinstance(node.func, ast.Attribute)
                    and node.func.attr == "__setattr__"
                )
                and any(
                    isinstance(arg, ast.Constant) and arg.value == "__class__" for arg in node.args
                )
            ):
                report(node, "swaps an object's class")
            if any(isinstance(t, ast.Attribute) and t.attr == "__class__" for t in targets):
                report(node, "swaps an object's class")
            for text in matched_texts(node):
                words = text.strip()  # a word alone ("broadcast") is no message
                logged = sorted(t for t in texts if " " in words and words in t or t in text)
                if logged:
                    report(node, f"matches websockets' log text {logged[0]!r}")

    return [f"{path}:{line}: {text}" for path, line, _, text in sorted(reports)]


def is_record(node: ast.expr) -> bool:
    """``node`` names a record or a part of one: ``who``, ``end.who``, ``record``..."""
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
    return name in RECORD_NAMES


def is_position(node: ast.expr) -> bool:
    """``node`` is a subscript's position: a whole number, or a slice of them."""
    if isinstance(node, ast.Slice):
        return all(part is None or is_position(part) for part in (node.lower, node.upper))
    if isinstance(node, ast.UnaryOp):
        return is_position(node.operand)
    return isinstance(node, ast.Constant) and type(node.value) is int


def check_records(root: Path, records: frozenset[str] = RECORDS) -> list[str]:
    """One report per record, ``who`` or ``meta`` read by position outside ``records``."""
    reports = []
    for module in load(root).values():
        if module.name in records:
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Subscript) and is_record(node.value):
                if is_position(node.slice):
                    reports.append(where(module, node, "read by position, not by name"))
            elif isinstance(node, ast.Assign | ast.For | ast.comprehension):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                source = node.value if isinstance(node, ast.Assign) else node.iter
                if is_record(source) and any(isinstance(t, ast.Tuple) for t in targets):
                    reports.append(where(module, source, "unpacked by position, not by name"))
    return sorted(reports)


def import_graph(root: Path) -> tuple[dict[str, Module], dict[tuple[str, str], ast.stmt]]:
    """The kit's modules, and for each (importer, imported) the first statement tying them."""
    modules = load(root)
    edges: dict[tuple[str, str], ast.stmt] = {}
    for module in modules.values():
        for node, target, *_ in imported(modules, module):
            edge = (module.name, target)
            if edge not in edges or node.lineno < edges[edge].lineno:
                edges[edge] = node
    return modules, edges


def tangles(nodes: list[str], edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of the graph (Tarjan), each sorted."""
    after: dict[str, list[str]] = {node: [] for node in nodes}
    for source, target in sorted(edges):
        after[source].append(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in after[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            components.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return components


def check_cycles(root: Path) -> list[str]:
    """One report per import cycle: its modules in order, and the statement behind each step."""
    modules, edges = import_graph(root)
    reports = []
    for component in tangles(sorted(modules), set(edges)):
        start = component[0]
        if len(component) == 1 and (start, start) not in edges:
            continue
        # The shortest way from start back to itself, inside the component.
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if (node, start) in edges:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                cycle = [*reversed(path), start]
                break
            for source, target in sorted(edges):
                if source == node and target in component and target not in came_from:
                    came_from[target] = node
                    queue.append(target)
        steps = [
            "  " + where(modules[a], edges[a, b], line_of(modules[a], edges[a, b]))
            for a, b in pairwise(cycle)
        ]
        tangle = (
            f" (all tangled: {', '.join(component)})" if len(component) > len(cycle) - 1 else ""
        )
        reports.append(" → ".join(cycle) + tangle + "\n" + "\n".join(steps))
    return reports


def failure(reports: list[str], rule: str) -> str:
    return f"{rule} ({len(reports)}):\n" + "\n".join(reports)


# The real package.


def test_no_module_is_much_over_500_lines():
    reports = check_sizes(PACKAGE)
    assert not reports, failure(reports, "modules too long")


def test_no_module_reads_another_modules_private_names():
    reports = check_privacy(PACKAGE)
    assert not reports, failure(reports, "reach-ins into private names")


def test_websockets_internals_are_used_only_behind_the_gate():
    reports = check_internals(PACKAGE)
    assert not reports, failure(reports, "websockets internals outside internals.py")


def test_records_are_read_by_name():
    reports = check_records(PACKAGE)
    assert not reports, failure(reports, "records read by position")


def test_records_read_by_position_are_reported(tmp_path):
    root = plant(
        tmp_path,
        {
            "flow/records.py": "def first(who):\n    return who[0], who[1:]\n",
            "views.py": """
                def names(end, record, events):
                    connection, server, client, at = end.who
                    kind = record.meta[0]
                    tail = [who[-1] for who in events]
                    for number, *_ in end.who:
                        pass
                    firsts = {a for a, b in record.tail}
                    return end.who.client, record.meta.kind, events[0], end.who[at]
            """,
        },
    )
    reports = check_records(root)
    assert [report.split(": ", 1)[0] for report in reports] == [
        "wspatterns/views.py:3", "wspatterns/views.py:4", "wspatterns/views.py:5",
        "wspatterns/views.py:6", "wspatterns/views.py:8",
    ], reports  # fmt: skip
    assert check_records(plant(tmp_path / "clean", CLEAN)) == []


def test_no_two_modules_import_each_other():
    reports = check_cycles(PACKAGE)
    assert not reports, failure(reports, "import cycles")


# The checker, fed wrong answers.


def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    """A package named wspatterns in tmp_path holding ``files``; each folder gets an __init__."""
    root = tmp_path / "wspatterns"
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return root


CLEAN = {
    "__init__.py": "from .flow import Flow\n",
    "settings.py": "TIMEOUT = 10\n_DEFAULT = 3\n",
    "flow.py": """
        import os
        import sys
        from collections import namedtuple
        from typing import TYPE_CHECKING

        from . import settings

        if TYPE_CHECKING:
            from .settings import TIMEOUT

        Event = namedtuple("Event", "kind size")

        class Flow:
            __slots__ = ("_records", "_token")

            def __init__(self):
                self._records = []
                self._token = settings.TIMEOUT

            @classmethod
            def empty(cls):
                return cls._make()

            @classmethod
            def _make(cls):
                return cls()

            def copy(self, other: "Flow"):
                merged = Flow()
                merged._records.extend(other._records)
                return merged

            def _first(self):
                return self._records[0]._replace(size=0)._asdict()

        class Chatty(Flow):
            def first(self):
                return super()._first()

        def bye(websocket):
            websocket._wspatterns_flow = None  # our own tag on a websockets connection
            print(websocket._wspatterns_flow, sys.version, Flow.__name__)
            os._exit(0)
    """,
    "views.py": """
        from .flow import Flow

        def draw(flow: Flow):
            return flow.copy(flow)
    """,
}


def test_checker_finds_nothing_in_a_clean_package(tmp_path):
    root = plant(tmp_path, CLEAN)
    assert check_sizes(root) == []
    assert check_privacy(root) == []
    assert check_cycles(root) == []


def test_checker_reports_a_module_over_the_limit_with_its_count(tmp_path):
    root = plant(tmp_path, {"big.py": "x = 1\n" * 600, "small.py": "x = 1\n" * MAX_LINES})
    assert check_sizes(root) == [f"wspatterns/big.py: 600 lines; at most {MAX_LINES}"]


def test_checker_reports_a_private_name_read_through_a_module(tmp_path):
    root = plant(
        tmp_path,
        {
            "other.py": "_secret = 42\n",
            "reader.py": """
                from . import other

                def peek():
                    return other._secret
            """,
            "absolute.py": """
                import wspatterns.other

                print(wspatterns.other._secret)
            """,
        },
    )
    assert check_privacy(root) == [
        "wspatterns/absolute.py:4: wspatterns.other._secret  (private _secret of wspatterns.other)",
        "wspatterns/reader.py:5: other._secret  (private _secret of wspatterns.other)",
    ]


def test_checker_reports_a_private_name_imported_from_another_module(tmp_path):
    root = plant(
        tmp_path,
        {
            "other.py": "_secret = 42\n",
            "relative.py": "from .other import _secret\n",
            "absolute.py": "from wspatterns.other import _secret as secret\n",
        },
    )
    assert check_privacy(root) == [
        "wspatterns/absolute.py:1: from wspatterns.other import _secret as secret"
        "  (imports private _secret of wspatterns.other)",
        "wspatterns/relative.py:1: from .other import _secret"
        "  (imports private _secret of wspatterns.other)",
    ]


def test_checker_reports_private_attributes_of_objects_from_elsewhere(tmp_path):
    root = plant(
        tmp_path,
        {
            "runtime.py": """
                class Server:
                    def __init__(self):
                        self._ws = None
                        self._quiet = False

                    def _start(self):
                        return self._ws
            """,
            "threads.py": """
                from .runtime import Server

                class ThreadServer(Server):
                    def start(self):
                        return super()._start()
            """,
            "experiments.py": """
                import sys

                def tasks(server):
                    server._quiet = True
                    frame = sys._getframe()
                    return server._ws.handler_tasks, getattr(server, "_ws"), frame
            """,
        },
    )
    assert check_privacy(root) == [
        "wspatterns/experiments.py:5: server._quiet  (_quiet is not defined in this module)",
        "wspatterns/experiments.py:6: sys._getframe  (_getframe is not defined in this module)",
        "wspatterns/experiments.py:7: server._ws  (_ws is not defined in this module)",
        'wspatterns/experiments.py:7: getattr(server, "_ws")  (_ws is not defined in this module)',
        "wspatterns/threads.py:6: super()._start  (_start is not defined in this module)",
    ]


def test_websockets_internals_are_read_only_in_the_designated_module(tmp_path):
    reader = """
        def state(connection):
            return connection.protocol._state
    """
    root = plant(tmp_path, {"internals.py": reader, "runtime/server.py": reader})
    assert "wspatterns.internals" in INTERNALS
    assert check_privacy(root) == [
        "wspatterns/runtime/server.py:3: connection.protocol._state"
        "  (_state is not defined in this module)",
    ]


# Every way in the rule about websockets internals, in one module.
REACHES_IN = """
    import logging
    import re
    import sys
    from inspect import currentframe

    import websockets.legacy._private
    from websockets.asyncio import connection
    from websockets.asyncio.connection import Connection, _helper
    from websockets.protocol import OPEN

    def broadcasting():
        return sys._getframe(2).f_code is connection.broadcast.__code__, currentframe()

    def watch(websocket, watched):
        websocket.__class__ = watched
        setattr(websocket, "__class__", watched)
        object.__setattr__(websocket, "__class__", Connection)
        return Connection._private_default, websocket.state is OPEN

    def quiet(record: logging.LogRecord):
        return (
            record.getMessage() == "connection handler failed"
            or record.msg.startswith("skipped broadcast")
            or re.match("failed to write message: ", record.msg)
        )
"""

CLEAN_WEBSOCKETS_USE = """
    import logging

    from websockets.asyncio.connection import Connection
    from websockets.protocol import OPEN

    def usable(websocket: Connection, record: logging.LogRecord, flow):
        flow.websocket_class = websocket.__class__  # reading a class is no swap
        return websocket.state is OPEN and record.levelno == logging.ERROR and "handler" in flow
"""

LOG_TEXTS = frozenset(
    {
        "connection handler failed",
        "skipped broadcast: failed to write message:",
        "skipped broadcast: sending a fragmented message",
    }
)


def test_websockets_internals_outside_the_gate_are_reported(tmp_path):
    root = plant(
        tmp_path,
        {
            "internals.py": REACHES_IN,
            "flow/recording.py": REACHES_IN,
            "views.py": CLEAN_WEBSOCKETS_USE,
        },
    )
    shown = "wspatterns/flow/recording.py"
    assert check_internals(root, log_texts=LOG_TEXTS) == [
        f"{shown}:5: from inspect import currentframe  (reads stack frames)",
        f"{shown}:7: import websockets.legacy._private"
        "  (imports websockets.legacy._private, private to websockets)",
        f"{shown}:9: from websockets.asyncio.connection import Connection, _helper"
        "  (imports a name private to websockets)",
        f"{shown}:13: sys._getframe  (reads stack frames)",
        f"{shown}:16: websocket.__class__ = watched  (swaps an object's class)",
        f'{shown}:17: setattr(websocket, "__class__", watched)  (swaps an object\'s class)',
        f'{shown}:18: object.__setattr__(websocket, "__class__", Connection)'
        "  (swaps an object's class)",
        f"{shown}:19: Connection._private_default  (private _private_default of websockets)",
        f'{shown}:23: record.getMessage() == "connection handler failed"'
        "  (matches websockets' log text 'connection handler failed')",
        f'{shown}:24: record.msg.startswith("skipped broadcast")'
        "  (matches websockets' log text 'skipped broadcast: failed to write message:')",
        f'{shown}:25: re.match("failed to write message: ", record.msg)'
        "  (matches websockets' log text 'skipped broadcast: failed to write message:')",
    ]


def test_the_log_texts_are_read_from_the_installed_websockets():
    texts = websockets_log_texts()
    assert "connection handler failed" in texts
    assert "skipped broadcast: failed to write message:" in texts  # cut before its "%s"
    assert "< EOF" not in texts  # too short to tell from anything else


def test_private_modules_are_private_to_their_package(tmp_path):
    root = plant(
        tmp_path,
        {
            "runtime/_registry.py": "servers = {}\n",
            "runtime/server.py": "from . import _registry\n",
            "runtime/client.py": "from ._registry import servers\n",
            "flow.py": "from .runtime import _registry\n",
            "views.py": "import wspatterns.runtime._registry\n",
        },
    )
    assert check_privacy(root) == [
        "wspatterns/flow.py:1: from .runtime import _registry"
        "  (imports wspatterns.runtime._registry, private to its package)",
        "wspatterns/views.py:1: import wspatterns.runtime._registry"
        "  (imports wspatterns.runtime._registry, private to its package)",
    ]


def test_checker_reports_a_cycle_through_a_function_level_import(tmp_path):
    root = plant(
        tmp_path,
        {
            "flow.py": """
                class Flow:
                    def sequence(self):
                        from . import views

                        return views.sequence(self)
            """,
            "views.py": """
                from .flow import Flow

                def sequence(flow: Flow):
                    return str(flow)
            """,
        },
    )
    assert check_cycles(root) == [
        "wspatterns.flow → wspatterns.views → wspatterns.flow\n"
        "  wspatterns/flow.py:4: from . import views\n"
        "  wspatterns/views.py:2: from .flow import Flow"
    ]


def test_type_only_imports_and_self_imports_make_cycles(tmp_path):
    root = plant(
        tmp_path,
        {
            "recorder.py": """
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from .views import View
            """,
            "views.py": "import wspatterns.recorder\n",
            "loner.py": "from wspatterns.loner import x\n\nx = 1\n",
        },
    )
    assert check_cycles(root) == [
        "wspatterns.loner → wspatterns.loner\n"
        "  wspatterns/loner.py:1: from wspatterns.loner import x",
        "wspatterns.recorder → wspatterns.views → wspatterns.recorder\n"
        "  wspatterns/recorder.py:5: from .views import View\n"
        "  wspatterns/views.py:1: import wspatterns.recorder",
    ]


def test_relative_imports_resolve_to_the_module_they_load(tmp_path):
    root = plant(
        tmp_path,
        {
            "__init__.py": "from . import views\nfrom .flow import Flow\n",
            "settings.py": "",
            "views.py": "",
            "flow/__init__.py": "from .recorder import Flow\nFlow = Flow\n",
            "flow/recorder.py": "class Flow: ...\n",
            "flow/sequence.py": (
                "from .recorder import Flow\nfrom .. import settings\nfrom . import Flow as F\n"
            ),
        },
    )
    _, edges = import_graph(root)
    assert sorted(edges) == [
        ("wspatterns", "wspatterns.flow"),
        ("wspatterns", "wspatterns.views"),
        ("wspatterns.flow", "wspatterns.flow.recorder"),
        ("wspatterns.flow.sequence", "wspatterns.flow"),  # Flow is a name in flow/__init__
        ("wspatterns.flow.sequence", "wspatterns.flow.recorder"),
        ("wspatterns.flow.sequence", "wspatterns.settings"),
    ]
    # Importing wspatterns.flow.recorder runs wspatterns/flow/__init__.py, which imports it back:
    # Python's doing, not a statement, so no cycle.
    assert check_cycles(root) == []


def test_a_cycle_through_a_package_init_is_reported(tmp_path):
    root = plant(
        tmp_path,
        {
            "flow/__init__.py": "from .sequence import draw\n",
            "flow/sequence.py": "def draw():\n    from . import Flow\n",
        },
    )
    assert check_cycles(root) == [
        "wspatterns.flow → wspatterns.flow.sequence → wspatterns.flow\n"
        "  wspatterns/flow/__init__.py:1: from .sequence import draw\n"
        "  wspatterns/flow/sequence.py:2: from . import Flow"
    ]
