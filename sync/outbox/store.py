"""The outbox's SQLite store: its schema (as named migrations), the seq floor file beside it, and
how a corrupt file is recognised. The queries live with the writer that owns the connections."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import sqlite_utils

from sync.storage import Migration

log = logging.getLogger(__name__)

DB_NAME = "outbox.db"
SEQ_FLOOR_NAME = "outbox.seqfloor"
# Seqs are reserved on disk in blocks, so the floor file is written once per block, not per event.
SEQ_RESERVE_BLOCK = 100_000


def _migration_1_initial(db: sqlite_utils.Database) -> None:
    db["events"].create(  # type: ignore[union-attr]
        {
            "seq": int,
            "id": str,
            "lane": int,
            "type": str,
            "severity": str,
            "created_at": float,
            "payload": bytes,
            "delivered_at": float,
        },
        pk="seq",
        not_null={"id", "lane", "type", "created_at", "payload"},
    )
    # Partial indexes: the pending one stays as small as the backlog, whatever the history.
    db.execute("CREATE INDEX events_pending ON events(lane, seq) WHERE delivered_at IS NULL")
    db.execute("CREATE INDEX events_delivered ON events(lane, seq) WHERE delivered_at IS NOT NULL")
    db["meta"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]


# Append only: never edit or reorder a migration that has shipped.
def _migration_2_attachments(db: sqlite_utils.Database) -> None:
    # Evidence beside an event; it lives and dies with its event row (see housekeeping).
    db.execute(
        "CREATE TABLE attachments (seq INTEGER PRIMARY KEY REFERENCES events(seq) ON DELETE CASCADE, "
        "data BLOB NOT NULL)"
    )


MIGRATIONS: list[Migration] = [
    ("0001_initial", _migration_1_initial),
    ("0002_attachments", _migration_2_attachments),
]


class SeqFloor:
    """A small file beside the database holding the highest ``seq`` ever reserved.

    The database holds the true last ``seq``; this file only matters when the database is lost
    (corrupt and moved aside): the fresh one resumes above every ``seq`` that may have been used,
    so a consumer never sees a ``seq`` twice.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            log.error("seq floor file %s is unreadable; treating it as 0", self.path)
            return 0

    def write(self, value: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(f"{value}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def is_corruption(err: sqlite3.DatabaseError) -> bool:
    text = str(err).lower()
    return any(s in text for s in ("malformed", "not a database", "corrupt", "file is encrypted"))


__all__ = ["DB_NAME", "MIGRATIONS", "SEQ_FLOOR_NAME", "SEQ_RESERVE_BLOCK", "SeqFloor", "is_corruption"]
