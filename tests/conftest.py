"""Shared test fixtures: real parts only (a Mosquitto process of our own, real files).

The parts themselves live in tests/support/; the names below stay importable from here
(``from tests.conftest import MosquittoBroker, free_port``) for the tests that still do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import static_checks
from tests.support.broker import MosquittoBroker, free_port, wait_for_port

__all__ = ["ARTIFACT_DIR", "REPO_ROOT", "MosquittoBroker", "free_port", "wait_for_port"]

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_DIR = REPO_ROOT / "test-artifacts"


def pytest_collection_finish(session: pytest.Session) -> None:
    # ruff and mypy run beside the suite when their tests were collected (see static_checks).
    # Not in an xdist worker: every worker collects every test, and only the one that runs them
    # should start the checks (their tests start them on demand).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any(item.path.name == "test_static_checks.py" for item in session.items):
        static_checks.start_all()


def pytest_sessionfinish(session: pytest.Session) -> None:
    static_checks.stop_all()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """The session's broker. Tests that stop it must leave it running (use ``restart``)."""
    with MosquittoBroker(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker for one test alone: for tests that kill it or reconfigure it."""
    with MosquittoBroker(tmp_path) as broker:
        yield broker


@pytest.fixture(scope="session")
def artifact_dir() -> Path:
    ARTIFACT_DIR.mkdir(exist_ok=True)
    return ARTIFACT_DIR


os.environ.setdefault("EDGE_AGENT_LOG_FORMAT", "plain")
