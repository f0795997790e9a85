"""The gateway's SQLite files: what each holds, how durable it is, and how it is opened safely.

One place for the rules every store follows: named, transactional schema migrations
(:func:`apply_migrations`, sqlite-utils style), and

* **Durability.** :data:`STORES` says, per file, which ``PRAGMA synchronous`` it runs with. Alerts and
  attendance are as durable as the outbox (they are the local copy of what the outbox carries);
  the roster and face templates are master data from the centre and always ``FULL``.
* **Integrity at start.** :func:`open_store` runs ``PRAGMA quick_check`` before the migrations. A
  file that is not a database, is truncated, empty, or fails the check is *corrupt*.
* **A corrupt file never keeps the agent down.** It is moved aside (with its ``-wal`` and ``-shm``)
  under a name that says when, never deleted, and a fresh file is created. The caller gets a
  :class:`StoreRecovery` to log, report as ``edu.campus.gateway.storage_recovered.v1`` and act on
  (the roster restores its last-known-good copy; the outbox salvages undelivered rows first).

* **Damage inside a row** (which ``quick_check`` does not see) never fails a whole query: TEXT that
  is not UTF-8 comes back as bytes (:func:`text_or_bytes`, set on every store connection) for the
  row's reader to reject, and :class:`DamagedRows` counts such rows and logs them rate-limited.

Errors that are not corruption (permissions, I/O errors, a full disk) are raised as
:class:`StorageError`: moving a healthy file aside because the disk is full would lose it.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import sqlite_utils

from sync.errors import SyncError

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


Synchronous = Literal["full", "normal"]
StoreName = Literal["outbox", "alerts", "attendance", "roster", "faces"]


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """One SQLite file of the gateway's data directory."""

    file: str
    durability: Literal["outbox", "full"]
    """``outbox``: the outbox's configured ``synchronous``; ``full``: always ``FULL``."""
    on_corruption: str
    """What the agent does when the file is corrupt (docs/OPERATIONS.md lists these)."""


STORES: dict[StoreName, StoreSpec] = {
    "outbox": StoreSpec(
        "outbox.db", "outbox", "undelivered rows salvaged into a fresh outbox; seqs resume above the floor"
    ),
    "alerts": StoreSpec(
        "alerts.db", "outbox", "fresh alert book; undelivered alerts are still in the outbox"
    ),
    "attendance": StoreSpec(
        "attendance.db", "outbox", "fresh book; today's duplicates may be recorded once more"
    ),
    "roster": StoreSpec("roster.db", "full", "restored from roster.db.last-good, then a resync is requested"),
    "faces": StoreSpec("faces.db", "full", "fresh store; templates come back with the next roster resync"),
}


def synchronous_of(store: StoreName, outbox_synchronous: Synchronous) -> Synchronous:
    """The ``PRAGMA synchronous`` a store runs with (see :data:`STORES`)."""
    return outbox_synchronous if STORES[store].durability == "outbox" else "full"


class StorageError(SyncError):
    """A store could not be opened for a reason other than corruption (nothing was moved)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="storage_open")


@dataclass(frozen=True, slots=True)
class StoreRecovery:
    """A corrupt store was moved aside and a fresh one created."""

    store: StoreName
    path: Path
    moved_to: Path
    error: str

    def event_data(self) -> dict[str, object]:
        """The payload of ``edu.campus.gateway.storage_recovered.v1`` (callers may add fields)."""
        return {"store": self.store, "moved_to": str(self.moved_to), "error": self.error}


def text_or_bytes(raw: bytes) -> str | bytes:
    """A ``text_factory`` for store connections: TEXT that is not UTF-8 (damage inside a row) comes
    back as its bytes for the row's reader to reject, instead of failing the whole query."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


class DamagedRows:
    """Rows of a store that could not be read back (garbled inside, which ``quick_check`` does not
    see) or written: counted, and logged at most once per ``log_interval_s`` with the count since,
    so a store full of damage costs one line a minute, not one per row."""

    def __init__(
        self,
        store: str,
        log_interval_s: float = 60.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.count = 0
        self._interval = log_interval_s
        self._monotonic = monotonic
        self._logged_at: float | None = None
        self._unlogged = 0

    def note(self, key: str, err: Exception) -> None:
        self.count += 1
        self._unlogged += 1
        now = self._monotonic()
        if self._logged_at is not None and now - self._logged_at < self._interval:
            return
        log.error(
            "%s store: %d row(s) damaged or not written (latest %s: %s: %s); the agent goes on without them",
            self.store,
            self._unlogged,
            key,
            type(err).__name__,
            err,
        )
        self._logged_at, self._unlogged = now, 0


def is_corruption(err: sqlite3.DatabaseError) -> bool:
    """Whether SQLite's error means the file's content is damaged (not e.g. locked or unwritable)."""
    text = str(err).lower()
    return any(s in text for s in ("malformed", "not a database", "corrupt", "file is encrypted"))


def check_integrity(conn: sqlite3.Connection) -> None:
    """Raise :class:`sqlite3.DatabaseError` unless ``PRAGMA quick_check`` says ``ok``."""
    rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    if [r[0] for r in rows] != ["ok"]:
        raise sqlite3.DatabaseError("database disk image is malformed: " + "; ".join(r[0] for r in rows))


def move_aside(path: Path, now: datetime) -> Path:
    """Move ``path`` and its ``-wal``/``-shm`` to ``<name>.corrupt-<UTC stamp>``; returns the new path."""
    stamp = now.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():  # two recoveries in one second must not overwrite the first copy
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            shutil.move(src, Path(str(target) + suffix))
    return target


def _connect_checked(
    path: Path, migrations: Sequence[Migration], synchronous: Synchronous, pragmas: Sequence[str]
) -> sqlite3.Connection:
    existed_empty = path.exists() and path.stat().st_size == 0
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.text_factory = text_or_bytes
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        for pragma in pragmas:  # before WAL: some (auto_vacuum) must precede the first table
            conn.execute(f"PRAGMA {pragma}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StorageError(f"{path} refused WAL mode ({mode})")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        if existed_empty:
            # We never leave an empty file behind (WAL mode writes the header at once), so an empty
            # one was truncated: opening it as a new database would silently lose its content.
            raise sqlite3.DatabaseError("file is not a database: it is empty (truncated to zero length)")
        check_integrity(conn)
        apply_migrations(conn, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def open_store(
    store: StoreName,
    path: Path,
    migrations: Sequence[Migration],
    *,
    synchronous: Synchronous,
    now: Callable[[], datetime],
    pragmas: Sequence[str] = (),
    before_move: Callable[[Path, sqlite3.DatabaseError], None] | None = None,
) -> tuple[sqlite3.Connection, StoreRecovery | None]:
    """Open (creating or migrating) a store in WAL mode; a corrupt one is moved aside and replaced.

    ``pragmas`` run first on every connection (``"secure_delete=ON"``). ``before_move`` is called with
    the corrupt file still in place, so a caller can salvage what SQLite can still read. Returns the
    autocommit connection and, when the file was corrupt, what happened to it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _connect_checked(path, migrations, synchronous, pragmas), None
    except sqlite3.DatabaseError as err:
        if not is_corruption(err):
            raise StorageError(f"cannot open {store} store {path}: {err}") from err
        if before_move is not None:
            try:
                before_move(path, err)
            except Exception:  # salvage is best effort; the file is kept aside whatever happens
                log.exception("salvaging the corrupt %s store %s failed", store, path)
        moved = move_aside(path, now())
        log.error(
            "%s store %s is corrupt (%s); moved it to %s and started a fresh one (%s)",
            store,
            path,
            err,
            moved,
            STORES[store].on_corruption,
        )
        try:
            conn = _connect_checked(path, migrations, synchronous, pragmas)
        except sqlite3.DatabaseError as again:
            raise StorageError(f"cannot create a fresh {store} store {path}: {again}") from again
        return conn, StoreRecovery(store, path, moved, str(err))


__all__ = [
    "STORES",
    "DamagedRows",
    "Migration",
    "StorageError",
    "StoreName",
    "StoreRecovery",
    "StoreSpec",
    "Synchronous",
    "apply_migrations",
    "check_integrity",
    "is_corruption",
    "move_aside",
    "open_store",
    "synchronous_of",
    "text_or_bytes",
]
