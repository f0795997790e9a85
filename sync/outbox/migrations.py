"""Named, transactional schema migrations for the gateway's SQLite files (sqlite-utils style)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence

import sqlite_utils

log = logging.getLogger(__name__)

Migration = tuple[str, Callable[[sqlite_utils.Database], None]]
"""A migration: its name (recorded once applied) and the function that applies it."""


def apply_migrations(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> list[str]:
    """Apply, in order, the migrations this database has not seen; returns the names applied.

    Each runs in its own transaction together with the row that records it, so a crash leaves a
    migration either wholly applied and recorded or not at all. Append only: never edit or reorder
    a migration that has shipped. ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    db = sqlite_utils.Database(conn)
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
    applied = []
    for name, migrate in migrations:
        if name in done:
            continue
        # sqlite3's implicit transactions do not cover DDL; an explicit one makes each migration atomic.
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrate(db)
            conn.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("migration applied to %s: %s", db.conn.execute("PRAGMA database_list").fetchone()[2], name)
        applied.append(name)
    return applied


__all__ = ["Migration", "apply_migrations"]
