"""Fixtures of the central tests: a PostgreSQL server of our own for the session, a fresh database
per test, and helpers to run the ingest consumer in a thread or as a process."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.central.pg_server import PostgresServer, find_pg_bin


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL (needs the Debian package ``postgresql``; never the machine's cluster)."""
    if find_pg_bin() is None:
        pytest.fail("PostgreSQL server binaries are missing: apt-get install postgresql")
    # fsync off: these tests kill consumers, never the database, and the machine is shared.
    server = PostgresServer({"fsync": "off", "max_connections": "50"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def database(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for one test; returns its DSN."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return postgres.create_database(f"t_{name}")
