"""The event envelope: CloudEvents 1.0, structured JSON mode (DESIGN.md, event contract).

An :class:`Event` is built by the agent when something happened; the outbox gives it its ``seq``
when it commits it, and only then is it serialised and published. ``source`` + ``id`` identify a
duplicate; ``seq`` is a per-gateway counter that never goes back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from ulid import ULID

from sync.errors import SyncError
from sync.event_types import EVENT_TYPES, EventType, Severity

SPEC_VERSION = "1.0"
_SOURCE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class EnvelopeError(SyncError):
    """An event that does not fit the contract (unknown type, bad source, missing severity)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="bad_envelope")


def make_source(site: str, gateway: str, device: str) -> str:
    """``campus/{site}/{gateway}/{device}``; each part must be a safe topic/path segment."""
    for part in (site, gateway, device):
        if not _SOURCE_PART.match(part):
            raise EnvelopeError(f"source part {part!r} must match {_SOURCE_PART.pattern}")
    return f"campus/{site}/{gateway}/{device}"


def format_time(at: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-29T13:02:26.123Z``."""
    offset = at.utcoffset()
    if offset is None:
        raise EnvelopeError("event time must be timezone-aware")
    if offset:
        at = at.astimezone(UTC)
    # One C call (isoformat) and a slice: this runs once per event on the outbox's hot path.
    return at.isoformat(timespec="milliseconds")[:-6] + "Z"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """An event before the outbox has committed it (so before it has a ``seq``)."""

    type: str
    source: str
    data: dict[str, Any]
    time: datetime = field(default_factory=utc_now)
    subject: str | None = None
    severity: Severity | None = None
    id: str = field(default_factory=lambda: str(ULID()))

    def __post_init__(self) -> None:
        spec = EVENT_TYPES.get(self.type)
        if spec is None:
            raise EnvelopeError(f"unknown event type {self.type!r}; register it in sync/event_types.py")
        if spec.alert and self.severity is None:
            raise EnvelopeError(f"{self.type} is an alert and needs a severity")
        if not spec.alert and self.severity is not None:
            raise EnvelopeError(f"{self.type} is not an alert; severity is only for alerts")

    @property
    def spec(self) -> EventType:
        return EVENT_TYPES[self.type]

    def to_dict(self, seq: int) -> dict[str, Any]:
        """The CloudEvents structured-mode object, with the committed ``seq``."""
        out: dict[str, Any] = {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": format_time(self.time),
            "datacontenttype": "application/json",
            "seq": seq,
            "data": self.data,
        }
        if self.subject is not None:
            out["subject"] = self.subject
        if self.severity is not None:
            out["severity"] = self.severity.value
        return out

    def to_json(self, seq: int) -> bytes:
        return orjson.dumps(self.to_dict(seq))


def parse_event(payload: bytes) -> dict[str, Any]:
    """Decode a published event (consumers and tests); raises :class:`EnvelopeError` on non-JSON."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise EnvelopeError(f"event payload is not JSON: {err}") from err
    if not isinstance(obj, dict):
        raise EnvelopeError("event payload is not a JSON object")
    return obj


__all__ = ["SPEC_VERSION", "EnvelopeError", "Event", "format_time", "make_source", "parse_event", "utc_now"]
