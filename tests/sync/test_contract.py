"""The event contract: envelope, per-type schemas, and the AsyncAPI document that names them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from sync.contract import (
    ASYNCAPI_PATH,
    SCHEMA_DIR,
    SchemaViolation,
    event_schema_path,
    validate,
    validate_event,
)
from sync.envelope import EnvelopeError, Event, format_time, make_source
from sync.event_types import EVENT_TYPES, Severity
from sync.topics import Topics


def test_every_registered_type_has_a_schema_and_every_schema_a_type() -> None:
    files = {p.name.removesuffix(".json") for p in (SCHEMA_DIR / "events").glob("*.json")}
    assert files == set(EVENT_TYPES)
    for name in EVENT_TYPES:
        Draft202012Validator.check_schema(json.loads(event_schema_path(name).read_text()))


def test_envelope_is_cloudevents_structured_json() -> None:
    at = datetime(2026, 11, 29, 13, 2, 26, 123456, tzinfo=UTC)
    ev = Event(
        "edu.campus.device.heartbeat.v1",
        make_source("s1", "gw1", "r1"),
        {"device": "r1", "kind": "sim", "uptime_s": 1.5, "counter": 3},
        time=at,
    )
    obj = ev.to_dict(seq=7)
    assert obj["specversion"] == "1.0"
    assert obj["time"] == "2026-11-29T13:02:26.123Z"
    assert obj["source"] == "campus/s1/gw1/r1"
    assert obj["seq"] == 7 and len(obj["id"]) == 26
    assert "severity" not in obj and "subject" not in obj
    validate_event(obj)


def test_time_is_converted_to_utc() -> None:
    at = datetime(2026, 11, 29, 21, 0, 0, tzinfo=timezone(timedelta(hours=8)))
    assert format_time(at) == "2026-11-29T13:00:00.000Z"
    with pytest.raises(EnvelopeError):
        format_time(datetime(2026, 1, 1))


def test_alert_needs_severity_and_others_refuse_it() -> None:
    with pytest.raises(EnvelopeError, match="needs a severity"):
        Event("edu.campus.security.test_alert.v1", "campus/a/b/c", {"device": "c", "reason": "r"})
    with pytest.raises(EnvelopeError, match="not an alert"):
        Event("edu.campus.device.heartbeat.v1", "campus/a/b/c", {}, severity=Severity.INFO)
    with pytest.raises(EnvelopeError, match="unknown event type"):
        Event("edu.campus.nothing.v1", "campus/a/b/c", {})
    with pytest.raises(EnvelopeError):
        make_source("site", "gw/1", "dev")


def test_schema_rejects_bad_payloads_with_a_path() -> None:
    ev = Event(
        "edu.campus.device.heartbeat.v1",
        "campus/a/b/c",
        {"device": "c", "kind": "sim", "uptime_s": 1, "counter": 1},
    )
    good = ev.to_dict(1)
    validate_event(good)
    bad = dict(good, data={"device": "c", "kind": "sim", "uptime_s": -1, "counter": 1})
    with pytest.raises(SchemaViolation) as info:
        validate_event(bad)
    assert info.value.path == "data/uptime_s"
    with pytest.raises(SchemaViolation):
        validate_event(dict(good, seq=0))
    with pytest.raises(SchemaViolation):
        validate_event(dict(good, id="not-a-ulid"))
    with pytest.raises(SchemaViolation):
        validate_event(dict(good, type="edu.campus.unknown.v1"))


def test_alert_topics_come_first() -> None:
    topics = Topics("campus/v1", "s", "g")
    assert topics.for_event("edu.campus.security.test_alert.v1", "critical") == [
        "campus/v1/s/g/alerts/critical",
        "campus/v1/s/g/events/security",
    ]
    assert topics.for_event("edu.campus.device.online.v1", None) == ["campus/v1/s/g/events/device"]


def _resolve(doc: dict, ref: str) -> object:
    node: object = doc
    for part in ref.removeprefix("#/").split("/"):
        assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def test_asyncapi_document_parses_and_uses_the_validated_schemas() -> None:
    doc = yaml.safe_load(ASYNCAPI_PATH.read_text())
    assert doc["asyncapi"].startswith("3.")
    messages = doc["components"]["messages"]
    # Every internal reference resolves.
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node and str(node["$ref"]).startswith("#/"):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        _resolve(doc, ref)
    # Each event type is a message whose payload is exactly the schema file validate_event uses.
    by_name = {m["name"]: m for m in messages.values()}
    for name in EVENT_TYPES:
        payload_ref = by_name[name]["payload"]["$ref"]
        assert (ASYNCAPI_PATH.parent / payload_ref).resolve() == event_schema_path(name).resolve()
    # Every channel address uses the default prefix and declares its parameters.
    for channel in doc["channels"].values():
        address = channel["address"]
        assert address.startswith("campus/v1/")
        params = {p.strip("{}") for p in address.split("/") if p.startswith("{")}
        assert params == set(channel.get("parameters", {}))
    # Each alert type is listed on the alerts channel, each event on the events channel.
    alert_names = {_resolve(doc, m["$ref"])["name"] for m in doc["channels"]["alerts"]["messages"].values()}  # type: ignore[index]
    assert alert_names == {n for n, t in EVENT_TYPES.items() if t.alert}
    event_names = {_resolve(doc, m["$ref"])["name"] for m in doc["channels"]["events"]["messages"].values()}  # type: ignore[index]
    assert event_names == set(EVENT_TYPES)
    status_ref = messages["status"]["payload"]["$ref"]
    assert (ASYNCAPI_PATH.parent / status_ref).resolve() == (SCHEMA_DIR / "status.json").resolve()
    assert Path(SCHEMA_DIR / "status.json").is_file()


def test_generated_contract_files_are_up_to_date() -> None:
    from sync.asyncapi import render_document, render_roster_schema
    from sync.messages import ROSTER_SCHEMAS

    assert ASYNCAPI_PATH.read_text() == render_document(), "run: python -m sync.asyncapi --write"
    for kind in ROSTER_SCHEMAS:
        path = SCHEMA_DIR / "roster" / f"{kind}.json"
        assert path.read_text() == render_roster_schema(kind), "run: python -m sync.asyncapi --write"
        Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_every_asyncapi_example_validates_against_its_payload_schema() -> None:
    from sync.examples import missing_examples

    assert missing_examples() == [], "every event type needs an example in sync/examples.py"
    doc = yaml.safe_load(ASYNCAPI_PATH.read_text())
    checked = 0
    for key, message in doc["components"]["messages"].items():
        ref = message["payload"].get("$ref")
        if ref is None:
            continue  # the JPEG snapshot has no JSON payload
        examples = message.get("examples", [])
        assert examples, f"message {key} has no example"
        for example in examples:
            validate(example["payload"], (ASYNCAPI_PATH.parent / ref).resolve())
            if message["name"].startswith("edu.campus."):
                validate_event(example["payload"])
            checked += 1
    assert checked >= len(EVENT_TYPES) + 6
