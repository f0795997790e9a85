"""The outbox's SQLite store: its schema (as named migrations), the seq floor file and the space
reserve beside it, and the salvage of a corrupt file. The queries of the running outbox live with
the writer that owns the connections; opening and corruption are :mod:`sync.storage`'s."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

import orjson
import sqlite_utils

from sync.event_types import Lane
from sync.storage import Migration

log = logging.getLogger(__name__)

DB_NAME = "outbox.db"
SEQ_FLOOR_NAME = "outbox.seqfloor"
RESERVE_NAME = "outbox.reserve"
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


class SpaceReserve:
    """A preallocated file in the data directory: space the outbox can hand back to itself.

    Deleting it frees its blocks at once, so alerts, access and attendance can still be committed
    when the file system is full (whoever filled it); it is re-created once space returns.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    @property
    def held(self) -> bool:
        """True while the reserve's blocks are set aside (the file exists at its full size)."""
        try:
            return self.size > 0 and self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def create(self) -> bool:
        """Allocate the reserve; False (and nothing left behind) if the space is not there."""
        if self.size <= 0:
            return False
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                # Real blocks, not a sparse file: only allocated space can be handed back later.
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.info("outbox space reserve %s not created (%s)", self.path, err.strerror or err)
            return False
        return True

    def release(self) -> int:
        """Delete the reserve; returns the bytes it held."""
        try:
            size = self.path.stat().st_size
            self.path.unlink()
        except FileNotFoundError:
            return 0
        return size


SALVAGE_CHUNK = 1000


def salvage_undelivered(corrupt: Path, into: sqlite3.Connection) -> int:
    """Copy the undelivered rows SQLite can still read from ``corrupt`` into ``into`` (a fresh outbox),
    keeping their seqs, ids and attachments; returns how many were copied.

    Rows are read by seq range, and a range that fails is split down to single rows, so one bad
    page costs only the rows on it. A row is taken only if its payload is still the event it says
    (valid JSON carrying the same seq and id): a damaged page can read "fine" and return garbage.
    ``corrupt`` is opened read-only; it stays as it is, as evidence.
    """
    src = _open_readonly(corrupt)
    if src is None:
        return 0
    try:
        low, high = _seq_bounds(src, corrupt)
        copied = 0
        start = low
        while start <= high:
            end = min(high, start + SALVAGE_CHUNK - 1)
            rows = _read_rows(src, start, end)
            if rows:
                copied += _insert_salvaged(src, into, rows)
            start = end + 1
        return copied
    finally:
        src.close()


def _open_readonly(path: Path) -> sqlite3.Connection | None:
    # Read-only keeps the evidence as it was; "immutable" (which ignores the WAL) is the fallback
    # for a copy whose -shm cannot be used.
    for query in ("mode=ro", "immutable=1"):
        try:
            conn = sqlite3.connect(f"{path.as_uri()}?{query}", uri=True, isolation_level=None)
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return conn
        except sqlite3.Error as err:
            log.warning("salvage: cannot read %s with %s: %s", path, query, err)
    return None


def events_about(path: Path, subject: str) -> list[tuple[int, str, str, float, float | None, bool]]:
    """``(seq, id, type, created_at, delivered_at, has_attachment)`` of the events in the outbox
    ``path`` whose ``subject`` is ``subject`` (a data-subject request), in seq order; read only,
    beside a running agent. Empty when there is no outbox yet."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT e.seq, e.id, e.type, e.created_at, e.delivered_at, a.seq IS NOT NULL "
            "FROM events e LEFT JOIN attachments a ON a.seq = e.seq "
            "WHERE json_extract(CAST(e.payload AS TEXT), '$.subject') = ? ORDER BY e.seq",
            (subject,),
        ).fetchall()
    finally:
        conn.close()
    return [
        (seq, eid, etype, created, delivered, bool(att)) for seq, eid, etype, created, delivered, att in rows
    ]


def _seq_bounds(src: sqlite3.Connection, path: Path) -> tuple[int, int]:
    try:
        low, high = src.execute("SELECT min(seq), max(seq) FROM events").fetchone()
        if low is not None and high is not None:
            return int(low), int(high)
        return 1, 0
    except sqlite3.DatabaseError:
        pass
    # The table's root or inner pages are damaged: every seq ever reserved may hold a row.
    high = SeqFloor(path.with_name(SEQ_FLOOR_NAME)).read()
    with contextlib.suppress(sqlite3.DatabaseError, TypeError, ValueError):
        row = src.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        high = max(high, int(row[0]))
    return 1, high


_Row = tuple[int, str, int, str, "str | None", float, bytes]


def _read_rows(src: sqlite3.Connection, start: int, end: int) -> list[_Row]:
    try:
        return [
            tuple(r)
            for r in src.execute(
                "SELECT seq, id, lane, type, severity, created_at, payload FROM events "
                "WHERE seq BETWEEN ? AND ? AND delivered_at IS NULL ORDER BY seq",
                (start, end),
            )
        ]
    except sqlite3.DatabaseError:
        if start == end:
            return []
        mid = (start + end) // 2
        return _read_rows(src, start, mid) + _read_rows(src, mid + 1, end)


def _insert_salvaged(src: sqlite3.Connection, into: sqlite3.Connection, rows: list[_Row]) -> int:
    good = [r for r in rows if _intact(r)]
    attachments = []
    for seq, *_ in good:
        with contextlib.suppress(sqlite3.DatabaseError):
            found = src.execute("SELECT data FROM attachments WHERE seq=?", (seq,)).fetchone()
            if found is not None:
                attachments.append((seq, found[0]))
    into.execute("BEGIN")
    into.executemany(
        "INSERT OR IGNORE INTO events (seq, id, lane, type, severity, created_at, payload) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        good,
    )
    into.executemany("INSERT OR IGNORE INTO attachments (seq, data) VALUES (?, ?)", attachments)
    into.execute("COMMIT")
    return len(good)


def _intact(row: _Row) -> bool:
    seq, id_, lane, _type, _severity, _created, payload = row
    if lane not in {int(v) for v in Lane} or not isinstance(payload, bytes):
        return False
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and obj.get("seq") == seq and obj.get("id") == id_


__all__ = [
    "DB_NAME",
    "MIGRATIONS",
    "RESERVE_NAME",
    "SEQ_FLOOR_NAME",
    "SEQ_RESERVE_BLOCK",
    "SeqFloor",
    "SpaceReserve",
    "salvage_undelivered",
]
