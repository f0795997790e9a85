"""The central side: the reference consumer that ingests gateway events into PostgreSQL.

Gateways publish at least once; this package turns that into exactly-once rows (unique on
``source`` + ``id``), tracks per-gateway ``seq`` gaps and online state, and dead-letters what it
cannot trust. ``edge-central ingest`` is a thin CLI over :class:`IngestConsumer`.

Not part of the gateway runtime: nothing in ``edge_agent`` imports it. The database parts need
psycopg (the ``central`` extra) and are imported from their modules:
:class:`sync.central.ingest.IngestConsumer`, :func:`sync.central.store.write_batch`,
:data:`sync.central.schema.MIGRATIONS` and :func:`sync.central.schema.apply_migrations`. This
package root imports none of them, so a machine without the PostgreSQL driver can still import it.
"""

from __future__ import annotations

from sync.central.classify import Classified, DeadLetter, EventRow, Ignored, StatusRow, classify
from sync.central.cli import build_parser, main
from sync.central.config import IngestConfig
from sync.central.errors import CentralError, MigrationError

__all__ = [
    "CentralError",
    "Classified",
    "DeadLetter",
    "EventRow",
    "Ignored",
    "IngestConfig",
    "MigrationError",
    "StatusRow",
    "build_parser",
    "classify",
    "main",
]
