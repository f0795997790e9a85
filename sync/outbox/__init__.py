"""The outbox: every event is committed to SQLite before it is published (store-and-forward).

``store`` holds the schema (named migrations), the seq floor and corruption detection; ``writer``
the :class:`Outbox` itself (group commit on one writer thread, the drop policy, the link's queries);
``config`` the leaf settings model; ``migrations`` the migration runner the agent's stores share.
"""

from __future__ import annotations

from sync.outbox.config import OutboxConfig
from sync.outbox.migrations import Migration, apply_migrations
from sync.outbox.writer import (
    Committed,
    LaneBacklog,
    Outbox,
    OutboxClosed,
    OutboxError,
    OutboxStats,
    PendingRow,
)

__all__ = [
    "Committed",
    "LaneBacklog",
    "Migration",
    "Outbox",
    "OutboxClosed",
    "OutboxConfig",
    "OutboxError",
    "OutboxStats",
    "PendingRow",
    "apply_migrations",
]
