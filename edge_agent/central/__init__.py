"""The central side: the reference consumer that ingests gateway events into PostgreSQL.

Gateways publish at least once; this package turns that into exactly-once rows (unique on
``source`` + ``id``), tracks per-gateway ``seq`` gaps and online state, and dead-letters what it
cannot trust. ``edge-agent central ingest`` is a thin CLI over :class:`IngestConsumer`.

The database parts (``IngestConsumer``, ``write_batch``, ``apply_migrations``, ...) load psycopg on
first use, so a gateway without the PostgreSQL driver can still import :func:`add_central_cli`.
"""

from __future__ import annotations

import importlib
from typing import Any

from edge_agent.central.classify import Classified, DeadLetter, EventRow, Ignored, StatusRow, classify
from edge_agent.central.cli import add_central_cli
from edge_agent.central.config import IngestConfig
from edge_agent.central.errors import CentralError, MigrationError

_LAZY = {
    "IngestConsumer": "edge_agent.central.ingest",
    "MIGRATIONS": "edge_agent.central.schema",
    "apply_migrations": "edge_agent.central.schema",
    "BatchResult": "edge_agent.central.store",
    "IngestStats": "edge_agent.central.store",
    "write_batch": "edge_agent.central.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "MIGRATIONS",
    "BatchResult",
    "CentralError",
    "Classified",
    "DeadLetter",
    "EventRow",
    "Ignored",
    "IngestConfig",
    "IngestConsumer",
    "IngestStats",
    "MigrationError",
    "StatusRow",
    "add_central_cli",
    "apply_migrations",
    "classify",
    "write_batch",
]
