"""The outbox: every event is committed to SQLite before it is published (store-and-forward).

``store`` holds the schema (named migrations), the seq floor and corruption detection; ``writer``
the :class:`Outbox` itself (group commit on one writer thread, the drop policy, the link's queries);
``config`` the leaf settings model. The migration runner and
the rules every SQLite store follows are in :mod:`sync.storage`.
"""

from __future__ import annotations

from sync.outbox.config import OutboxConfig
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
    "Outbox",
    "OutboxClosed",
    "OutboxConfig",
    "OutboxError",
    "OutboxStats",
    "PendingRow",
]
