"""The outbox: every event is committed to SQLite before it is published (store-and-forward).

One writer thread owns the write connection. Appends, delivery marks and housekeeping are queued
to it; it takes whatever has queued up while the previous commit was syncing and commits it as one
transaction (group commit), so an fsync per commit stays cheap at tens of thousands of events per
second. The writer gives each event its ``seq`` inside that transaction, so ``seq`` order is commit
order and a ``seq`` is never handed out twice, across restarts and even across a lost database
(see :class:`SeqFloor`).

Readers (the MQTT link) use their own connection on the event loop thread; in WAL mode they never
block the writer. A row is marked delivered only when the link says the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from sync.envelope import Event, utc_now
from sync.errors import SyncError
from sync.event_types import Lane
from sync.outbox.config import OutboxConfig
from sync.outbox.store import DB_NAME, MIGRATIONS, SEQ_FLOOR_NAME, SEQ_RESERVE_BLOCK, SeqFloor, is_corruption
from sync.storage import apply_migrations

log = logging.getLogger(__name__)


class OutboxError(SyncError):
    """The outbox could not do what was asked (closed, disk full, unusable database)."""


class OutboxClosed(OutboxError):
    def __init__(self) -> None:
        super().__init__("the outbox is closed", code="outbox_closed")


class Committed(NamedTuple):
    """What the outbox tells the producer once its event is durable."""

    seq: int
    id: str


@dataclass(frozen=True, slots=True)
class PendingRow:
    """An undelivered event as the MQTT link needs it."""

    seq: int
    lane: Lane
    type: str
    severity: str | None
    payload: bytes
    attachment: bytes | None = None
    """Evidence (a JPEG snapshot) published beside the event, on ``snapshots/{event id}``."""
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class LaneBacklog:
    pending: int
    oldest_age_s: float | None


@dataclass
class OutboxStats:
    """Counters for metrics and the status topic; only the writer thread mutates them."""

    appended: int = 0
    delivered: int = 0
    commits: int = 0
    purged_delivered: int = 0
    dropped_undelivered: dict[str, int] = field(default_factory=dict)
    over_limit: int = 0
    commit_failures: int = 0


@dataclass
class _Append:
    event: Event
    future: asyncio.Future[Committed] | None
    attachment: bytes | None = None


@dataclass
class _Mark:
    seqs: Sequence[int]


_Op = _Append | _Mark | Callable[[], None] | None


class Outbox:
    """The durable event queue between the agent's rules and the MQTT link.

    ``report_source`` is the CloudEvents ``source`` the outbox uses for its own reports (drops,
    storage recovery). Use :meth:`open` then :meth:`close`, or ``async with``. Time comes only from
    ``monotonic`` (housekeeping intervals) and ``now`` (row stamps, retention, file names), so the
    agent hands in its one clock and tests can move it.
    """

    def __init__(
        self,
        data_dir: Path,
        config: OutboxConfig,
        report_source: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._monotonic = monotonic
        self._now = now
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        self.config = config
        self.report_source = report_source
        self.stats = OutboxStats()
        self.recovered_from: Path | None = None
        self._recovery_error = ""
        self._seq_floor = SeqFloor(data_dir / SEQ_FLOOR_NAME)
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._read: sqlite3.Connection | None = None
        self._write: sqlite3.Connection | None = None
        self._last_seq = 0
        self._reserved_seq = 0
        # Seqs acknowledged by the broker whose delivery mark is not committed yet: readers skip them,
        # so a reconnect does not publish them again.
        self._marking: set[int] = set()
        self._marking_lock = threading.Lock()
        self._pending = {lane: 0 for lane in Lane}
        self._closed = True
        self._last_housekeeping = 0.0
        self.committed = asyncio.Event()
        """Set (on the event loop) whenever new rows were committed; the link clears it."""
        self.alert_committed = asyncio.Event()
        """Set when an alert-lane row was committed, so the link can let it jump the backlog."""

    def _wall(self) -> float:
        return self._now().timestamp()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (creating or migrating) the database; a corrupt one is moved aside, never deleted."""
        self._loop = asyncio.get_running_loop()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._open_files)
        self._closed = False
        # The first automatic housekeeping comes one interval after opening, not at the first commit.
        self._last_housekeeping = self._monotonic()
        self._writer = threading.Thread(target=self._writer_main, name="outbox-writer", daemon=True)
        self._writer.start()
        if self.recovered_from is not None:
            self.append_nowait(
                Event(
                    type="edu.campus.gateway.storage_recovered.v1",
                    source=self.report_source,
                    data={
                        "store": "outbox",
                        "moved_to": str(self.recovered_from),
                        "error": self._recovery_error,
                        "seq_resumed_at": self._last_seq + 1,
                    },
                )
            )

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is exactly one transaction.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        # Attachments are deleted with their event rows (ON DELETE CASCADE).
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _open_files(self) -> None:
        try:
            self._open_database()
        except sqlite3.DatabaseError as err:
            if not is_corruption(err):
                raise OutboxError(f"cannot open outbox {self.path}: {err}", code="outbox_open") from err
            self._move_aside(err)
            self._open_database()

    def _open_database(self) -> None:
        conn = self._connect()
        try:
            # auto_vacuum must be chosen before the first table exists; it lets the disk-floor policy
            # hand freed pages back to the file system.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OutboxError(f"outbox {self.path} refused WAL mode ({mode})", code="outbox_open")
            conn.execute(f"PRAGMA synchronous={self.config.synchronous.upper()}")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: quick_check says {check}")
            apply_migrations(conn, MIGRATIONS)
        except BaseException:
            conn.close()
            raise
        self._write = conn
        self._read = self._connect()
        row = conn.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        db_last = int(row[0]) if row else 0
        floor = self._seq_floor.read()
        # A fresh database (first start, or after recovery) resumes above every seq ever reserved. So
        # does a database older than the floor implies (a backup restored after a failed upgrade):
        # the seqs it does not know about may already be at the centre.
        stale = db_last > 0 and db_last < floor - SEQ_RESERVE_BLOCK - self.config.max_batch
        if stale:
            log.warning(
                "outbox database ends at seq %d but seqs up to %d were reserved (restored from a copy?); "
                "resuming above %d so no seq is used twice",
                db_last,
                floor,
                floor,
            )
        self._last_seq = floor if db_last == 0 or stale else db_last
        self._reserved_seq = max(floor, self._last_seq)
        for lane, count in conn.execute(
            "SELECT lane, count(*) FROM events WHERE delivered_at IS NULL GROUP BY lane"
        ):
            self._pending[Lane(lane)] = count

    def _move_aside(self, err: sqlite3.DatabaseError) -> None:
        stamp = self._now().strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{DB_NAME}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                shutil.move(src, Path(str(target) + suffix))
        self.recovered_from = target
        self._recovery_error = str(err)
        log.error(
            "outbox database %s is corrupt (%s); moved it to %s and started a fresh one",
            self.path,
            err,
            target,
        )

    async def close(self) -> None:
        """Commit everything queued, then close. Appends after this raise :class:`OutboxClosed`."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join)
        for conn in (self._read, self._write):
            if conn is not None:
                conn.close()
        self._read = self._write = None

    # -- producers ---------------------------------------------------------------------------

    def submit(self, event: Event, attachment: bytes | None = None) -> None:
        """Queue an event for the next group commit and return at once.

        The hot path (gate decisions) uses this: the event is committed before it is published,
        but nobody waits for the fsync. A failed commit is logged and counted by the outbox.
        ``attachment`` (a JPEG snapshot) is committed with the event and published beside it; the
        event counts as delivered only when both are acknowledged.
        """
        if self._closed:
            raise OutboxClosed()
        self._queue.put(_Append(event, None, attachment))

    def append_nowait(self, event: Event) -> asyncio.Future[Committed]:
        """Queue an event; the future resolves with its ``seq`` once it is durable."""
        if self._closed or self._loop is None:
            raise OutboxClosed()
        fut: asyncio.Future[Committed] = self._loop.create_future()
        self._queue.put(_Append(event, fut))
        return fut

    async def append(self, event: Event) -> Committed:
        """Queue an event and wait until it is committed."""
        return await self.append_nowait(event)

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed (commits are in queue order)."""
        if self._closed or self._loop is None:
            raise OutboxClosed()
        done: asyncio.Future[None] = self._loop.create_future()
        self._queue.put(lambda: self._resolve_later([(done, None)]))
        await done

    # -- the MQTT link -----------------------------------------------------------------------

    def fetch_pending(self, lane: Lane, after_seq: int, limit: int) -> list[PendingRow]:
        """Undelivered rows of one lane with ``seq > after_seq``, oldest first."""
        if self._read is None:
            raise OutboxClosed()
        rows = self._read.execute(
            "SELECT e.seq, e.type, e.severity, e.payload, a.data, e.id FROM events e "
            "LEFT JOIN attachments a ON a.seq = e.seq "
            "WHERE e.delivered_at IS NULL AND e.lane=? AND e.seq>? ORDER BY e.seq LIMIT ?",
            (int(lane), after_seq, limit),
        ).fetchall()
        with self._marking_lock:
            marking = self._marking
            return [
                PendingRow(seq, lane, type_, severity, payload, attachment, event_id)
                for seq, type_, severity, payload, attachment, event_id in rows
                if seq not in marking
            ]

    def mark_delivered(self, seqs: Sequence[int]) -> None:
        """Record broker acknowledgements; committed with the next group commit."""
        if not seqs:
            return
        with self._marking_lock:
            self._marking.update(seqs)
        if self._closed:
            return
        self._queue.put(_Mark(list(seqs)))

    def backlog(self) -> dict[Lane, LaneBacklog]:
        """Undelivered events per lane, with the age of the oldest (for status and metrics)."""
        out = {}
        now = self._wall()
        for lane in Lane:
            oldest = None
            if self._read is not None and self._pending[lane] > 0:
                row = self._read.execute(
                    "SELECT created_at FROM events WHERE delivered_at IS NULL AND lane=? "
                    "ORDER BY seq LIMIT 1",
                    (int(lane),),
                ).fetchone()
                oldest = max(0.0, now - row[0]) if row else None
            out[lane] = LaneBacklog(self._pending[lane], oldest)
        return out

    def writer_alive(self) -> bool:
        """True while the outbox is open and its writer thread (the only way to disk) runs."""
        return not self._closed and self._writer is not None and self._writer.is_alive()

    @property
    def pending_total(self) -> int:
        return sum(self._pending.values())

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def used_bytes(self) -> int:
        """Bytes of live pages in the database file (free pages are reused, so they do not count)."""
        if self._read is None:
            return 0
        page_size = self._read.execute("PRAGMA page_size").fetchone()[0]
        pages = self._read.execute("PRAGMA page_count").fetchone()[0]
        free = self._read.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def run_in_writer(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the writer thread between batches (housekeeping, tests)."""
        self._queue.put(fn)

    # -- the writer thread -------------------------------------------------------------------

    def _writer_main(self) -> None:
        assert self._write is not None
        conn = self._write
        stop = False
        while not stop:
            op = self._queue.get()
            batch: list[_Op] = [op]
            while len(batch) < self.config.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            appends: list[_Append] = []
            marks: list[int] = []
            calls: list[Callable[[], None]] = []
            for item in batch:
                if item is None:
                    stop = True
                elif isinstance(item, _Append):
                    appends.append(item)
                elif isinstance(item, _Mark):
                    marks.extend(item.seqs)
                else:
                    calls.append(item)
            if appends or marks:
                self._commit(conn, appends, marks)
            for call in calls:
                try:
                    call()
                except Exception:
                    log.exception("outbox writer task failed")
            now = self._monotonic()
            if now - self._last_housekeeping >= self.config.housekeeping_interval_s:
                self._last_housekeeping = now
                try:
                    self.housekeeping()
                except sqlite3.Error:
                    log.exception("outbox housekeeping failed")

    def _commit(self, conn: sqlite3.Connection, appends: list[_Append], marks: list[int]) -> None:
        first = self._last_seq + 1
        now = self._wall()
        rows = []
        results: list[tuple[asyncio.Future[Committed] | None, Committed]] = []
        lanes_added = dict.fromkeys(Lane, 0)
        attachments: list[tuple[int, bytes]] = []
        seq = self._last_seq
        for item in appends:
            seq += 1
            ev = item.event
            lane = ev.spec.lane
            lanes_added[lane] += 1
            severity = ev.severity.value if ev.severity is not None else None
            rows.append((seq, ev.id, int(lane), ev.type, severity, now, ev.to_json(seq)))
            if item.attachment is not None:
                attachments.append((seq, item.attachment))
            results.append((item.future, Committed(seq, ev.id)))
        try:
            if seq > self._reserved_seq:
                # Reserve a block of seqs on disk before any of them can be committed.
                self._reserved_seq = seq + SEQ_RESERVE_BLOCK
                self._seq_floor.write(self._reserved_seq)
            conn.execute("BEGIN")
            if rows:
                conn.executemany(
                    "INSERT INTO events (seq, id, lane, type, severity, created_at, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?)", (str(seq),))
            if attachments:
                conn.executemany("INSERT INTO attachments (seq, data) VALUES (?, ?)", attachments)
            delivered_lanes: dict[int, int] = {}
            if marks:
                conn.executemany(
                    "UPDATE events SET delivered_at=? WHERE seq=? AND delivered_at IS NULL",
                    [(now, s) for s in marks],
                )
                # Evidence (face snapshots) is kept only until the centre has it.
                conn.executemany("DELETE FROM attachments WHERE seq=?", [(s,) for s in marks])
                # Count what really changed per lane, so the pending counters stay exact even when
                # a mark arrives for a row that was dropped or already marked.
                delivered_lanes = self._lanes_of(conn, marks, now)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as err:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self.stats.commit_failures += 1
            log.error("outbox commit of %d events failed: %s", len(rows), err)
            failure = OutboxError(f"outbox commit failed: {err}", code="outbox_commit")
            self._resolve_later([(fut, failure) for fut, _ in results])
            with self._marking_lock:
                self._marking.difference_update(marks)
            return
        self._last_seq = seq
        self.stats.commits += 1
        self.stats.appended += len(rows)
        delivered = sum(delivered_lanes.values())
        self.stats.delivered += delivered
        for lane in Lane:
            self._pending[lane] += lanes_added[lane] - delivered_lanes.get(int(lane), 0)
        with self._marking_lock:
            self._marking.difference_update(marks)
        if rows:
            log.debug("outbox committed seq %d..%d", first, seq)
            self._resolve_later(results, alert=lanes_added[Lane.ALERT] > 0)

    @staticmethod
    def _lanes_of(conn: sqlite3.Connection, seqs: list[int], stamp: float) -> dict[int, int]:
        counts: dict[int, int] = {}
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for lane, count in conn.execute(
                f"SELECT lane, count(*) FROM events WHERE delivered_at=? AND seq IN ({marks}) GROUP BY lane",
                (stamp, *chunk),
            ):
                counts[lane] = counts.get(lane, 0) + count
        return counts

    def _resolve_later(
        self, results: Sequence[tuple[asyncio.Future[Any] | None, Any]], alert: bool = False
    ) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def resolve() -> None:
            for fut, value in results:
                if fut is None or fut.done():
                    continue
                if isinstance(value, BaseException):
                    fut.set_exception(value)
                else:
                    fut.set_result(value)
            self.committed.set()
            if alert:
                self.alert_committed.set()

        with contextlib.suppress(RuntimeError):  # the loop closed while we committed
            loop.call_soon_threadsafe(resolve)

    # -- housekeeping: retention, size cap, disk floor --------------------------------------

    def housekeeping(self) -> None:
        """Enforce retention, the size cap and the free-disk floor (writer thread only).

        Order (DESIGN.md): delivered rows of the lowest lane first, oldest first; then undelivered
        telemetry. Access, attendance and alerts are never dropped; if only they are left, the cap is
        exceeded, logged and counted rather than losing them.
        """
        conn = self._write
        if conn is None:
            return
        cutoff = self._wall() - self.config.delivered_retention_s
        cur = conn.execute(
            "DELETE FROM events WHERE delivered_at IS NOT NULL AND delivered_at < ?", (cutoff,)
        )
        if cur.rowcount:
            self.stats.purged_delivered += cur.rowcount
        reason = self._pressure()
        if reason is None:
            return
        purged, dropped = 0, 0
        types: dict[str, int] = {}
        first: int | None = None
        last: int | None = None
        for lane in sorted(Lane, reverse=True):
            while self._pressure() is not None:
                n = self._delete_chunk(conn, lane, delivered=True)
                if n == 0:
                    break
                purged += n
        while self._pressure() is not None:
            chunk = conn.execute(
                "SELECT seq, type FROM events WHERE delivered_at IS NULL AND lane=? ORDER BY seq LIMIT ?",
                (int(Lane.TELEMETRY), self._chunk_rows()),
            ).fetchall()
            if not chunk:
                break
            conn.execute("BEGIN")
            conn.executemany("DELETE FROM events WHERE seq=?", [(s,) for s, _ in chunk])
            conn.execute("COMMIT")
            dropped += len(chunk)
            self._pending[Lane.TELEMETRY] -= len(chunk)
            first = chunk[0][0] if first is None else first
            last = chunk[-1][0]
            for _, type_ in chunk:
                types[type_] = types.get(type_, 0) + 1
        self.stats.purged_delivered += purged
        for type_, count in types.items():
            self.stats.dropped_undelivered[type_] = self.stats.dropped_undelivered.get(type_, 0) + count
        if reason == "disk_floor":
            conn.execute("PRAGMA incremental_vacuum")
        still = self._pressure()
        if still is not None:
            self.stats.over_limit += 1
            log.error(
                "outbox over its %s with only access/attendance/alert events left (%d bytes); "
                "keeping them, nothing more can be dropped",
                still,
                self.used_bytes(),
            )
        if dropped:
            log.warning(
                "outbox dropped %d undelivered telemetry events (seq %s..%s): %s",
                dropped,
                first,
                last,
                reason,
            )
            free = shutil.disk_usage(self.data_dir).free
            report = Event(
                type="edu.campus.gateway.events_dropped.v1",
                source=self.report_source,
                data={
                    "reason": reason,
                    "delivered_purged": purged,
                    "undelivered_dropped": dropped,
                    "first_seq": first,
                    "last_seq": last,
                    "types": types,
                    "used_bytes": self.used_bytes(),
                    "limit_bytes": self.config.max_bytes,
                    "free_bytes": free,
                },
            )
            # We are on the writer thread: commit the report right here, before anything else.
            self._commit(conn, [_Append(report, None)], [])
        elif purged:
            log.info("outbox purged %d delivered events to stay under its %s", purged, reason)

    def _pressure(self) -> Literal["size_cap", "disk_floor"] | None:
        if self.used_bytes() > self.config.max_bytes:
            return "size_cap"
        if shutil.disk_usage(self.data_dir).free < self.config.min_free_bytes:
            return "disk_floor"
        return None

    def _chunk_rows(self) -> int:
        # Aim at roughly 5% of the cap per step, from the mean row size; re-measured after each step.
        assert self._read is not None
        rows = self._read.execute("SELECT count(*) FROM events").fetchone()[0] or 1
        mean = max(1, self.used_bytes() // rows)
        return max(100, (self.config.max_bytes // 20) // mean)

    def _delete_chunk(self, conn: sqlite3.Connection, lane: Lane, delivered: bool) -> int:
        cond = "delivered_at IS NOT NULL" if delivered else "delivered_at IS NULL"
        conn.execute("BEGIN")
        cur = conn.execute(
            f"DELETE FROM events WHERE seq IN "
            f"(SELECT seq FROM events WHERE {cond} AND lane=? ORDER BY seq LIMIT ?)",
            (int(lane), self._chunk_rows()),
        )
        conn.execute("COMMIT")
        return cur.rowcount


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
