"""The local alert book: every alert the gateway raised, its snapshot, and who acknowledged it.

Security staff work from this on the campus LAN even when the centre is unreachable: the console
lists alerts from here and live subscribers get each new alert or acknowledgement at once. Snapshots
are kept locally only for ``snapshot_retention_s`` (evidence for the guard on duty, not an archive).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from edge_agent.errors import AgentError
from sync import DamagedRows, Event, Migration, format_time, open_store, utc_now

log = logging.getLogger(__name__)

ALERTS_DB = "alerts.db"


class AlertError(AgentError):
    """An acknowledgement that cannot be done: unknown alert (``unknown_alert``) or already done."""


@dataclass(frozen=True)
class AlertRecord:
    id: str
    type: str
    severity: str
    source: str
    device: str
    time: str
    data: dict[str, Any]
    has_snapshot: bool
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _migration_1(db: sqlite_utils.Database) -> None:
    db["alerts"].create(  # type: ignore[union-attr]
        {
            "id": str,
            "type": str,
            "severity": str,
            "source": str,
            "device": str,
            "time": str,
            "data": str,
            "snapshot": bytes,
            "created_at": float,
            "acknowledged_by": str,
            "acknowledged_at": str,
            "note": str,
        },
        pk="id",
    )
    db["alerts"].create_index(["created_at"])  # type: ignore[union-attr]


MIGRATIONS: list[Migration] = [("0001_alerts_initial", _migration_1)]


class AlertBook:
    """SQLite-backed list of alerts with live subscribers (one asyncio queue per subscriber).

    A corrupt ``alerts.db`` is moved aside at open and the book starts empty (``recovery`` says
    so); undelivered alerts are still in the outbox. ``damaged`` counts rows that could not be read
    back (a garbled payload that the integrity check cannot see); they are skipped.
    """

    def __init__(
        self,
        data_dir: Path,
        snapshot_retention_s: float = 86400.0,
        keep_s: float = 30 * 86400.0,
        *,
        synchronous: Literal["full", "normal"] = "full",
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._conn, self.recovery = open_store(
            "alerts",
            data_dir / ALERTS_DB,
            MIGRATIONS,
            synchronous=synchronous,
            now=now,
            # Snapshots may show faces: a deleted one is overwritten on disk, not just unlinked.
            pragmas=("secure_delete=ON",),
        )
        self.damaged = DamagedRows("alerts")
        self.snapshot_retention_s = snapshot_retention_s
        self.keep_s = keep_s
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def close(self) -> None:
        self._conn.close()

    def record(self, event: Event, snapshot: bytes | None = None) -> AlertRecord:
        """Keep an alert the gateway raised (called as it is emitted) and tell live subscribers."""
        if self.snapshot_retention_s <= 0:
            snapshot = None
        data = event.data
        device = str(
            data.get("device") or data.get("camera") or data.get("gate") or event.source.rsplit("/", 1)[-1]
        )
        record = AlertRecord(
            id=event.id,
            type=event.type,
            severity=event.severity.value if event.severity else "info",
            source=event.source,
            device=device,
            time=format_time(event.time),
            data=data,
            has_snapshot=bool(snapshot),
        )
        try:
            self._conn.execute(
                "INSERT OR IGNORE INTO alerts "
                "(id, type, severity, source, device, time, data, snapshot, created_at, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '')",
                (
                    record.id,
                    record.type,
                    record.severity,
                    record.source,
                    record.device,
                    record.time,
                    json.dumps(data),
                    snapshot,
                    time.time(),
                ),
            )
        finally:
            # The guard on duty sees the alert live even when the book cannot keep it (a full
            # disk): the caller counts and logs the failed insert.
            self._publish({"kind": "alert", "alert": record.to_dict()})
        return record

    def _row(self, row: tuple[Any, ...]) -> AlertRecord | None:
        """The record of a row; None (counted, logged) when the row is damaged."""
        (id_, type_, severity, source, device, at, data, has_snapshot, by, when, note) = row
        try:
            texts = (id_, type_, severity, source, device, at, data)
            if not all(isinstance(t, str) for t in texts) or not all(
                t is None or isinstance(t, str) for t in (by, when, note)
            ):
                raise ValueError("a text column holds bytes that are not UTF-8")
            payload = json.loads(data)
            if not isinstance(payload, dict):
                raise ValueError(f"data is a JSON {type(payload).__name__}, not an object")
        except ValueError as err:
            self.damaged.note(repr(id_), err)
            return None
        return AlertRecord(
            id_, type_, severity, source, device, at, payload, bool(has_snapshot), by, when, note or ""
        )

    _COLUMNS = (
        "id, type, severity, source, device, time, data, snapshot IS NOT NULL, acknowledged_by, "
        "acknowledged_at, note"
    )

    def list(
        self,
        *,
        severity: str | None = None,
        acknowledged: bool | None = None,
        device: str | None = None,
        limit: int = 100,
    ) -> list[AlertRecord]:
        """Newest first."""
        where, args = [], []
        if severity is not None:
            where.append("severity=?")
            args.append(severity)
        if device is not None:
            where.append("device=?")
            args.append(device)
        if acknowledged is not None:
            where.append("acknowledged_at IS NOT NULL" if acknowledged else "acknowledged_at IS NULL")
        query = f"SELECT {self._COLUMNS} FROM alerts"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created_at DESC LIMIT ?"
        rows = self._conn.execute(query, (*args, max(1, min(limit, 1000))))
        return [record for record in map(self._row, rows) if record is not None]

    def get(self, alert_id: str) -> AlertRecord | None:
        """The alert, or None when there is none (or its row is damaged)."""
        row = self._conn.execute(f"SELECT {self._COLUMNS} FROM alerts WHERE id=?", (alert_id,)).fetchone()
        return self._row(row) if row else None

    def snapshot(self, alert_id: str) -> bytes | None:
        row = self._conn.execute("SELECT snapshot FROM alerts WHERE id=?", (alert_id,)).fetchone()
        if not row or row[0] is None:
            return None
        if not isinstance(row[0], bytes):  # a JPEG is stored as a blob; anything else is damage
            self.damaged.note(alert_id, TypeError(f"snapshot is {type(row[0]).__name__}, not bytes"))
            return None
        return row[0]

    def acknowledge(self, alert_id: str, by: str, note: str = "") -> AlertRecord:
        """Mark an alert acknowledged; raises :class:`AlertError` for an unknown or acknowledged one."""
        current = self.get(alert_id)
        if current is None:
            raise AlertError(f"no alert with id {alert_id!r}", code="unknown_alert")
        if current.acknowledged_at is not None:
            raise AlertError(
                f"alert {alert_id} was acknowledged by {current.acknowledged_by} at "
                f"{current.acknowledged_at}",
                code="already_acknowledged",
            )
        at = format_time(utc_now())
        self._conn.execute(
            "UPDATE alerts SET acknowledged_by=?, acknowledged_at=?, note=? WHERE id=?",
            (by, at, note, alert_id),
        )
        record = self.get(alert_id)
        assert record is not None
        self._publish({"kind": "acknowledged", "alert": record.to_dict()})
        return record

    _NAMES_PERSON = (
        "(json_extract(data, '$.person.id') = :person OR json_extract(data, '$.person') = :person "
        "OR json_extract(data, '$.person_id') = :person)"
    )

    def naming(self, person_id: str, limit: int = 1000) -> builtins.list[AlertRecord]:
        """Alerts whose data names ``person_id`` (``person``, ``person.id`` or ``person_id``), newest
        first. Stranger alerts name no one: their face crop is nobody's until retention takes it."""
        rows = self._conn.execute(
            f"SELECT {self._COLUMNS} FROM alerts WHERE {self._NAMES_PERSON} "
            "ORDER BY created_at DESC LIMIT :limit",
            {"person": person_id, "limit": max(1, limit)},
        )
        return [record for record in map(self._row, rows) if record is not None]

    def persons_named(self) -> set[str]:
        """The person ids any alert names (one pass over the book), so a roster change removing
        thousands of people looks only at the few the book holds alerts of."""
        rows = self._conn.execute(
            "SELECT DISTINCT coalesce(json_extract(data, '$.person.id'), json_extract(data, '$.person'), "
            "json_extract(data, '$.person_id')) FROM alerts"
        )
        return {row[0] for row in rows if isinstance(row[0], str)}

    def forget_person(self, person_id: str) -> tuple[int, int, int]:
        """Delete the acknowledged alerts naming ``person_id`` and their snapshots; an open
        (unacknowledged) one is kept whole, evidence the guard on duty still works from, until it is
        acknowledged and its retention ends. Returns ``(alerts deleted, snapshots deleted with them,
        open alerts kept)``."""
        args = {"person": person_id}
        closed = f"{self._NAMES_PERSON} AND acknowledged_at IS NOT NULL"
        snapshots = self._conn.execute(
            f"SELECT count(*) FROM alerts WHERE {closed} AND snapshot IS NOT NULL", args
        ).fetchone()[0]
        deleted = self._conn.execute(f"DELETE FROM alerts WHERE {closed}", args).rowcount
        kept = self._conn.execute(
            f"SELECT count(*) FROM alerts WHERE {self._NAMES_PERSON} AND acknowledged_at IS NULL", args
        ).fetchone()[0]
        return deleted, int(snapshots), int(kept)

    def housekeeping(self) -> None:
        now = time.time()
        self._conn.execute(
            "UPDATE alerts SET snapshot=NULL WHERE snapshot IS NOT NULL AND created_at < ?",
            (now - self.snapshot_retention_s,),
        )
        self._conn.execute("DELETE FROM alerts WHERE created_at < ?", (now - self.keep_s,))

    def subscribe(self, maxsize: int = 256) -> asyncio.Queue[dict[str, Any]]:
        """A queue that receives ``{"kind": "alert"|"acknowledged", "alert": {...}}`` for each change."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    def _publish(self, message: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            # A console that stopped reading loses old notifications, never blocks the gateway.
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(message)


__all__ = ["AlertBook", "AlertError", "AlertRecord"]
