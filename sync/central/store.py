"""Writes classified messages into PostgreSQL, one transaction per batch.

Idempotent by construction: ``events`` is unique on ``(source, id)`` and inserts skip conflicts, so
a redelivered message, or an alert's second copy from ``alerts/{severity}``, is counted and not
stored twice. Seq tracking happens in the same transaction under a row lock per gateway (taken in
gateway order, so two consumers never deadlock on them): a seq above the high-water mark opens a gap
for the seqs it skipped; a seq below it fills the open gap that contains it.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg

from sync.central.classify import Classified, DeadLetter, EventRow, Ignored, StatusRow

log = logging.getLogger(__name__)

_INSERT_EVENTS = """
INSERT INTO events (source, id, gateway, seq, type, time, subject, severity, topic, data)
SELECT s, i, g, q, t, tm, sub, sev, tp, d::jsonb
FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], %b::text[], %b::timestamptz[],
            %b::text[], %b::text[], %b::text[], %b::text[]) AS u(s, i, g, q, t, tm, sub, sev, tp, d)
ON CONFLICT (source, id) DO NOTHING
RETURNING source, id
"""

# Creates the rows of new gateways and locks all of them, in gateway order, in one round trip: the
# no-op DO UPDATE takes the row lock (and is a HOT update, the key does not change).
_LOCK_GATEWAYS = """
INSERT INTO gateways (gateway)
SELECT g FROM unnest(%b::text[]) AS u(g) ORDER BY g
ON CONFLICT (gateway) DO UPDATE SET gateway = excluded.gateway
RETURNING gateway, max_seq
"""

_UPDATE_GATEWAYS = """
UPDATE gateways SET max_seq = u.m, events = gateways.events + u.n,
       last_event = greatest(gateways.last_event, u.t)
FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::timestamptz[]) AS u(g, m, n, t)
WHERE gateways.gateway = u.g
"""

_INSERT_GAPS = """
INSERT INTO gaps (gateway, from_seq, to_seq, missing)
SELECT g, f, t, t - f + 1 FROM unnest(%b::text[], %b::bigint[], %b::bigint[]) AS u(g, f, t)
"""

# Several late seqs of one batch may fall in the same gap, so they are counted per gap first
# (an UPDATE ... FROM with several matching rows would apply only one of them).
_FILL_GAPS = """
WITH late AS (SELECT * FROM unnest(%b::text[], %b::bigint[]) AS l(gateway, seq)),
hits AS (
    SELECT g.id, count(*) AS n
    FROM gaps g JOIN late l ON g.gateway = l.gateway AND l.seq BETWEEN g.from_seq AND g.to_seq
    WHERE g.filled_at IS NULL
    GROUP BY g.id
)
UPDATE gaps SET missing = greatest(gaps.missing - hits.n, 0),
       filled_at = CASE WHEN gaps.missing - hits.n <= 0 THEN now() END
FROM hits WHERE gaps.id = hits.id
RETURNING hits.n, gaps.filled_at IS NOT NULL
"""

_UPSERT_STATUS = """
INSERT INTO gateway_status (gateway, site, name, state, reason, version, last_seq, backlog,
                            roster_version, status, reported_at, received_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s, now())
ON CONFLICT (gateway) DO UPDATE SET
    state = excluded.state, reason = excluded.reason, version = excluded.version,
    last_seq = excluded.last_seq, backlog = excluded.backlog, roster_version = excluded.roster_version,
    status = excluded.status, reported_at = excluded.reported_at, received_at = excluded.received_at
"""

_INSERT_DEAD = "INSERT INTO dead_letters (topic, code, reason, payload) VALUES (%s, %s, %s, %s)"


@dataclass
class IngestStats:
    """Counters of one consumer since it started; ``dead_letters`` and ``ignored`` are by code/channel.

    ``redelivered`` counts messages the broker flagged DUP: sent before, not acknowledged then (after
    a consumer crash, its in-flight window); ``duplicates`` counts events already stored (those
    redeliveries once committed, gateway re-publishes, and every alert's second copy).
    """

    received: int = 0
    redelivered: int = 0
    events_stored: int = 0
    duplicates: int = 0
    statuses: int = 0
    gaps_opened: int = 0
    gaps_filled: int = 0
    seq_unexpected: int = 0
    batches: int = 0
    batch_retries: int = 0
    dead_letters: collections.Counter[str] = field(default_factory=collections.Counter)
    ignored: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        out["dead_letters"] = dict(self.dead_letters)
        out["ignored"] = dict(self.ignored)
        return out


@dataclass
class BatchResult:
    """What one committed batch did (also added to the consumer's :class:`IngestStats`)."""

    stored: int = 0
    duplicates: int = 0
    statuses: int = 0
    gaps_opened: int = 0
    gaps_filled: int = 0
    seq_unexpected: int = 0
    dead_letters: collections.Counter[str] = field(default_factory=collections.Counter)
    ignored: collections.Counter[str] = field(default_factory=collections.Counter)

    def add_to(self, stats: IngestStats) -> None:
        stats.events_stored += self.stored
        stats.duplicates += self.duplicates
        stats.statuses += self.statuses
        stats.gaps_opened += self.gaps_opened
        stats.gaps_filled += self.gaps_filled
        stats.seq_unexpected += self.seq_unexpected
        stats.dead_letters.update(self.dead_letters)
        stats.ignored.update(self.ignored)
        stats.batches += 1


def write_batch(conn: psycopg.Connection[tuple[Any, ...]], items: Sequence[Classified]) -> BatchResult:
    """Store one batch in one transaction; a row-level database refusal dead-letters that message.

    Raises :class:`psycopg.OperationalError` (connection lost, deadlock) with nothing committed: the
    caller retries the batch, and has acknowledged none of it.
    """
    try:
        with conn.transaction():
            return _write(conn, items)
    except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as err:
        # One message the schema let through but PostgreSQL refuses (a NUL character in a string,
        # say) must not block the whole stream: retry one by one and dead-letter the refused ones.
        log.warning("batch refused by the database (%s); writing its %d messages one by one", err, len(items))
    result = BatchResult()
    for item in items:
        try:
            with conn.transaction():
                one = _write(conn, [item])
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as err:
            topic = item.topic
            payload = _raw(item)
            with conn.transaction():
                one = _write(conn, [DeadLetter(topic, "database_rejected", str(err).strip(), payload)])
        _merge(result, one)
    return result


def _raw(item: Classified) -> bytes:
    if isinstance(item, DeadLetter):
        return item.payload
    if isinstance(item, Ignored):
        return b""
    return item.raw


def _merge(into: BatchResult, one: BatchResult) -> None:
    into.stored += one.stored
    into.duplicates += one.duplicates
    into.statuses += one.statuses
    into.gaps_opened += one.gaps_opened
    into.gaps_filled += one.gaps_filled
    into.seq_unexpected += one.seq_unexpected
    into.dead_letters.update(one.dead_letters)
    into.ignored.update(one.ignored)


def _write(conn: psycopg.Connection[tuple[Any, ...]], items: Sequence[Classified]) -> BatchResult:
    result = BatchResult()
    events: dict[tuple[str, str], EventRow] = {}
    statuses: dict[str, StatusRow] = {}
    dead: list[DeadLetter] = []
    for item in items:
        if isinstance(item, EventRow):
            key = (item.source, item.id)
            if key in events:
                result.duplicates += 1
            else:
                events[key] = item
        elif isinstance(item, StatusRow):
            statuses[item.gateway] = item  # the last one received wins
            result.statuses += 1
        elif isinstance(item, DeadLetter):
            dead.append(item)
            result.dead_letters[item.code] += 1
        elif isinstance(item, Ignored):
            result.ignored[item.channel] += 1

    if events:
        # Key order, so two consumers inserting the same keys (an alert's two copies) lock them in
        # the same order and cannot deadlock.
        rows = [events[k] for k in sorted(events)]
        cur = conn.execute(
            _INSERT_EVENTS,
            (
                [r.source for r in rows],
                [r.id for r in rows],
                [r.gateway for r in rows],
                [r.seq for r in rows],
                [r.type for r in rows],
                [r.time for r in rows],
                [r.subject for r in rows],
                [r.severity for r in rows],
                [r.topic for r in rows],
                [orjson.dumps(r.data).decode() for r in rows],
            ),
        )
        inserted = {(str(s), str(i)) for s, i in cur.fetchall()}
        result.stored = len(inserted)
        result.duplicates += len(rows) - len(inserted)
        _track_seq(conn, [events[k] for k in sorted(inserted)], result)

    for gateway in sorted(statuses):
        s = statuses[gateway]
        st = s.status
        conn.execute(
            _UPSERT_STATUS,
            (
                s.gateway,
                s.site,
                s.name,
                st["state"],
                st["reason"],
                st["version"],
                st.get("last_seq"),
                orjson.dumps(st["backlog"]).decode() if "backlog" in st else None,
                st.get("roster_version"),
                orjson.dumps(st).decode(),
                s.reported_at,
            ),
        )
    if dead:
        with conn.cursor() as cur:
            cur.executemany(_INSERT_DEAD, [(d.topic, d.code, d.reason, d.payload) for d in dead])
    return result


def _track_seq(conn: psycopg.Connection[tuple[Any, ...]], new: list[EventRow], result: BatchResult) -> None:
    if not new:
        return
    by_gateway: dict[str, list[EventRow]] = collections.defaultdict(list)
    for row in new:
        by_gateway[row.gateway].append(row)
    names = sorted(by_gateway)
    high = {str(g): int(m) for g, m in conn.execute(_LOCK_GATEWAYS, (names,)).fetchall()}

    gap_rows: list[tuple[str, int, int]] = []
    late: list[tuple[str, int]] = []
    updates: list[tuple[str, int, int, datetime]] = []
    for name in names:
        rows = by_gateway[name]
        top = high[name]
        for seq in sorted(r.seq for r in rows):
            if seq > top:
                if seq > top + 1:
                    gap_rows.append((name, top + 1, seq - 1))
                top = seq
            else:
                late.append((name, seq))
        updates.append((name, top, len(rows), max(r.time for r in rows)))

    conn.execute(
        _UPDATE_GATEWAYS,
        ([u[0] for u in updates], [u[1] for u in updates], [u[2] for u in updates], [u[3] for u in updates]),
    )
    if gap_rows:
        conn.execute(
            _INSERT_GAPS, ([g[0] for g in gap_rows], [g[1] for g in gap_rows], [g[2] for g in gap_rows])
        )
        result.gaps_opened += len(gap_rows)
    if late:
        hits = conn.execute(_FILL_GAPS, ([x[0] for x in late], [x[1] for x in late])).fetchall()
        matched = sum(int(n) for n, _ in hits)
        result.gaps_filled += sum(1 for _, filled in hits if filled)
        # A seq at or below the high-water mark that fills no gap: the gateway reused a seq (its
        # outbox was wiped, say). Stored all the same; counted so someone looks.
        result.seq_unexpected += len(late) - matched


__all__ = ["BatchResult", "IngestStats", "write_batch"]
