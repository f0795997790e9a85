"""What one MQTT message is, decided without I/O: an event, a status, a message to ignore, or a dead letter.

Every check a consumer should make before trusting a message lives here: the topic names a known
channel, the payload is JSON, it validates against its schema, and it agrees with its topic (the
event's gateway is the topic's gateway, its area the topic's area, an alert's severity the topic's
severity). A message failing any of them becomes a :class:`DeadLetter` with a stable ``code``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from sync.contract import SCHEMA_DIR, SchemaViolation, event_schema_path, validate
from sync.event_types import EVENT_TYPES

try:
    import jsonschema_rs
except ImportError:  # pragma: no cover - the pure-Python contract validator still works, slowly
    jsonschema_rs = None  # type: ignore[assignment]

STATUS_SCHEMA = SCHEMA_DIR / "status.json"

# Channels under {prefix}/{site}/{gw}/ that gateways or the centre publish but the ingest does not
# store: JPEG evidence, commands and their replies, roster replies and telemetry (no schema yet).
_IGNORED_CHANNELS = {"snapshots", "cmd", "roster", "telemetry"}


@dataclass(frozen=True, slots=True)
class EventRow:
    """A valid event, ready to insert."""

    source: str
    id: str
    gateway: str
    seq: int
    type: str
    time: datetime
    subject: str | None
    severity: str | None
    topic: str
    data: dict[str, Any]
    via_alert_topic: bool
    raw: bytes = b""  # the payload as received, for a dead letter should the database refuse the row


@dataclass(frozen=True, slots=True)
class StatusRow:
    """A valid gateway status."""

    topic: str
    gateway: str
    site: str
    name: str
    status: dict[str, Any]
    reported_at: datetime
    raw: bytes = b""  # the payload as received, for a dead letter should the database refuse the row


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that cannot be ingested: the reason, and the raw bytes for a human to look at."""

    topic: str
    code: str
    reason: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message on a known channel the ingest does not store (snapshots, commands, roster)."""

    topic: str
    channel: str


Classified = EventRow | StatusRow | DeadLetter | Ignored


def _retrieve(uri: str) -> Any:
    # The same rule as sync.contract: only files inside the schema directory, never the network.
    path = Path(uri.removeprefix("file://")).resolve()
    if not uri.startswith("file://") or SCHEMA_DIR not in path.parents:
        raise ValueError(f"schema reference {uri!r} is outside the schema directory")
    return json.loads(path.read_text())


@functools.cache
def _fast_validator(schema_path: Path) -> Any:
    contents = json.loads(schema_path.read_text())
    contents.setdefault("$id", schema_path.resolve().as_uri())
    return jsonschema_rs.Draft202012Validator(contents, retriever=_retrieve)


def check_schema(message: Any, schema_path: Path) -> None:
    """Validate against a contract schema; raises :class:`SchemaViolation` like ``sync.contract``.

    The contract's validator (python-jsonschema) costs about 500 µs per event, which alone caps a
    consumer near 2,000 events/s; jsonschema-rs checks the same Draft 2020-12 files in about 1 µs.
    Formats are not asserted by either, as the contract's own validator does not; a test keeps the
    two validators' verdicts equal on valid and broken events.
    """
    if jsonschema_rs is None:
        validate(message, schema_path)
        return
    try:
        _fast_validator(schema_path).validate(message)
    except jsonschema_rs.ValidationError as err:
        where = "/".join(str(p) for p in err.instance_path)
        raise SchemaViolation(f"{schema_path.name}: {err.message} at '{where}'", path=where) from err


@functools.cache
def _event_schema(event_type: str) -> Path | None:
    # Per type, once: building the path and asking the disk cost more than validating the event.
    path = event_schema_path(event_type)
    return path if path.is_file() else None


def check_event(event: dict[str, Any]) -> None:
    """Validate an event against the schema of its ``type`` (see :func:`check_schema`)."""
    event_type = event.get("type")
    if not isinstance(event_type, str):
        raise SchemaViolation("event has no string 'type'", path="type")
    path = _event_schema(event_type)
    if path is None:
        raise SchemaViolation(f"no schema for event type {event_type!r}", path="type")
    check_schema(event, path)


_MAX_SEQ = 2**63 - 1  # PostgreSQL bigint


def _parse_time(value: str) -> datetime | None:
    # The schema pinned the shape to YYYY-MM-DDTHH:MM:SS.mmmZ, but not that month 13 does not exist.
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def classify(topic: str, payload: bytes, prefix: str = "campus/v1") -> Classified:
    """Decide what one message is. Never raises for bad input: that becomes a :class:`DeadLetter`."""
    if not topic.startswith(prefix + "/"):
        return DeadLetter(topic, "unknown_topic", f"topic is outside the prefix {prefix!r}", payload)
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) >= 3 and parts[1] == "roster":
        return Ignored(topic, "roster")  # {site}/roster/{kind}: published by the centre itself
    if len(parts) < 3:
        return DeadLetter(topic, "unknown_topic", "topic has no {site}/{gateway}/{channel}", payload)
    site, name, channel = parts[0], parts[1], parts[2]
    rest = parts[3:]
    if channel in _IGNORED_CHANNELS:
        return Ignored(topic, channel)
    if channel == "status" and not rest:
        return _status(topic, payload, site, name)
    if channel in ("events", "alerts") and len(rest) == 1:
        return _event(topic, payload, site, name, channel, rest[0])
    return DeadLetter(topic, "unknown_topic", f"no known channel {'/'.join(parts[2:])!r}", payload)


def _load(topic: str, payload: bytes) -> dict[str, Any] | DeadLetter:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        return DeadLetter(topic, "bad_json", f"payload is not JSON: {err}", payload)
    if not isinstance(obj, dict):
        return DeadLetter(topic, "bad_json", f"payload is JSON {type(obj).__name__}, not an object", payload)
    return obj


def _status(topic: str, payload: bytes, site: str, name: str) -> StatusRow | DeadLetter:
    obj = _load(topic, payload)
    if isinstance(obj, DeadLetter):
        return obj
    try:
        check_schema(obj, STATUS_SCHEMA)
    except SchemaViolation as err:
        return DeadLetter(topic, "schema_invalid", str(err), payload)
    if obj["site"] != site or obj["gateway"] != name:
        reason = f"status of {obj['site']}/{obj['gateway']} on {site}/{name}'s topic"
        return DeadLetter(topic, "topic_mismatch", reason, payload)
    at = _parse_time(obj["at"])
    if at is None:
        return DeadLetter(topic, "schema_invalid", f"status time {obj['at']!r} is not a real time", payload)
    return StatusRow(topic, f"campus/{site}/{name}", site, name, obj, at, payload)


def _event(
    topic: str, payload: bytes, site: str, name: str, channel: str, leaf: str
) -> EventRow | DeadLetter:
    obj = _load(topic, payload)
    if isinstance(obj, DeadLetter):
        return obj
    try:
        check_event(obj)
    except SchemaViolation as err:
        return DeadLetter(topic, "schema_invalid", str(err), payload)
    source: str = obj["source"]
    gateway = source.rsplit("/", 1)[0]
    if gateway != f"campus/{site}/{name}":
        return DeadLetter(topic, "topic_mismatch", f"event from {source} on {site}/{name}'s topic", payload)
    spec = EVENT_TYPES.get(obj["type"])
    if spec is None:
        # A schema file exists but the registry does not know the type: the contract is inconsistent.
        return DeadLetter(topic, "unknown_type", f"event type {obj['type']} is not registered", payload)
    if channel == "events" and leaf != spec.area:
        reason = f"{obj['type']} on events/{leaf}, not events/{spec.area}"
        return DeadLetter(topic, "topic_mismatch", reason, payload)
    if channel == "alerts" and (not spec.alert or obj.get("severity") != leaf):
        reason = f"{obj['type']} (severity {obj.get('severity')}) on alerts/{leaf}"
        return DeadLetter(topic, "topic_mismatch", reason, payload)
    at = _parse_time(obj["time"])
    if at is None:
        return DeadLetter(topic, "schema_invalid", f"event time {obj['time']!r} is not a real time", payload)
    if obj["seq"] > _MAX_SEQ:
        return DeadLetter(topic, "schema_invalid", f"seq {obj['seq']} does not fit 64 bits", payload)
    return EventRow(
        source=source,
        id=obj["id"],
        gateway=gateway,
        seq=obj["seq"],
        type=obj["type"],
        time=at,
        subject=obj.get("subject"),
        severity=obj.get("severity"),
        topic=topic,
        data=obj["data"],
        via_alert_topic=channel == "alerts",
        raw=payload,
    )


__all__ = [
    "Classified",
    "DeadLetter",
    "EventRow",
    "Ignored",
    "StatusRow",
    "check_event",
    "check_schema",
    "classify",
]
