"""The outbox: every event is committed to SQLite before it is published (store-and-forward).

One writer thread owns the write connection. Appends, delivery marks and housekeeping are queued
to it; it takes whatever has queued up while the previous commit was syncing and commits it as one
transaction (group commit), so an fsync per commit stays cheap at tens of thousands of events per
second. The writer gives each event its ``seq`` inside that transaction, so ``seq`` order is commit
order and a ``seq`` is never handed out twice, across restarts and even across a lost database
(see :class:`SeqFloor`).

Readers (the MQTT link) use their own connection on the event loop thread; in WAL mode they never
block the writer. A row is marked delivered only when the link says the broker acknowledged it.

**Disk: bounded, never wedged** (docs/OPERATIONS.md, "Full disk"). The writer checks free space and
the size cap on the write path (every ``check_bytes`` appended, and at least every
``space_check_interval_s``) and applies the drop policy there: delivered rows first, then
undelivered telemetry, oldest first. Appends and delivery marks are separate transactions, so a
commit that fails for space never takes acknowledgements with it. When a commit fails for space,
the writer drops inline and retries; if that is not enough it deletes the space reserve and
commits only alerts, access and attendance (telemetry is refused while the reserve is in use);
if even they cannot be committed it holds them in a bounded memory queue, in order with their
futures, goes *critical* (:attr:`Outbox.storage`, and a ``storage_critical`` alert the agent
publishes directly), and commits them as soon as space returns. Every loss is counted by type and
reported in ``edu.campus.gateway.events_dropped.v1``: seq ranges for dropped rows, counts by type
and a time range for events that never got a seq.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from sync.envelope import Event, format_time, utc_now
from sync.errors import SyncError
from sync.event_types import Lane, Severity
from sync.outbox.config import OutboxConfig, SpaceLimits
from sync.outbox.store import (
    DB_NAME,
    MIGRATIONS,
    RESERVE_NAME,
    SEQ_FLOOR_NAME,
    SEQ_RESERVE_BLOCK,
    SeqFloor,
    SpaceReserve,
    salvage_undelivered,
)
from sync.storage import StorageError, StoreRecovery, open_store, synchronous_of

log = logging.getLogger(__name__)

StorageState = Literal["ok", "reserve", "critical"]
"""``ok``; ``reserve``: the reserve was released and only alerts, access and attendance are
committed; ``critical``: even those cannot be, they wait in memory."""

DropReason = Literal[
    "size_cap", "disk_floor", "disk_full", "reserve_only", "storage_critical", "commit_failed"
]
# The order says which reason a report that merges several gives (the most severe).
_REASON_RANK: dict[str, int] = {
    r: i
    for i, r in enumerate(
        ("size_cap", "disk_floor", "disk_full", "reserve_only", "commit_failed", "storage_critical")
    )
}

CRITICAL_RETRY_S = 0.25
"""How often the writer retries held events (and unmarked acknowledgements) while it cannot write."""
REPORT_INTERVAL_S = 1.0
"""Drops are merged into one report per this interval, so a long squeeze does not flood the lane."""
_LOG_EVERY_S = 10.0
_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13
_SQLITE_IOERR = 10
# A transaction needs about this much more than its payloads (indexes, page slack, WAL frames).
_WRITE_OVERHEAD = 3
_MIN_DELETE_BYTES = 64 << 10
RESERVE_FROM_FREE = 4
"""The reserve is claimed once free space is below this many times (floor + reserve)."""
_MAX_DELETE_BYTES = 8 << 20


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
    """Committed rows dropped before delivery (telemetry only), by type."""
    never_committed: dict[str, int] = field(default_factory=dict)
    """Events lost before they got a seq (refused or failed commits, memory queue overflow), by type."""
    over_limit: int = 0
    commit_failures: int = 0
    space_failures: int = 0
    """Commits (appends or marks) that failed because the disk was full."""
    inline_drops: int = 0
    """Drop-policy passes run on the write path (not by the periodic housekeeping)."""
    reserve_released: int = 0
    critical_episodes: int = 0


@dataclass(frozen=True, slots=True)
class StorageStatus:
    """What the outbox says about its disk (status, health, metrics)."""

    state: StorageState
    free_bytes: int
    min_free_bytes: int
    max_bytes: int
    reserve_bytes: int
    reserve_held: bool
    memory_queue: int
    memory_queue_max: int
    critical_since: str | None
    last_error: str


@dataclass
class _Append:
    event: Event
    future: asyncio.Future[Committed] | None
    attachment: bytes | None = None

    @property
    def protected(self) -> bool:
        """Alerts, access and attendance: never dropped, kept in memory when the disk is full."""
        return self.event.spec.lane != Lane.TELEMETRY


@dataclass
class _Mark:
    seqs: Sequence[int]


_Op = _Append | _Mark | Callable[[], None] | None


@dataclass
class _Losses:
    """Drops not reported yet; merged until the next report (see :data:`REPORT_INTERVAL_S`)."""

    reason: str = ""
    purged: int = 0
    dropped: int = 0
    types: dict[str, int] = field(default_factory=dict)
    first_seq: int | None = None
    last_seq: int | None = None
    never: dict[str, int] = field(default_factory=dict)
    never_from: datetime | None = None
    never_to: datetime | None = None

    def note_reason(self, reason: str) -> None:
        if not self.reason or _REASON_RANK[reason] > _REASON_RANK[self.reason]:
            self.reason = reason

    @property
    def lost_anything(self) -> bool:
        return self.dropped > 0 or bool(self.never)


_ROWS_PER_INSERT = 128
"""Rows per INSERT statement: 128 x 7 parameters stays under 999, SQLite's limit before 3.32."""


@functools.cache
def _insert_events_sql(rows: int) -> str:
    return "INSERT INTO events (seq, id, lane, type, severity, created_at, payload) VALUES " + ", ".join(
        ["(?, ?, ?, ?, ?, ?, ?)"] * rows
    )


def _insert_events(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert ``rows`` with multi-row statements, not ``executemany``.

    ``executemany`` gives the GIL back and takes it again for every row, so while the event loop is
    busy a commit of a few hundred rows took ~30 ms instead of ~2 ms; the events waiting behind a
    slow commit are what a SIGKILL loses (docs/INTEGRATORS.md, "The crash window"). Chunks are
    powers of two, so at most eight distinct statements are prepared (the statement cache keeps them).
    """
    start, size = 0, _ROWS_PER_INSERT
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        chunk = rows[start : start + size]
        conn.execute(_insert_events_sql(size), [value for row in chunk for value in row])
        start += size


class Outbox:
    """The durable event queue between the agent's rules and the MQTT link.

    ``report_source`` is the CloudEvents ``source`` the outbox uses for its own reports (drops,
    storage recovery, storage critical). Use :meth:`open` then :meth:`close`, or ``async with``.
    Time comes only from ``monotonic`` (housekeeping intervals) and ``now`` (row stamps, retention,
    file names), so the agent hands in its one clock and tests can move it.
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
        self.recovery: StoreRecovery | None = None
        self.salvaged = 0
        """Undelivered rows carried over from a corrupt outbox at open."""
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
        self._unmarked: list[int] = []
        self._pending = {lane: 0 for lane in Lane}
        self._closed = True
        self._last_housekeeping = 0.0
        # Space: the limits of this file system, the reserve, the write-path check, the held events.
        self.limits = SpaceLimits(config.max_bytes, config.min_free_bytes, 0, config.space_check_bytes)
        self._reserve = SpaceReserve(data_dir / RESERVE_NAME, 0)
        self._state: StorageState = "ok"
        self._held: collections.deque[_Append] = collections.deque()
        self._critical_alert: tuple[Event, int] | None = None
        self._critical_since: datetime | None = None
        self._last_error = ""
        self._free = 0
        self._bytes_since_check = 0
        self._last_check = 0.0
        self._losses = _Losses()
        self._last_report = 0.0
        self._last_retry = 0.0
        self._last_log: dict[str, float] = {}
        self._mean_row_bytes = 512
        self.committed = asyncio.Event()
        """Set (on the event loop) whenever new rows were committed; the link clears it."""
        self.alert_committed = asyncio.Event()
        """Set when an alert-lane row was committed, so the link can let it jump the backlog."""
        self.storage_changed = asyncio.Event()
        """Set (on the event loop) when :attr:`storage` changes state; the watcher clears it."""

    def _wall(self) -> float:
        return self._now().timestamp()

    @property
    def recovered_from(self) -> Path | None:
        """Where a corrupt outbox found at open was moved to (None: it was fine)."""
        return self.recovery.moved_to if self.recovery else None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (creating or migrating) the database; a corrupt one is moved aside, never deleted,
        after its undelivered rows were salvaged into the fresh one."""
        self._loop = asyncio.get_running_loop()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._open_files)
        self._closed = False
        # The first automatic housekeeping comes one interval after opening, not at the first commit.
        self._last_housekeeping = self._last_check = self._last_report = self._monotonic()
        self._writer = threading.Thread(target=self._writer_main, name="outbox-writer", daemon=True)
        self._writer.start()
        if self.recovery is not None:
            self.append_nowait(
                Event(
                    type="edu.campus.gateway.storage_recovered.v1",
                    source=self.report_source,
                    data={
                        **self.recovery.event_data(),
                        "seq_resumed_at": self._last_seq + 1,
                        "salvaged": self.salvaged,
                    },
                )
            )

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is exactly one transaction.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _open_files(self) -> None:
        try:
            conn, recovery = open_store(
                "outbox",
                self.path,
                MIGRATIONS,
                synchronous=synchronous_of("outbox", self.config.synchronous),
                now=self._now,
                # auto_vacuum must be chosen before the first table exists; it lets the disk-floor
                # policy hand freed pages back to the file system. Attachments are deleted with
                # their event rows (ON DELETE CASCADE).
                pragmas=("auto_vacuum=INCREMENTAL", "foreign_keys=ON", "journal_size_limit=8388608"),
            )
        except StorageError as err:
            raise OutboxError(f"cannot open outbox {self.path}: {err}", code="outbox_open") from err
        self._write = conn
        if recovery is not None:
            self.recovery = recovery
            try:
                self.salvaged = salvage_undelivered(recovery.moved_to, conn)
            except sqlite3.Error as err:  # best effort: the copy stays aside whatever happens
                log.error("salvaging undelivered rows from %s failed: %s", recovery.moved_to, err)
            log.error(
                "outbox %s was corrupt (%s): moved to %s; %d undelivered events salvaged into a fresh one",
                self.path,
                recovery.error,
                recovery.moved_to,
                self.salvaged,
            )
        self._read = self._connect()
        row = conn.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        db_last = int(row[0]) if row else 0
        floor = self._seq_floor.read()
        if recovery is not None:
            # Salvaged rows keep their seqs; new ones go above every seq that may have been used.
            top = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            self._last_seq = max(floor, int(top))
        else:
            # A fresh database (first start) resumes above every seq ever reserved. So does a
            # database older than the floor implies (a backup restored after a failed upgrade):
            # the seqs it does not know about may already be at the centre.
            stale = db_last > 0 and db_last < floor - SEQ_RESERVE_BLOCK - self.config.max_batch
            if stale:
                log.warning(
                    "outbox database ends at seq %d but seqs up to %d were reserved (restored from a "
                    "copy?); resuming above %d so no seq is used twice",
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
        st = os.statvfs(self.data_dir)
        self.limits = self.config.limits(st.f_blocks * st.f_frsize)
        self._reserve = SpaceReserve(self.data_dir / RESERVE_NAME, self.limits.reserve_bytes)
        self._free = st.f_bavail * st.f_frsize
        self._keep_reserve(self._free)

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
        but nobody waits for the fsync. A failed commit is logged, counted and reported by the
        outbox. ``attachment`` (a JPEG snapshot) is committed with the event and published beside
        it; the event counts as delivered only when both are acknowledged.
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
        """Wait until everything queued before this call was handled (commits are in queue order;
        events held in memory while the disk is full are not waited for)."""
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
        """Record broker acknowledgements; committed by the writer in their own transaction."""
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

    @property
    def storage(self) -> StorageStatus:
        """The disk as the outbox sees it: ``critical`` while alerts/access wait in memory."""
        since = self._critical_since
        return StorageStatus(
            state=self._state,
            free_bytes=self._free,
            min_free_bytes=self.limits.min_free_bytes,
            max_bytes=self.limits.max_bytes,
            reserve_bytes=self.limits.reserve_bytes,
            reserve_held=self._reserve.held,
            memory_queue=len(self._held),
            memory_queue_max=self.config.memory_queue_max,
            critical_since=format_time(since) if since else None,
            last_error=self._last_error,
        )

    @property
    def critical_alert(self) -> tuple[Event, int] | None:
        """While critical: the ``storage_critical`` alert and the seq it will be committed with.

        It heads the memory queue, so it is the first event committed once space returns and that
        seq is its own; until then the agent publishes it directly (same id and seq: the centre
        de-duplicates the later copy)."""
        return self._critical_alert

    def used_bytes(self) -> int:
        """Bytes of live pages in the database file (free pages are reused, so they do not count)."""
        return self._used_bytes(self._read) if self._read is not None else 0

    @staticmethod
    def _used_bytes(conn: sqlite3.Connection) -> int:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
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
            batch: list[_Op] = []
            try:
                # While something waits for space (or the reserve for its space), wake up to retry
                # even if nothing new comes.
                waiting = bool(self._held or self._unmarked) or self._state != "ok"
                batch.append(self._queue.get(timeout=CRITICAL_RETRY_S if waiting else None))
            except queue.Empty:
                pass
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
            try:
                self._write_batch(conn, appends, marks, closing=stop)
            except Exception:
                # A bug here must not end the only way to disk; the batch's losses are counted.
                log.exception("outbox writer step failed")
                self._lose(appends, "commit_failed", "writer step failed")
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
        self._give_up_held()

    def _write_batch(
        self, conn: sqlite3.Connection, appends: list[_Append], marks: list[int], *, closing: bool
    ) -> None:
        self._check_space(conn)
        if self._state != "ok":
            appends = self._admit(appends)
        if self._state == "critical" and self._monotonic() - self._last_retry < CRITICAL_RETRY_S:
            # A failing commit costs a drop pass and a checkpoint: retried on a clock, not per batch.
            self._hold(appends, None)
            appends = []
        elif self._held:
            self._last_retry = self._monotonic()
            # Held events go first: order per lane is commit order, whatever the disk did.
            self._held.extend(appends)
            appends = list(self._held)
            self._held.clear()
        if appends:
            self._append(conn, appends)
        # Appends first: they are what a crash must not lose; a lost mark is only a resend.
        if self._unmarked:
            marks = self._unmarked + marks
            self._unmarked = []
        if marks:
            self._mark(conn, marks)
        if self._losses.lost_anything and self._state != "critical":
            due = self._monotonic() - self._last_report >= REPORT_INTERVAL_S
            if due or closing:
                self._report_losses(conn)

    def _admit(self, appends: list[_Append]) -> list[_Append]:
        """While the reserve is in use, only alerts, access and attendance are written."""
        refused = [a for a in appends if not a.protected]
        if refused:
            self._lose(
                refused, "reserve_only", "the disk is full; only alerts, access and attendance are kept"
            )
        return [a for a in appends if a.protected]

    def _append(self, conn: sqlite3.Connection, appends: list[_Append]) -> None:
        step = self.config.max_batch
        for start in range(0, len(appends), step):
            chunk = appends[start : start + step]
            if not self._append_chunk(conn, chunk):
                # Out of space even for protected events: they and everything after them wait.
                rest = appends[start + step :]
                self._hold([a for a in rest if a.protected], None)
                self._lose([a for a in rest if not a.protected], "storage_critical", "the disk is full")
                return
        if self._state == "critical" and not self._held:
            self._leave_critical()

    def _append_chunk(self, conn: sqlite3.Connection, chunk: list[_Append]) -> bool:
        """Commit ``chunk``, making room if the disk is full; False if its protected events were
        held in memory instead (critical)."""
        err = self._commit(conn, chunk)
        if err is None:
            return True
        if not self._out_of_space(err):
            self._lose(chunk, "commit_failed", str(err))
            return True
        self.stats.space_failures += 1
        self._last_error = str(err)
        need = _WRITE_OVERHEAD * self._mean_row_bytes * len(chunk)
        self.stats.inline_drops += 1
        self._drop_policy(conn, need=need, disk_full=True)
        if self._commit(conn, chunk) is None:
            return True
        protected = [a for a in chunk if a.protected]
        self._lose([a for a in chunk if not a.protected], "disk_full", "the disk is full")
        if self._state == "ok":
            self._release_reserve(conn)
        # A transaction must fit in the WAL the file system still lets us use: as much as fits goes
        # in, in halving steps, and the rest waits in memory.
        size = len(protected)
        while protected:
            err = self._commit(conn, protected[:size])
            if err is None:
                protected = protected[size:]
                size = len(protected)
            elif size > 1 and self._out_of_space(err):
                size //= 2
            else:
                self._hold(protected, err)
                return False
        return True

    def _commit(self, conn: sqlite3.Connection, appends: list[_Append]) -> sqlite3.Error | OSError | None:
        """One transaction of appends; returns the error instead of raising it."""
        first = self._last_seq + 1
        now = self._wall()
        rows = []
        results: list[tuple[asyncio.Future[Committed] | None, Committed]] = []
        lanes_added = dict.fromkeys(Lane, 0)
        attachments: list[tuple[int, bytes]] = []
        seq = self._last_seq
        size = 0
        for item in appends:
            seq += 1
            ev = item.event
            lane = ev.spec.lane
            lanes_added[lane] += 1
            severity = ev.severity.value if ev.severity is not None else None
            payload = ev.to_json(seq)
            size += len(payload)
            rows.append((seq, ev.id, int(lane), ev.type, severity, now, payload))
            if item.attachment is not None:
                attachments.append((seq, item.attachment))
                size += len(item.attachment)
            results.append((item.future, Committed(seq, ev.id)))
        try:
            if seq > self._reserved_seq:
                # Reserve a block of seqs on disk before any of them can be committed.
                self._seq_floor.write(seq + SEQ_RESERVE_BLOCK)
                self._reserved_seq = seq + SEQ_RESERVE_BLOCK
            conn.execute("BEGIN")
            _insert_events(conn, rows)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?)", (str(seq),))
            if attachments:
                conn.executemany("INSERT INTO attachments (seq, data) VALUES (?, ?)", attachments)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as err:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self.stats.commit_failures += 1
            self._log_limited(
                "commit", logging.ERROR, "outbox commit of %d events failed: %s", len(rows), err
            )
            return err
        self._last_seq = seq
        self.stats.commits += 1
        self.stats.appended += len(rows)
        self._bytes_since_check += size
        self._mean_row_bytes = max(64, (self._mean_row_bytes * 7 + size // max(1, len(rows))) // 8)
        for lane in Lane:
            self._pending[lane] += lanes_added[lane]
        log.debug("outbox committed seq %d..%d", first, seq)
        self._resolve_later(results, alert=lanes_added[Lane.ALERT] > 0)
        return None

    def _mark(self, conn: sqlite3.Connection, marks: list[int]) -> None:
        """Commit delivery marks in their own transaction (never with appends that can fail)."""
        now = self._wall()
        relaxed = self.config.synchronous == "full"
        try:
            if relaxed:
                # A lost mark is only a resend (same id), so marks do not pay an fsync of their own:
                # the next append's fsync of the WAL makes them durable too.
                conn.execute("PRAGMA synchronous=NORMAL")
            delivered_lanes = self._mark_once(conn, marks, now)
        except (sqlite3.Error, OSError) as err:
            if not self._out_of_space(err):
                self.stats.commit_failures += 1
                log.error(
                    "outbox: %d delivery marks not committed (%s); those rows will be sent again",
                    len(marks),
                    err,
                )
                with self._marking_lock:
                    self._marking.difference_update(marks)
                return
            self.stats.space_failures += 1
            self._drop_policy(conn, need=0, disk_full=True)
            try:
                delivered_lanes = self._mark_once(conn, marks, now)
            except (sqlite3.Error, OSError) as again:
                # Kept (and still skipped by readers): retried until there is room.
                self._log_limited(
                    "marks", logging.WARNING, "outbox: delivery marks wait for space: %s", again
                )
                self._unmarked = marks
                return
        finally:
            if relaxed:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA synchronous=FULL")
        delivered = sum(delivered_lanes.values())
        self.stats.delivered += delivered
        for lane in Lane:
            self._pending[lane] -= delivered_lanes.get(int(lane), 0)
        with self._marking_lock:
            self._marking.difference_update(marks)

    def _mark_once(self, conn: sqlite3.Connection, marks: list[int], now: float) -> dict[int, int]:
        try:
            conn.execute("BEGIN")
            conn.executemany(
                "UPDATE events SET delivered_at=? WHERE seq=? AND delivered_at IS NULL",
                [(now, s) for s in marks],
            )
            # Evidence (face snapshots) is kept only until the centre has it.
            conn.executemany("DELETE FROM attachments WHERE seq=?", [(s,) for s in marks])
            # Count what really changed per lane, so the pending counters stay exact even when
            # a mark arrives for a row that was dropped or already marked.
            lanes = self._lanes_of(conn, marks, now)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return lanes

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

    def _notify_storage(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.storage_changed.set)

    def _log_limited(self, key: str, level: int, msg: str, *args: object) -> None:
        now = self._monotonic()
        if now - self._last_log.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[key] = now
            log.log(level, msg, *args, stacklevel=2)

    # -- losses: counted by type, reported ----------------------------------------------------

    def _lose(self, items: Iterable[_Append], reason: DropReason, why: str) -> None:
        """Events that never got a seq: counted by type, their futures failed, reported later."""
        items = list(items)
        if not items:
            return
        losses = self._losses
        losses.note_reason(reason)
        for item in items:
            ev = item.event
            losses.never[ev.type] = losses.never.get(ev.type, 0) + 1
            self.stats.never_committed[ev.type] = self.stats.never_committed.get(ev.type, 0) + 1
            losses.never_from = ev.time if losses.never_from is None else min(losses.never_from, ev.time)
            losses.never_to = ev.time if losses.never_to is None else max(losses.never_to, ev.time)
        self._log_limited(
            "lose:" + reason,
            logging.ERROR,
            "outbox lost %d events before commit (%s): %s",
            len(items),
            reason,
            why,
        )
        failure = OutboxError(f"event not committed ({reason}): {why}", code="outbox_commit")
        self._resolve_later([(item.future, failure) for item in items])

    def _report_losses(self, conn: sqlite3.Connection) -> None:
        losses, self._losses = self._losses, _Losses()
        self._last_report = self._monotonic()
        data: dict[str, Any] = {
            "reason": losses.reason,
            "delivered_purged": losses.purged,
            "undelivered_dropped": losses.dropped,
            "first_seq": losses.first_seq,
            "last_seq": losses.last_seq,
            "types": losses.types,
            "used_bytes": self._used_bytes(conn),
            "limit_bytes": self.limits.max_bytes,
            "free_bytes": self._free,
        }
        if losses.never:
            assert losses.never_from is not None and losses.never_to is not None
            data["never_committed"] = sum(losses.never.values())
            data["never_committed_types"] = losses.never
            data["never_committed_from"] = format_time(losses.never_from)
            data["never_committed_to"] = format_time(losses.never_to)
        log.warning(
            "outbox lost events (%s): %d dropped (seq %s..%s), %d never committed: %s",
            losses.reason,
            losses.dropped,
            losses.first_seq,
            losses.last_seq,
            sum(losses.never.values()),
            {**losses.types, **losses.never},
        )
        report = _Append(Event("edu.campus.gateway.events_dropped.v1", self.report_source, data), None)
        # The report rides the access lane: if it cannot be committed it is held like an alert.
        if self._held:
            self._held.append(report)
        else:
            self._append(conn, [report])

    # -- space: checks on the write path, the drop policy, the reserve, the memory queue ------

    def _out_of_space(self, err: BaseException) -> bool:
        """Whether a failed write means the file system (or the user's quota) is full."""
        if isinstance(err, OSError):
            return err.errno in _SPACE_ERRNOS
        if not isinstance(err, sqlite3.Error):
            return False
        code = getattr(err, "sqlite_errorcode", 0) & 0xFF
        if code == _SQLITE_FULL or "database or disk is full" in str(err):
            return True
        # Growing the -wal or -shm on a full file system can surface as an I/O error; on a file
        # system with room it is a real I/O error and not ours to drop events for.
        return code == _SQLITE_IOERR and self._free_bytes() < self.limits.check_bytes

    def _free_bytes(self) -> int:
        st = os.statvfs(self.data_dir)
        self._free = st.f_bavail * st.f_frsize
        return self._free

    def _check_space(self, conn: sqlite3.Connection) -> None:
        """The write-path check: cheap unless ``check_bytes`` were written or the interval passed."""
        now = self._monotonic()
        due = self._bytes_since_check >= self.limits.check_bytes
        if not due and now - self._last_check < self.config.space_check_interval_s:
            return
        self._last_check = now
        self._bytes_since_check = 0
        self._keep_reserve(self._free_bytes())
        if self._shortfall(conn, 0) is not None:
            self.stats.inline_drops += 1
            self._drop_policy(conn, need=0, disk_full=False)

    def _shortfall(self, conn: sqlite3.Connection, need: int) -> tuple[str, int] | None:
        used = self._used_bytes(conn)
        if used > self.limits.max_bytes:
            return "size_cap", used - self.limits.max_bytes
        want = self.limits.min_free_bytes + need
        free = self._free_bytes()
        if free < want:
            return "disk_floor", want - free
        return None

    def _room_inside(self, conn: sqlite3.Connection) -> int:
        """Free pages inside the database: room a commit can use without the file system."""
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int(conn.execute("PRAGMA freelist_count").fetchone()[0] * page_size)

    def _drop_policy(self, conn: sqlite3.Connection, *, need: int, disk_full: bool) -> None:
        """Delivered rows (lowest lane first), then undelivered telemetry, oldest first, until the
        size cap, the floor (plus ``need``) hold again. ``disk_full``: a commit just failed, so room
        inside the database counts (freed pages are reused without the file system)."""
        short = self._shortfall(conn, need)
        if short is None and not disk_full:
            return
        reason = "disk_full" if disk_full else (short[0] if short else "disk_floor")
        losses = self._losses

        def still_short() -> bool:
            if disk_full and self._room_inside(conn) >= max(need, 1 << 20):
                return False
            return self._shortfall(conn, need) is not None

        purged = 0
        for lane in sorted(Lane, reverse=True):
            while still_short():
                n, _ = self._delete_chunk(conn, lane, delivered=True, reason=reason)
                if n == 0:
                    break
                purged += n
        dropped = 0
        while still_short():
            n, chunk = self._delete_chunk(conn, Lane.TELEMETRY, delivered=False, reason=reason)
            if n == 0:
                break
            dropped += n
            self._pending[Lane.TELEMETRY] -= n
            losses.first_seq = chunk[0][0] if losses.first_seq is None else losses.first_seq
            losses.last_seq = chunk[-1][0]
            for _, type_ in chunk:
                losses.types[type_] = losses.types.get(type_, 0) + 1
                self.stats.dropped_undelivered[type_] = self.stats.dropped_undelivered.get(type_, 0) + 1
        self.stats.purged_delivered += purged
        losses.purged += purged
        losses.dropped += dropped
        if dropped:
            losses.note_reason(reason)
        if still_short() and not disk_full:
            self.stats.over_limit += 1
            self._log_limited(
                "over",
                logging.ERROR,
                "outbox over its %s with only access/attendance/alert events left (%d bytes, %d free); "
                "keeping them, nothing more can be dropped",
                reason,
                self._used_bytes(conn),
                self._free,
            )
        elif purged and not dropped:
            log.info("outbox purged %d delivered events (%s)", purged, reason)

    def _delete_chunk(
        self, conn: sqlite3.Connection, lane: Lane, *, delivered: bool, reason: str
    ) -> tuple[int, list[tuple[int, str]]]:
        """Delete the oldest rows of one kind, sized to the shortfall; returns the count and, for
        undelivered rows, their (seq, type). A delete that fails for space releases the reserve."""
        cond = "delivered_at IS NOT NULL" if delivered else "delivered_at IS NULL"
        if reason == "size_cap":
            want = self.limits.max_bytes // 20
        else:
            # A delete needs WAL room for the pages it changes: small steps when little is free.
            want = max(_MIN_DELETE_BYTES, min(_MAX_DELETE_BYTES, self._free // 2))
        limit = max(100, want // self._mean_row_bytes)
        chunk = conn.execute(
            f"SELECT seq, type FROM events WHERE {cond} AND lane=? ORDER BY seq LIMIT ?",
            (int(lane), limit),
        ).fetchall()
        if not chunk:
            return 0, []
        for attempt in range(2):
            try:
                conn.execute("BEGIN")
                conn.executemany("DELETE FROM events WHERE seq=?", [(s,) for s, _ in chunk])
                conn.execute("COMMIT")
                break
            except (sqlite3.Error, OSError) as err:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if attempt or not self._out_of_space(err) or not self._release_reserve(conn):
                    self._log_limited("delete", logging.ERROR, "outbox drop policy could not delete: %s", err)
                    return 0, []
        self._give_back(conn, reason)
        return len(chunk), chunk

    def _give_back(self, conn: sqlite3.Connection, reason: str) -> None:
        """After a delete: the WAL restarts from its beginning (no new file space for the next
        commits) and, under the floor, freed pages go back to the file system."""
        with contextlib.suppress(sqlite3.Error):
            if reason == "size_cap":
                return
            if reason == "disk_floor":
                conn.execute("PRAGMA incremental_vacuum").fetchall()
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            else:
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        self._free_bytes()

    def _release_reserve(self, conn: sqlite3.Connection) -> bool:
        """Hand the reserve back to the file system; False if there was none to release."""
        freed = self._reserve.release()
        if self._state == "ok":
            self._state = "reserve"
            self._notify_storage()
        if not freed:
            return False
        self.stats.reserve_released += 1
        log.error(
            "outbox: the disk is full; released the %d-byte space reserve, only alerts, access and "
            "attendance are kept until space returns",
            freed,
        )
        self._free_bytes()
        return True

    def _keep_reserve(self, free: int) -> None:
        """Set the reserve aside when space gets tight, and after a squeeze once space is back.

        Far from full it is not taken (it would only take space from everything else); below
        :data:`RESERVE_FROM_FREE` times floor + reserve it may soon be needed, so it is claimed then.
        """
        if self._held:
            return  # the returning space is for the held events first
        limits = self.limits
        if free < limits.min_free_bytes + limits.reserve_bytes + limits.check_bytes:
            return
        tight = free < RESERVE_FROM_FREE * (limits.min_free_bytes + limits.reserve_bytes)
        if limits.reserve_bytes and tight and not self._reserve.held:
            if not self._reserve.create():
                return
            self._free_bytes()
        if self._state != "ok":
            log.warning("outbox: space is back; the reserve is set aside again and every lane is kept")
            self._state = "ok"
            self._notify_storage()

    def _hold(self, items: list[_Append], err: BaseException | None) -> None:
        """Keep protected events in memory, in order, until they can be committed."""
        if not items:
            return
        if self._state != "critical":
            self._enter_critical(err)
            self._last_retry = self._monotonic()
        self._held.extend(items)
        overflow = len(self._held) - self.config.memory_queue_max
        if overflow > 0:
            self._lose(self._evict(overflow), "storage_critical", "the memory queue is full")

    def _evict(self, n: int) -> list[_Append]:
        """The oldest access-lane events go first, then the oldest alerts; never the storage alert."""
        head = self._critical_alert[0] if self._critical_alert is not None else None
        victims: list[_Append] = []
        for lane in (Lane.ACCESS, Lane.ALERT):
            for item in self._held:
                if len(victims) >= n:
                    break
                if item.event is not head and item.event.spec.lane == lane:
                    victims.append(item)
        gone = {id(v) for v in victims}
        self._held = collections.deque(item for item in self._held if id(item) not in gone)
        return victims

    def _enter_critical(self, err: BaseException | None) -> None:
        self.stats.critical_episodes += 1
        self._state = "critical"
        self._critical_since = self._now()
        alert = Event(
            "edu.campus.gateway.storage_critical.v1",
            self.report_source,
            {
                "path": str(self.data_dir),
                "free_bytes": self._free,
                "memory_queue_max": self.config.memory_queue_max,
                "error": str(err) if err else self._last_error or "disk full",
            },
            severity=Severity.CRITICAL,
        )
        # Nothing is committed before the memory queue, so this alert, at its head, gets the next seq.
        self._critical_alert = (alert, self._last_seq + 1)
        self._held.appendleft(_Append(alert, None))
        log.critical(
            "outbox storage critical: the disk is full even for alerts and access events; they are "
            "kept in memory (at most %d) until space returns",
            self.config.memory_queue_max,
        )
        self._notify_storage()

    def _leave_critical(self) -> None:
        held_for = (self._now() - self._critical_since).total_seconds() if self._critical_since else 0.0
        log.warning("outbox storage critical is over after %.1f s: the held events are committed", held_for)
        self._state = "reserve"
        self._critical_alert = None
        self._critical_since = None
        self._notify_storage()

    def _give_up_held(self) -> None:
        if self._held:
            log.error("outbox closing with %d events it could not commit (disk full)", len(self._held))
            self._lose(list(self._held), "storage_critical", "the outbox closed while the disk was full")
            self._held.clear()

    # -- housekeeping: retention, size cap, disk floor --------------------------------------

    def housekeeping(self) -> None:
        """Enforce retention, the size cap and the free-disk floor, re-create the reserve when space
        is back, and report drops (writer thread only).

        Order (DESIGN.md): delivered rows of the lowest lane first, oldest first; then undelivered
        telemetry. Access, attendance and alerts are never dropped; if only they are left, the cap is
        exceeded, logged and counted rather than losing them.
        """
        conn = self._write
        if conn is None:
            return
        cutoff = self._wall() - self.config.delivered_retention_s
        try:
            cur = conn.execute(
                "DELETE FROM events WHERE delivered_at IS NOT NULL AND delivered_at < ?", (cutoff,)
            )
        except sqlite3.Error as err:
            # Retention can wait; the drop policy below has its own way to room.
            self._log_limited("retention", logging.WARNING, "outbox retention purge failed: %s", err)
        else:
            self.stats.purged_delivered += cur.rowcount
        self._last_check = -self.config.space_check_interval_s
        self._check_space(conn)
        if self._losses.lost_anything and self._state != "critical":
            self._report_losses(conn)


__all__ = [
    "Committed",
    "LaneBacklog",
    "Outbox",
    "OutboxClosed",
    "OutboxConfig",
    "OutboxError",
    "OutboxStats",
    "PendingRow",
    "StorageState",
    "StorageStatus",
]
