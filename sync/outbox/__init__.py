"""The outbox: every event is committed to SQLite before it is published (store-and-forward).

``store`` holds the schema (named migrations), the seq floor, the space reserve and the salvage of
a corrupt file; ``writer`` the :class:`Outbox` itself (group commit on one writer thread, the drop
policy and the full-disk path, the link's queries); ``config`` the leaf settings model and the
limits it gives on a file system of a given size. The migration runner and
the rules every SQLite store follows are in :mod:`sync.storage`.
"""

from __future__ import annotations

from sync.outbox.config import OutboxConfig, SpaceLimits
from sync.outbox.store import events_about
from sync.outbox.writer import (
    Committed,
    LaneBacklog,
    Outbox,
    OutboxClosed,
    OutboxError,
    OutboxStats,
    PendingRow,
    StorageState,
    StorageStatus,
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
    "SpaceLimits",
    "StorageState",
    "StorageStatus",
    "events_about",
]
