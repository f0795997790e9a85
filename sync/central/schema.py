"""The central database: named, transactional schema migrations for PostgreSQL.

Each migration runs in one transaction together with the row that records it, under an advisory
lock, so consumers starting at the same moment apply it exactly once and a failure leaves nothing
half-done (PostgreSQL DDL is transactional). Append only: never edit or reorder a shipped migration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from sync.central.errors import MigrationError

log = logging.getLogger(__name__)

# Any constant both sides agree on; it only serialises migrators of this schema.
_MIGRATION_LOCK = 0x6365_6E74_7261_6C

_INITIAL = """
CREATE TABLE events (
    source      text        NOT NULL,
    id          text        NOT NULL,
    gateway     text        NOT NULL,
    seq         bigint      NOT NULL,
    type        text        NOT NULL,
    time        timestamptz NOT NULL,
    subject     text,
    severity    text,
    topic       text        NOT NULL,
    data        jsonb       NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, id)
);
COMMENT ON TABLE events IS
    'Every gateway event once: source + id is the CloudEvents identity, so redelivery cannot duplicate.';
COMMENT ON COLUMN events.gateway IS 'campus/{site}/{gateway}: the seq counter''s scope.';
COMMENT ON COLUMN events.topic IS 'Topic of the first copy received (an alert also arrives on alerts/...).';
CREATE INDEX events_gateway_seq ON events (gateway, seq);
CREATE INDEX events_type_time ON events (type, time);
CREATE INDEX events_alerts ON events (time) WHERE severity IS NOT NULL;

CREATE TABLE gateways (
    gateway     text        PRIMARY KEY,
    max_seq     bigint      NOT NULL DEFAULT 0,
    events      bigint      NOT NULL DEFAULT 0,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_event  timestamptz
);
COMMENT ON TABLE gateways IS 'Per-gateway seq high-water mark, for gap detection.';

CREATE TABLE gaps (
    id          bigserial   PRIMARY KEY,
    gateway     text        NOT NULL REFERENCES gateways (gateway),
    from_seq    bigint      NOT NULL,
    to_seq      bigint      NOT NULL,
    missing     bigint      NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    filled_at   timestamptz,
    CHECK (from_seq <= to_seq),
    CHECK (missing BETWEEN 0 AND to_seq - from_seq + 1)
);
COMMENT ON TABLE gaps IS
    'Seq ranges missing when a higher seq arrived; filled_at is set when late events filled all of it.';
CREATE INDEX gaps_open ON gaps (gateway, from_seq, to_seq) WHERE filled_at IS NULL;

CREATE TABLE gateway_status (
    gateway        text        PRIMARY KEY,
    site           text        NOT NULL,
    name           text        NOT NULL,
    state          text        NOT NULL,
    reason         text        NOT NULL,
    version        text        NOT NULL,
    last_seq       bigint,
    backlog        jsonb,
    roster_version bigint,
    status         jsonb       NOT NULL,
    reported_at    timestamptz NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE gateway_status IS
    'The latest retained status per gateway, in arrival order (the Last Will carries its connect time).';

CREATE TABLE dead_letters (
    id          bigserial   PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text        NOT NULL,
    code        text        NOT NULL,
    reason      text        NOT NULL,
    payload     bytea       NOT NULL
);
COMMENT ON TABLE dead_letters IS 'Messages that could not be ingested, with why, and the raw bytes.';
CREATE INDEX dead_letters_code ON dead_letters (code, received_at);

CREATE TABLE alert_acknowledgements (
    source          text        NOT NULL,
    id              text        NOT NULL,
    acknowledged_at timestamptz NOT NULL DEFAULT now(),
    acknowledged_by text        NOT NULL,
    note            text,
    PRIMARY KEY (source, id)
);
COMMENT ON TABLE alert_acknowledgements IS
    'Written by central operators (the alarm centre), not by gateways: the gateway contract has no '
    'acknowledgement event yet. An alert without a row here is open.';
"""

_VIEWS = """
CREATE VIEW attendance_today AS
SELECT
    data #>> '{session,date}'                               AS day,
    coalesce(data #>> '{person,group}', '(no class)')       AS class,
    data #>> '{session,id}'                                 AS session_id,
    max(data #>> '{session,name}')                          AS session_name,
    count(DISTINCT data #>> '{person,id}')                  AS persons,
    count(DISTINCT data #>> '{person,id}') FILTER (WHERE data ->> 'status' = 'present') AS present,
    count(DISTINCT data #>> '{person,id}') FILTER (WHERE data ->> 'status' = 'late')    AS late
FROM events
WHERE type = 'edu.campus.attendance.recorded.v1'
  AND data #>> '{session,date}' = to_char(current_date, 'YYYY-MM-DD')
GROUP BY 1, 2, 3;
COMMENT ON VIEW attendance_today IS
    'Attendance per class (person.group) and timetable session, for the session date equal to '
    'current_date in the database session''s TimeZone: set it to the school''s zone.';

CREATE VIEW open_alerts AS
SELECT e.source, e.id, e.gateway, e.type, e.severity, e.time, e.subject, e.data, e.ingested_at
FROM events e
LEFT JOIN alert_acknowledgements a USING (source, id)
WHERE e.severity IS NOT NULL AND a.id IS NULL;

CREATE VIEW gateways_offline AS
SELECT gateway, site, name, reason, version, reported_at, received_at
FROM gateway_status
WHERE state = 'offline';

CREATE VIEW gateway_backlog AS
SELECT
    s.gateway,
    s.state,
    coalesce((s.backlog #>> '{alert,pending}')::bigint, 0)     AS alert_pending,
    coalesce((s.backlog #>> '{access,pending}')::bigint, 0)    AS access_pending,
    coalesce((s.backlog #>> '{telemetry,pending}')::bigint, 0) AS telemetry_pending,
    (SELECT max((lane.value ->> 'oldest_age_s')::double precision)
       FROM jsonb_each(coalesce(s.backlog, '{}'::jsonb)) AS lane)  AS oldest_age_s,
    s.last_seq                                                  AS reported_last_seq,
    g.max_seq                                                   AS stored_max_seq,
    s.received_at
FROM gateway_status s
LEFT JOIN gateways g USING (gateway);
COMMENT ON VIEW gateway_backlog IS
    'Undelivered events per gateway and lane as of its last status (offline statuses carry no backlog).';

CREATE VIEW open_gaps AS
SELECT g.id, g.gateway, g.from_seq, g.to_seq, g.missing, g.detected_at,
       s.state AS gateway_state,
       coalesce((s.backlog #>> '{alert,pending}')::bigint, 0)
         + coalesce((s.backlog #>> '{access,pending}')::bigint, 0)
         + coalesce((s.backlog #>> '{telemetry,pending}')::bigint, 0) AS gateway_backlog
FROM gaps g
LEFT JOIN gateway_status s USING (gateway)
WHERE g.filled_at IS NULL;
COMMENT ON VIEW open_gaps IS
    'Seq ranges not (yet) received. A gap while the gateway reports a backlog is usually still in '
    'flight (alerts overtake older events); one that stays open with no backlog is loss.';
"""

# Security staff acknowledge at the gateway's console or by command; the gateway reports it as
# security.alert_acknowledged (same gateway, data.alert_id), so such alerts are not open either.
_OPEN_ALERTS_GATEWAY_ACK = """
CREATE OR REPLACE VIEW open_alerts AS
SELECT e.source, e.id, e.gateway, e.type, e.severity, e.time, e.subject, e.data, e.ingested_at
FROM events e
LEFT JOIN alert_acknowledgements a USING (source, id)
WHERE e.severity IS NOT NULL AND a.id IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM events k
    WHERE k.type = 'edu.campus.security.alert_acknowledged.v1'
      AND k.gateway = e.gateway AND k.data ->> 'alert_id' = e.id
  );
"""

# The master-data publisher (sync.central.roster_publish): every version it published per site, whole,
# so the next delta is computed from what the gateways were sent, not from the school's last export.
_ROSTER_VERSIONS = """
CREATE TABLE roster_versions (
    site          text        NOT NULL,
    version       bigint      NOT NULL CHECK (version >= 1),
    content       jsonb       NOT NULL,
    content_sha256 text       NOT NULL,
    changes       jsonb       NOT NULL,
    source        text        NOT NULL,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    PRIMARY KEY (site, version)
);
COMMENT ON TABLE roster_versions IS
    'Roster versions the centre published per site: the whole content (persons, cards, groups), '
    'the changes from the version before, the export it came from, who and when.';
COMMENT ON COLUMN roster_versions.published_at IS
    'When the broker acknowledged the last message of this version; null: stored, not (yet) sent.';
"""

MIGRATIONS: Sequence[tuple[str, str]] = (
    ("0001_events_gateways_gaps_status_dead_letters", _INITIAL),
    ("0002_views", _VIEWS),
    ("0003_open_alerts_acknowledged_at_gateway", _OPEN_ALERTS_GATEWAY_ACK),
    ("0004_roster_versions", _ROSTER_VERSIONS),
)
"""Name and SQL of every migration, in order."""


def apply_migrations(
    conn: psycopg.Connection[Any], migrations: Sequence[tuple[str, str]] = MIGRATIONS
) -> list[str]:
    """Apply, in order, the migrations this database has not recorded; returns the names applied."""
    applied: list[str] = []
    try:
        with conn.transaction():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
    except psycopg.errors.UniqueViolation:
        # Two first-time migrators raced on CREATE TABLE IF NOT EXISTS; the table exists now.
        pass
    for name, sql in migrations:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                done = conn.execute("SELECT 1 FROM schema_migrations WHERE name = %s", (name,)).fetchone()
                if done:
                    continue
                conn.execute(sql.encode())
                conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
        except psycopg.Error as err:
            raise MigrationError(f"migration {name} failed: {err}") from err
        log.info("central migration applied: %s", name)
        applied.append(name)
    return applied


__all__ = ["MIGRATIONS", "apply_migrations"]
