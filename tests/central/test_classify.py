"""Classification of single messages, no I/O: what is stored, ignored or dead-lettered, and why."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from sync.central.classify import DeadLetter, EventRow, Ignored, StatusRow, check_event, classify
from sync.contract import SchemaViolation, validate_event
from tests.central.sim_gateway import attendance, forced, granted

P = "campus/v1"
SITE, GW = "s1", "gw1"
BASE = f"{P}/{SITE}/{GW}"


def test_valid_event_becomes_a_row_with_its_gateway_and_seq() -> None:
    event = granted(SITE, GW, random.Random(1))
    row = classify(f"{BASE}/events/access", event.to_json(7), P)
    assert isinstance(row, EventRow)
    assert (row.source, row.id, row.seq, row.gateway) == (event.source, event.id, 7, f"campus/{SITE}/{GW}")
    assert row.time.tzinfo is not None and not row.via_alert_topic


def test_alert_is_accepted_on_both_of_its_topics() -> None:
    event = forced(SITE, GW, random.Random(2))
    assert event.severity is not None
    on_alerts = classify(f"{BASE}/alerts/{event.severity.value}", event.to_json(3), P)
    on_events = classify(f"{BASE}/events/access", event.to_json(3), P)
    assert isinstance(on_alerts, EventRow) and on_alerts.via_alert_topic
    assert isinstance(on_events, EventRow) and (on_events.source, on_events.id) == (
        on_alerts.source,
        on_alerts.id,
    )


@pytest.mark.parametrize(
    ("topic", "payload", "code"),
    [
        (f"{BASE}/events/access", b"{not json", "bad_json"),
        (f"{BASE}/events/access", b"[1, 2]", "bad_json"),
        (f"{BASE}/events/access", b'{"type": "edu.campus.access.granted.v1"}', "schema_invalid"),
        (f"{BASE}/events/access", b'{"type": "edu.campus.nothing.v1"}', "schema_invalid"),
        (f"{BASE}/whatever/x", b"{}", "unknown_topic"),
        ("elsewhere/v1/a/b/events/access", b"{}", "unknown_topic"),
        (f"{P}/{SITE}", b"{}", "unknown_topic"),
    ],
)
def test_bad_messages_are_dead_letters_with_a_code(topic: str, payload: bytes, code: str) -> None:
    out = classify(topic, payload, P)
    assert isinstance(out, DeadLetter)
    assert out.code == code and out.payload == payload and out.reason


def test_event_that_disagrees_with_its_topic_is_dead_lettered() -> None:
    rng = random.Random(3)
    other_gateway = classify(f"{P}/{SITE}/gw2/events/access", granted(SITE, GW, rng).to_json(1), P)
    wrong_area = classify(f"{BASE}/events/security", granted(SITE, GW, rng).to_json(1), P)
    alert = forced(SITE, GW, rng)
    wrong_severity = classify(f"{BASE}/alerts/info", alert.to_json(1), P)
    not_an_alert = classify(f"{BASE}/alerts/info", attendance(SITE, GW, rng).to_json(1), P)
    for out in (other_gateway, wrong_area, wrong_severity, not_an_alert):
        assert isinstance(out, DeadLetter) and out.code == "topic_mismatch", out


def test_impossible_time_is_dead_lettered_not_raised() -> None:
    obj = orjson.loads(granted(SITE, GW, random.Random(4)).to_json(1))
    obj["time"] = "2026-13-45T10:00:00.000Z"  # matches the schema's pattern, is no date
    out = classify(f"{BASE}/events/access", orjson.dumps(obj), P)
    assert isinstance(out, DeadLetter) and out.code == "schema_invalid"


def test_status_valid_and_invalid() -> None:
    status = {
        "state": "offline",
        "reason": "connection_lost",
        "site": SITE,
        "gateway": GW,
        "version": "1",
        "at": "2026-11-29T10:00:00.000Z",
    }
    ok = classify(f"{BASE}/status", orjson.dumps(status), P)
    assert isinstance(ok, StatusRow) and ok.gateway == f"campus/{SITE}/{GW}"
    online_without_backlog = classify(f"{BASE}/status", orjson.dumps({**status, "state": "online"}), P)
    assert isinstance(online_without_backlog, DeadLetter) and online_without_backlog.code == "schema_invalid"
    elsewhere = classify(f"{P}/{SITE}/gw9/status", orjson.dumps(status), P)
    assert isinstance(elsewhere, DeadLetter) and elsewhere.code == "topic_mismatch"


@pytest.mark.parametrize(
    ("topic", "channel"),
    [
        (f"{BASE}/snapshots/01JDZ0000000000000000000AA", "snapshots"),
        (f"{BASE}/cmd/open_gate", "cmd"),
        (f"{BASE}/cmd/open_gate/reply", "cmd"),
        (f"{P}/{SITE}/roster/snapshot", "roster"),
        (f"{BASE}/roster/reply", "roster"),
    ],
)
def test_known_channels_the_ingest_does_not_store_are_ignored(topic: str, channel: str) -> None:
    out = classify(topic, b"\xff\xd8 jpeg or json", P)
    assert isinstance(out, Ignored) and out.channel == channel


def _mutations(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The event itself and ways to break it: each required field dropped, wrong types, extras."""
    out = [event]
    for key in list(event):
        out.append({k: v for k, v in event.items() if k != key})
    for key in list(event["data"]):
        out.append({**event, "data": {k: v for k, v in event["data"].items() if k != key}})
        out.append({**event, "data": {**event["data"], key: 12345}})
    out.append({**event, "data": {**event["data"], "unexpected": 1}})
    out.append({**event, "seq": 0})
    out.append({**event, "seq": "7"})
    out.append({**event, "id": "not-a-ulid"})
    out.append(
        {**event, "severity": "critical"} if "severity" not in event else {**event, "severity": "loud"}
    )
    out.append({**event, "time": "2026-11-29 10:00:00"})
    out.append({**event, "source": "campus/only-two"})
    return out


@pytest.mark.parametrize("make", [granted, attendance, forced])
def test_fast_validator_agrees_with_the_contract_validator(make: Any) -> None:
    """classify() checks schemas with jsonschema-rs for speed; the contract's validator is
    python-jsonschema. Both must give the same verdict on valid and broken events."""
    event = orjson.loads(make(SITE, GW, random.Random(5)).to_json(1))
    verdicts = []
    for candidate in _mutations(event):
        try:
            validate_event(candidate)
            reference = True
        except SchemaViolation:
            reference = False
        try:
            check_event(candidate)
            fast = True
        except SchemaViolation:
            fast = False
        assert fast == reference, candidate
        verdicts.append(fast)
    assert verdicts[0] and verdicts.count(False) > 10  # the mutations really broke it
