"""The import rules of LAYOUT.md (invariants 1-4) and no module-level ``__getattr__``, enforced on
the source with ``ast`` (tests/support/import_rules.py). The checker is itself tested on a
deliberately bad package tree written into tmp_path, so each rule is shown to fail when broken."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support.import_rules import RULES, Violation, check, report

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def repo_violations() -> dict[str, list[Violation]]:
    return check(REPO)


@pytest.mark.parametrize("rule", RULES)
def test_the_tree_keeps_the_import_rule(rule: str, repo_violations: dict[str, list[Violation]]) -> None:
    found = repo_violations[rule]
    assert not found, f"{len(found)} violation(s) of {rule}:\n{report(found)}"


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


BAD_TREE = {
    "edge_agent/__init__.py": "",
    # a -> b -> a, the b -> a edge hidden in a function (a lazy import is still an edge).
    "edge_agent/a.py": "from edge_agent import b\n",
    "edge_agent/b.py": "def late():\n    from edge_agent.a import thing\n    return thing\n",
    # Reaches into a library's submodule, and a simulator in two ways.
    "edge_agent/wiring.py": (
        "from device_drivers.card.driver import CardDriver\n"
        "from device_drivers.card import sim\n"
        "from device_drivers import CardSimulator\n"
        "from device_drivers import card\n"
    ),
    # A config leaf importing runtime code and a third-party library.
    "edge_agent/config/__init__.py": "",
    "edge_agent/config/gates.py": "import numpy\nfrom edge_agent.a import thing\n",
    # A lazy module __getattr__.
    "vision/__init__.py": (
        "def __getattr__(name):\n    import importlib\n    return importlib.import_module(name)\n"
    ),
    # A library importing the agent, and another library.
    "sync/__init__.py": "from edge_agent import a\nfrom vision import thing\n",
    "device_drivers/__init__.py": "from device_drivers.card.sim import CardSimulator\n",
    "device_drivers/card/__init__.py": "",
    "device_drivers/card/driver.py": "class CardDriver: ...\n",
    "device_drivers/card/sim.py": "class CardSimulator: ...\n",
}


def test_each_rule_fails_on_a_deliberately_bad_tree(tmp_path: Path) -> None:
    write_tree(tmp_path, BAD_TREE)
    found = {rule: {(v.path, v.line) for v in vs} for rule, vs in check(tmp_path).items()}
    assert found["cycles"] == {("edge_agent/a.py", 1), ("edge_agent/b.py", 2)}
    assert found["library_layers"] == {("sync/__init__.py", 1), ("sync/__init__.py", 2)}
    assert found["no_simulators"] == {
        ("edge_agent/wiring.py", 2),
        ("edge_agent/wiring.py", 3),  # re-exported by the package root: still the simulator
        ("device_drivers/__init__.py", 1),
    }
    assert found["config_leaves"] == {("edge_agent/config/gates.py", 1), ("edge_agent/config/gates.py", 2)}
    assert found["package_roots"] == {
        ("edge_agent/wiring.py", 1),
        ("edge_agent/wiring.py", 2),
        ("edge_agent/wiring.py", 4),  # a submodule named through the root is still a submodule
    }
    assert found["no_module_getattr"] == {("vision/__init__.py", 1)}


def test_the_cycle_is_reported_with_its_path(tmp_path: Path) -> None:
    write_tree(tmp_path, BAD_TREE)
    text = report(check(tmp_path)["cycles"])
    assert "edge_agent/b.py:2: edge_agent.b imports edge_agent.a" in text
    assert "edge_agent.a -> edge_agent.b -> edge_agent.a" in text


GOOD_TREE = {
    "edge_agent/__init__.py": "",
    # A cycle only under TYPE_CHECKING is no cycle at run time.
    "edge_agent/a.py": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edge_agent.b import B\n"
    ),
    "edge_agent/b.py": "from edge_agent import a\nfrom device_drivers import CardDriver, open_driver\n",
    # edge_agent may compose a library's config leaf by its module path.
    "edge_agent/config/__init__.py": "from edge_agent.config.loader import load\n",
    "edge_agent/config/loader.py": "import yaml\nfrom edge_agent.config.gates import GateConfig\n",
    "edge_agent/config/gates.py": (
        "from __future__ import annotations\nimport enum\nfrom pydantic import BaseModel\n"
        "from device_drivers.card.config import CardConfig\nclass GateConfig(BaseModel): ...\n"
    ),
    "device_drivers/__init__.py": (
        "from device_drivers.card.driver import CardDriver\nfrom device_drivers.registry import open_driver\n"
    ),
    "device_drivers/registry.py": (
        "from device_drivers.card import sim\nfrom device_drivers.card.driver import CardDriver\n"
    ),
    "device_drivers/card/__init__.py": "",
    "device_drivers/card/config.py": "from pydantic import BaseModel\nclass CardConfig(BaseModel): ...\n",
    # A class's __getattr__ is no module __getattr__.
    "device_drivers/card/driver.py": (
        "from .config import CardConfig\nclass CardDriver:\n    def __getattr__(self, n): ...\n"
    ),
    "device_drivers/card/sim.py": "from device_drivers.card.driver import CardDriver\n",
}


def test_a_tree_that_keeps_the_rules_passes(tmp_path: Path) -> None:
    write_tree(tmp_path, GOOD_TREE)
    found = check(tmp_path)
    assert not any(found.values()), {rule: report(vs) for rule, vs in found.items() if vs}
