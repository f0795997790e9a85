"""The central side: the reference consumer that ingests gateway events into PostgreSQL.

Gateways publish at least once; this package turns that into exactly-once rows (unique on
``source`` + ``id``), tracks per-gateway ``seq`` gaps and online state, and dead-letters what it
cannot trust. ``edge-agent central ingest`` is a thin CLI over :class:`IngestConsumer`.
"""

from edge_agent.central.classify import Classified, DeadLetter, EventRow, Ignored, StatusRow, classify
from edge_agent.central.cli import add_central_cli
from edge_agent.central.config import IngestConfig
from edge_agent.central.errors import CentralError, MigrationError
from edge_agent.central.ingest import IngestConsumer
from edge_agent.central.schema import MIGRATIONS, apply_migrations
from edge_agent.central.store import BatchResult, IngestStats, write_batch

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
