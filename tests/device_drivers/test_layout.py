"""The package's shape, read from its source: one subpackage per family, config modules as leaves,
simulators reached only through the registry, no import cycles, no imports of the agent."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import device_drivers
from device_drivers import FAMILIES, DeviceConfig
from device_drivers.registry import AnyDeviceConfig

PACKAGE = Path(device_drivers.__file__).resolve().parent
FAMILY_PACKAGES = ["card", "turnstile", "osdp", "wedge", "gpio", "relay", "camera"]
LEAF_THIRD_PARTY = {"pydantic", "pydantic_core"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from device_drivers.profiles import wiegand` imports a module, not a name.
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if candidate in MODULES:
                    found.add(candidate)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _internal(name: str) -> set[str]:
    return {m for m in IMPORTS[name] if m in MODULES}


def test_every_family_has_config_driver_and_sim() -> None:
    for family in FAMILY_PACKAGES:
        for part in ("config", "driver", "sim"):
            assert f"device_drivers.{family}.{part}" in MODULES, f"{family}/{part}.py is missing"


def test_no_module_imports_the_agent_or_the_other_libraries() -> None:
    for name, imported in IMPORTS.items():
        bad = {m for m in imported if m.split(".")[0] in ("edge_agent", "sync", "vision")}
        assert not bad, f"{name} imports {bad}"


def test_only_simulators_and_the_registry_import_simulators() -> None:
    for name in MODULES:
        if name.endswith(".sim") or name == "device_drivers.registry":
            continue
        sims = {m for m in _internal(name) if m.endswith(".sim")}
        assert not sims, f"{name} imports simulator modules {sims}"


def test_config_modules_are_leaves() -> None:
    """A config imports pydantic, the stdlib and other configs only, so composing configs never
    pulls in drivers (and never closes an import cycle)."""
    configs = {name for name in MODULES if name.endswith(".config")}
    for name in configs:
        internal = _internal(name)
        assert internal <= configs, f"{name} imports runtime code: {internal - configs}"
        third_party = {
            m.split(".")[0]
            for m in IMPORTS[name] - internal
            if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "device_drivers"
        }
        assert third_party <= LEAF_THIRD_PARTY, f"{name} imports {third_party}"


def test_backoff_is_pure_stdlib() -> None:
    imported = IMPORTS["device_drivers._io.backoff"]
    assert all(m.split(".")[0] in sys.stdlib_module_names | {"__future__"} for m in imported), imported


def test_no_import_cycles() -> None:
    # Edges are explicit imports only: importing a submodule also runs its parent package's
    # __init__, but that is not an import the submodule depends on.
    graph = {name: _internal(name) - {name} for name in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_registry_lists_every_config_of_the_union() -> None:
    from typing import get_args

    union_members = set(get_args(AnyDeviceConfig))
    assert union_members == {family.config for family in FAMILIES.values()}
    assert get_args(DeviceConfig)[0] == AnyDeviceConfig


def test_root_exports_what_it_lists() -> None:
    for name in device_drivers.__all__:
        assert hasattr(device_drivers, name), name
    assert not [n for n in device_drivers.__all__ if n.endswith("Simulator")]
