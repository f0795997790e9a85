"""The import rules of LAYOUT.md, checked on the source with ``ast`` (nothing is imported).

Rules (each violation is reported as ``path:line: message``):

* ``cycles`` - no import cycles among the modules of the four packages. Imports inside
  ``if TYPE_CHECKING:`` are not edges; an import inside a function is an edge (a lazy import that
  hides a cycle is still a cycle).
* ``library_layers`` - ``device_drivers``, ``vision`` and ``sync`` never import ``edge_agent``, nor
  one another (except the pairs in :data:`ALLOWED_LIBRARY_EDGES`).
* ``no_simulators`` - no production module imports a simulator module (``sim``, ``*_sim``,
  ``simulators``) or a name another module re-exports from one, except the modules in
  :data:`SIMULATOR_GATEWAYS`.
* ``config_leaves`` - config leaf modules import only the standard library, pydantic and other
  config leaves.
* ``package_roots`` - ``edge_agent`` imports the three libraries through their package roots
  (``from device_drivers import X``), except a library's config leaf (composing leaves must not
  import the library's runtime, which its root does).
* ``no_module_getattr`` - no module defines a module-level ``__getattr__``.

An edge from ``import a.b.c`` goes to ``a.b.c``; from ``from a.b import c`` to ``a.b.c`` when that
is a module, else to ``a.b``. Parent packages' ``__init__`` are not added as edges (as in grimp /
import-linter): every submodule import would otherwise close a cycle through its own package.
``TYPE_CHECKING`` imports are ignored by ``cycles`` and ``config_leaves`` (runtime concerns) and
counted by the layering rules (a type-only dependency is still a dependency).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES: tuple[str, ...] = ("edge_agent", "device_drivers", "vision", "sync")
LIBRARIES: tuple[str, ...] = ("device_drivers", "vision", "sync")

ALLOWED_LIBRARY_EDGES: frozenset[tuple[str, str]] = frozenset()
"""(importing library, imported library) pairs allowed despite ``library_layers``. None for now."""

SIMULATOR_GATEWAYS: frozenset[str] = frozenset({"device_drivers.registry"})
"""Production modules that may import simulators: the registry is how the agent reaches them."""

SIMULATOR_NAMES: frozenset[str] = frozenset({"sim", "simulators"})
SIMULATOR_SUFFIX = "_sim"

CONFIG_EXTRA_LEAVES: frozenset[str] = frozenset({"edge_agent.camera_settings", "edge_agent.api.settings"})
CONFIG_NAMED_NON_LEAVES: frozenset[str] = frozenset({"edge_agent.api.routers.config"})
"""Modules named ``config`` that are not configuration models (the API's router for ``/config``)."""
CONFIG_PACKAGE = "edge_agent.config"
CONFIG_PACKAGE_NON_LEAVES: frozenset[str] = frozenset(
    {"edge_agent.config", "edge_agent.config.loader", "edge_agent.config.edit", "edge_agent.config.root"}
)
"""In ``edge_agent/config/`` every module is a leaf model except the package itself, the YAML loader
and editor (which read and write the file, not models) and the root model (which composes the
libraries' device union, so it imports their roots)."""

LEAF_THIRD_PARTY: frozenset[str] = frozenset({"pydantic", "pydantic_core"})

RULES: tuple[str, ...] = (
    "cycles",
    "library_layers",
    "no_simulators",
    "config_leaves",
    "package_roots",
    "no_module_getattr",
)


@dataclass(frozen=True)
class Import:
    """One imported module (or ``module`` + ``name``) at one line."""

    target: str  # the module named by the statement (absolute)
    names: tuple[str, ...]  # the names of ``from target import ...``; empty for ``import target``
    line: int
    type_checking: bool
    in_function: bool


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: list[Import] = field(default_factory=list)
    getattr_lines: list[int] = field(default_factory=list)

    @property
    def top(self) -> str:
        return self.name.split(".")[0]


@dataclass(frozen=True, order=True)
class Violation:
    rule: str
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_relative(module: Module, level: int, target: str | None) -> str:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".")
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    base = ".".join(parts)
    return f"{base}.{target}" if target else base


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: Module) -> None:
        self.module = module
        self.type_checking = 0
        self.function = 0
        self.scope_depth = 0  # functions and classes: module-level __getattr__ is at depth 0

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.type_checking += 1
            for child in node.body:
                self.visit(child)
            self.type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if self.scope_depth == 0 and node.name == "__getattr__":
            self.module.getattr_lines.append(node.lineno)
        self.function += 1
        self.scope_depth += 1
        self.generic_visit(node)
        self.scope_depth -= 1
        self.function -= 1

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.function += 1
        self.generic_visit(node)
        self.function -= 1

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope_depth += 1
        self.generic_visit(node)
        self.scope_depth -= 1

    def visit_Assign(self, node: ast.Assign) -> None:
        if self.scope_depth == 0 and any(
            isinstance(t, ast.Name) and t.id == "__getattr__" for t in node.targets
        ):
            self.module.getattr_lines.append(node.lineno)
        self.generic_visit(node)

    def _add(self, target: str, names: tuple[str, ...], line: int) -> None:
        self.module.imports.append(Import(target, names, line, self.type_checking > 0, self.function > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, (), node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        target = _resolve_relative(self.module, node.level, node.module) if node.level else node.module or ""
        self._add(target, tuple(a.name for a in node.names), node.lineno)


def load_modules(root: Path, packages: Sequence[str] = PACKAGES) -> dict[str, Module]:
    """Every ``.py`` module under ``root/<package>`` for each package, parsed (not imported)."""
    modules: dict[str, Module] = {}
    for package in packages:
        base = root / package
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if "__pycache__" in parts:
                continue
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            module = Module(".".join(parts), path, is_package)
            _Visitor(module).visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
            modules[module.name] = module
    return modules


def _internal(name: str, modules: dict[str, Module]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(imp: Import, modules: dict[str, Module]) -> Iterator[str]:
    """The modules of ours that one import statement executes (see the module docstring)."""
    if imp.names:
        rest: list[str] = []
        for name in imp.names:
            sub = f"{imp.target}.{name}"
            if sub in modules:
                yield sub
            else:
                rest.append(name)
        if rest:
            found = _internal(imp.target, modules)
            if found is not None:
                yield found
    else:
        found = _internal(imp.target, modules)
        if found is not None:
            yield found


def _rel(module: Module, root: Path) -> str:
    try:
        return str(module.path.relative_to(root))
    except ValueError:
        return str(module.path)


def _is_simulator(name: str) -> bool:
    return any(part in SIMULATOR_NAMES or part.endswith(SIMULATOR_SUFFIX) for part in name.split("."))


def _is_config_leaf(name: str, modules: dict[str, Module]) -> bool:
    if name in CONFIG_EXTRA_LEAVES:
        return True
    if name.startswith(CONFIG_PACKAGE + "."):
        return name not in CONFIG_PACKAGE_NON_LEAVES
    if name in CONFIG_NAMED_NON_LEAVES:
        return False
    module = modules.get(name)
    return name.rsplit(".", 1)[-1] == "config" and module is not None and not module.is_package


def _tarjan(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _shortest_cycle(start: str, graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected component."""
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following: list[str] = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in seen:
                    seen.add(w)
                    previous[w] = v
                    following.append(w)
        frontier = following
    return [start]


def check_cycles(modules: dict[str, Module], root: Path) -> list[Violation]:
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[int]] = defaultdict(list)
    for module in modules.values():
        for imp in module.imports:
            if imp.type_checking:
                continue
            for target in _targets(imp, modules):
                if target == module.name:
                    continue  # `from . import x` in a package's own __init__ resolving to itself
                graph[module.name].add(target)
                where[(module.name, target)].append(imp.line)
    out: list[Violation] = []
    for component in _tarjan(graph):
        members = set(component)
        cycle = _shortest_cycle(component[0], graph, members)
        summary = " -> ".join(cycle)
        for name in component:
            for target in sorted(graph[name] & members):
                for line in where[(name, target)]:
                    out.append(
                        Violation(
                            "cycles",
                            _rel(modules[name], root),
                            line,
                            f"{name} imports {target}, in a cycle of {len(component)} modules ({summary})",
                        )
                    )
    return out


def check_library_layers(modules: dict[str, Module], root: Path) -> list[Violation]:
    out: list[Violation] = []
    for module in modules.values():
        if module.top not in LIBRARIES:
            continue
        for imp in module.imports:
            top = imp.target.split(".")[0]
            if top == module.top or top not in PACKAGES:
                continue
            if top == "edge_agent":
                why = "a library never imports edge_agent"
            elif (module.top, top) in ALLOWED_LIBRARY_EDGES:
                continue
            else:
                why = f"{module.top} does not import {top}"
            out.append(
                Violation("library_layers", _rel(module, root), imp.line, f"imports {imp.target}: {why}")
            )
    return out


def _simulator_names(modules: dict[str, Module]) -> dict[str, set[str]]:
    """For each module, the names it takes from a simulator module, directly or through another
    module's re-export (so ``from device_drivers import CardReaderSimulator`` is caught when the
    package root re-exports it from ``simulators``)."""
    names: dict[str, set[str]] = defaultdict(set)
    changed = True
    while changed:
        changed = False
        for module in modules.values():
            for imp in module.imports:
                for name in imp.names:
                    if name in names[module.name]:
                        continue
                    source = _internal(imp.target, modules)
                    if _is_simulator(imp.target) or (source is not None and name in names[source]):
                        names[module.name].add(name)
                        changed = True
    return names


def check_no_simulators(modules: dict[str, Module], root: Path) -> list[Violation]:
    out: list[Violation] = []
    reexported = _simulator_names(modules)
    for module in modules.values():
        if _is_simulator(module.name) or module.name in SIMULATOR_GATEWAYS:
            continue
        for imp in module.imports:
            if _is_simulator(imp.target) or any(_is_simulator(f"{imp.target}.{n}") for n in imp.names):
                what = imp.target
            else:
                source = _internal(imp.target, modules)
                sims = sorted(n for n in imp.names if source is not None and n in reexported[source])
                if not sims:
                    continue
                what = f"{', '.join(sims)} (re-exported by {imp.target})"
            out.append(
                Violation(
                    "no_simulators",
                    _rel(module, root),
                    imp.line,
                    f"imports the simulator {what}; only {', '.join(sorted(SIMULATOR_GATEWAYS))} may",
                )
            )
    return out


def check_config_leaves(modules: dict[str, Module], root: Path) -> list[Violation]:
    out: list[Violation] = []
    stdlib = sys.stdlib_module_names
    for module in modules.values():
        if not _is_config_leaf(module.name, modules):
            continue
        for imp in module.imports:
            if imp.type_checking:
                continue
            top = imp.target.split(".")[0]
            if top in stdlib or top in LEAF_THIRD_PARTY:
                continue
            if top in PACKAGES:
                targets = list(_targets(imp, modules)) or [imp.target]
                bad = [t for t in targets if not _is_config_leaf(t, modules)]
                if not bad:
                    continue
                why = f"{', '.join(bad)} is not a config leaf"
            else:
                why = f"{top} is neither the standard library nor pydantic"
            out.append(
                Violation(
                    "config_leaves", _rel(module, root), imp.line, f"config leaf imports {imp.target}: {why}"
                )
            )
    return out


def check_package_roots(modules: dict[str, Module], root: Path) -> list[Violation]:
    out: list[Violation] = []
    for module in modules.values():
        if module.top != "edge_agent":
            continue
        for imp in module.imports:
            top = imp.target.split(".")[0]
            if top not in LIBRARIES:
                continue
            if imp.target == top:
                # `from sync import outbox` names a submodule: the root's surface is its __all__.
                subs = [n for n in imp.names if f"{top}.{n}" in modules]
                if subs:
                    message = f"imports the submodule(s) {', '.join(subs)} of {top}: use names from its root"
                    out.append(Violation("package_roots", _rel(module, root), imp.line, message))
                continue
            if _is_config_leaf(imp.target, modules):
                continue
            out.append(
                Violation(
                    "package_roots",
                    _rel(module, root),
                    imp.line,
                    f"imports {imp.target}: use the package root (from {top} import ...)",
                )
            )
    return out


def check_no_module_getattr(modules: dict[str, Module], root: Path) -> list[Violation]:
    return [
        Violation("no_module_getattr", _rel(m, root), line, f"{m.name} defines a module-level __getattr__")
        for m in modules.values()
        for line in m.getattr_lines
    ]


CHECKS = {
    "cycles": check_cycles,
    "library_layers": check_library_layers,
    "no_simulators": check_no_simulators,
    "config_leaves": check_config_leaves,
    "package_roots": check_package_roots,
    "no_module_getattr": check_no_module_getattr,
}


def check(
    root: Path, packages: Sequence[str] = PACKAGES, rules: Iterable[str] = RULES
) -> dict[str, list[Violation]]:
    """Every violation under ``root``, by rule, sorted by file and line."""
    modules = load_modules(root, packages)
    return {rule: sorted(set(CHECKS[rule](modules, root))) for rule in rules}


def report(violations: Sequence[Violation]) -> str:
    return "\n".join(str(v) for v in violations)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.support.import_rules [ROOT]``: print every violation, grouped by rule."""
    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0]) if args else Path(__file__).resolve().parents[2]
    found = check(root)
    for rule, violations in found.items():
        print(f"## {rule}: {len(violations)}")
        for v in violations:
            print(f"  {v}")
    return 1 if any(found.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
