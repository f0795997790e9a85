"""Signed master data: roster snapshots and deltas carry the centre's signature, and a gateway takes
nothing else (docs/INTEGRATORS.md, "Signed master data").

The wire format and its refusals are checked without a broker (``sync.signing``). The end-to-end
cases run the real agent in this process (tests/support/agent_harness.py), seeded with roster
version 1, against a real Mosquitto, with the centre a paho client: forged, replayed and expired
deltas and an unsigned snapshot are each refused with their reason, audited, and leave the roster
exactly as it was; a signed snapshot in parts is applied; the keys credential is re-read on SIGHUP,
so keys rotate without a gap.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.roster import RosterIndex
from edge_agent.roster_sync import RosterSignatureError, RosterSignatures
from sync import MAX_SIGNATURE_BYTES, parse_trusted_keys
from sync.contract import SCHEMA_DIR, validate, validate_event
from sync.messages.roster import RosterSnapshot, split_snapshot
from sync.signing import SignatureRefused, open_roster_message, roster_signing_input, sign_roster_message
from tests.agent.roster_data import snapshot
from tests.support.agent_harness import RunningGate, running_gate
from tests.support.broker import MosquittoBroker
from tests.support.mqtt import Collector
from tests.support.proxy import FaultProxy
from tests.support.roster_signing import (
    OTHER_KEY,
    OTHER_KEY_ID,
    ROSTER_KEYS_CREDENTIAL,
    TEST_KEY,
    TEST_KEY_ID,
    key_entry,
    roster_keys_json,
    signed,
    trust_roster_keys,
    write_roster_keys,
)
from tests.support.wait import until

TOPIC = "campus/v1/site-a/roster/delta"
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
DAY = 86400.0


def body_of(version: int = 2, card: str = "00C0FFEE01") -> bytes:
    """Delta ``version - 1 -> version`` adding one staff member with ``card``."""
    pid = f"N{version}"
    return json.dumps(
        {
            "kind": "delta",
            "from_version": version - 1,
            "version": version,
            "upsert": {
                "persons": [{"id": pid, "name": pid, "role": "staff", "access_groups": ["staff"]}],
                "credentials": [{"credential": card, "person_id": pid}],
            },
        }
    ).encode()


def opened(payload: bytes, *, topic: str = TOPIC, now: datetime = NOW, max_age_s: float = 30 * DAY) -> bytes:
    keys = parse_trusted_keys(roster_keys_json())
    body, _ = open_roster_message(topic, payload, keys, now=now, max_age_s=max_age_s, clock_skew_s=300)
    return body


def refusal(payload: bytes, **kw: Any) -> str:
    with pytest.raises(SignatureRefused) as caught:
        opened(payload, **kw)
    return caught.value.code


# -- the wire format --------------------------------------------------------------------------------


def test_a_signed_message_is_the_body_with_the_signature_first_and_opens_to_the_same_bytes() -> None:
    # Any serialiser: spaces and key order are the centre's, the gateway hashes the bytes as sent.
    body = b'{ "version": 2, "kind": "delta", "from_version": 1 }'
    payload = signed(TOPIC, body, now=NOW, nonce="n" * 22)
    assert payload.startswith(
        b'{"signature":{"key_id":"centre-roster-test","issued_at":"2026-12-01T08:00:00.000Z"'
    )
    assert payload.endswith(b', "version": 2, "kind": "delta", "from_version": 1 }')
    assert opened(payload) == body
    parsed = json.loads(payload)
    assert list(parsed) == ["signature", "version", "kind", "from_version"]
    assert set(parsed["signature"]) == {"key_id", "issued_at", "expires_at", "nonce", "value"}
    assert len(payload) - len(body) < MAX_SIGNATURE_BYTES
    # The value is Ed25519 over the documented input: context, topic, canonical fields, SHA-256.
    header = parsed["signature"]
    message = (
        b"campus-edge roster v1\n"
        + TOPIC.encode()
        + b"\n"
        + json.dumps(
            {k: header[k] for k in ("key_id", "issued_at", "expires_at", "nonce")},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        + b"\n"
        + hashlib.sha256(body).digest()
    )
    assert message == roster_signing_input(TOPIC, header, hashlib.sha256(body).digest())
    TEST_KEY.public_key().verify(base64.b64decode(header["value"]), message)


def test_each_refusal_has_its_code() -> None:
    body = body_of()
    good = signed(TOPIC, body, now=NOW)
    assert refusal(body) == "unsigned"
    assert refusal(b"") == "unsigned"
    assert refusal(b'{"signature":"not an object",' + body[1:]) == "bad_signature_format"
    assert refusal(b'{"signature":{"key_id":' + body[1:]) == "bad_signature_format"
    assert refusal(good.replace(b'},"kind"', b'} "kind"', 1)) == "bad_signature_format"  # no comma
    assert refusal(good.replace(b'"nonce":"', b'"nonce":"!', 1)) == "bad_signature_format"
    # Far too long to be a signature: refused unread past the bound.
    assert refusal(b'{"signature":{"key_id":"' + b"k" * 1000 + b'"},' + body[1:]) == "bad_signature_format"
    assert refusal(signed(TOPIC, body, key=OTHER_KEY, key_id=OTHER_KEY_ID, now=NOW)) == "unknown_key"
    # A forger who knows the key id but not the key.
    assert refusal(signed(TOPIC, body, key=OTHER_KEY, now=NOW)) == "bad_signature"
    # A card changed in transit, or the message replayed to another site or as the other kind.
    assert refusal(good.replace(b"00C0FFEE01", b"00C0FFEE02")) == "bad_signature"
    assert refusal(good, topic="campus/v1/site-b/roster/delta") == "bad_signature"
    assert refusal(good, topic="campus/v1/site-a/roster/snapshot") == "bad_signature"
    # Times: 5 minutes of clock skew either way.
    hour = timedelta(hours=1)
    assert refusal(good, now=NOW + hour + timedelta(minutes=6)) == "expired"
    assert opened(good, now=NOW + hour + timedelta(minutes=4)) == body
    assert refusal(good, now=NOW - timedelta(minutes=6)) == "not_yet_valid"
    assert opened(good, now=NOW - timedelta(minutes=4)) == body
    month = signed(TOPIC, body, now=NOW, valid_for_s=31 * DAY)
    assert refusal(month) == "validity_too_long"
    assert opened(month, max_age_s=31 * DAY) == body


def test_the_centre_side_refuses_what_it_cannot_sign() -> None:
    for body in (b"{}", b"[1]", b' {"kind": 1}', b"{ }"):
        with pytest.raises(ValueError):
            signed(TOPIC, body)
    with pytest.raises(ValueError, match="exactly one"):
        sign_roster_message(TOPIC, body_of(), key_id="k", valid_for_s=60)
    with pytest.raises(ValueError):
        signed(TOPIC, body_of(), valid_for_s=0)


def test_hmac_keys_sign_roster_messages_too() -> None:
    secret = hashlib.sha256(b"shared roster secret").digest()
    keys = parse_trusted_keys(
        json.dumps(
            {"keys": [{"id": "hm", "algorithm": "hmac-sha256", "secret": base64.b64encode(secret).decode()}]}
        )
    )
    payload = sign_roster_message(TOPIC, body_of(), key_id="hm", hmac_secret=secret, valid_for_s=60, now=NOW)
    body, sig = open_roster_message(TOPIC, payload, keys, now=NOW, max_age_s=60, clock_skew_s=0)
    assert body == body_of() and sig.key_id == "hm"
    wrong = sign_roster_message(
        TOPIC, body_of(), key_id="hm", hmac_secret=secret[::-1], valid_for_s=60, now=NOW
    )
    with pytest.raises(SignatureRefused, match="does not verify"):
        open_roster_message(TOPIC, wrong, keys, now=NOW, max_age_s=60, clock_skew_s=0)


def test_the_documented_signer_without_the_package_produces_what_the_gateway_takes() -> None:
    """The snippet of INTEGRATORS.md 'Signing a roster message without this package', run as printed."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "INTEGRATORS.md").read_text()
    block = doc.split("### Signing a roster message without this package")[1].split("```python\n")[1]
    namespace: dict[str, Any] = {}
    exec(block.split("```")[0], namespace)  # our own documentation, run as printed
    body = json.dumps(snapshot(7), indent=2).encode()  # any serialiser
    topic = "campus/v1/site-a/roster/snapshot"
    payload = namespace["sign_roster"](topic, body, TEST_KEY_ID, TEST_KEY, 14)
    assert opened(payload, topic=topic, now=datetime.now(UTC)) == body
    assert refusal(payload, topic=TOPIC, now=datetime.now(UTC)) == "bad_signature"


def test_the_signature_member_is_in_the_roster_schemas() -> None:
    message = json.loads(signed(TOPIC, body_of()))
    validate(message, SCHEMA_DIR / "roster" / "delta.json")
    snap = json.loads(signed("campus/v1/site-a/roster/snapshot", json.dumps(snapshot(3)).encode()))
    validate(snap, SCHEMA_DIR / "roster" / "snapshot.json")
    assert RosterSnapshot.model_validate(snap).signature is not None


def _signatures(tmp_path: Path, now: Callable[[], datetime], **kw: Any) -> RosterSignatures:
    return RosterSignatures(
        keys_credential=ROSTER_KEYS_CREDENTIAL,
        required=kw.pop("required", True),
        max_age_s=30 * DAY,
        clock_skew_s=300,
        nonce_path=tmp_path / "roster_nonces.json",
        now=now,
        **kw,
    )


def test_nonces_taken_survive_a_restart_until_the_signature_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_roster_keys(monkeypatch)
    clock = [NOW]
    first = _signatures(tmp_path, lambda: clock[0])
    payload = signed(TOPIC, body_of(), now=NOW, valid_for_s=DAY)
    sig = first.verify(TOPIC, payload)
    assert sig is not None
    first.check_fresh(sig, "delta")
    first.remember([sig])
    again = _signatures(tmp_path, lambda: clock[0], nonce_file_expected=True)
    sig = again.verify(TOPIC, payload)
    with pytest.raises(RosterSignatureError, match=r"^replayed: ") as caught:
        again.check_fresh(sig, "delta")
    assert caught.value.key_id == TEST_KEY_ID and caught.value.result == "rejected"
    # After it expires (plus skew) the nonce is forgotten: the signature itself is refused by then.
    clock[0] = NOW + timedelta(seconds=DAY + 301)
    later = _signatures(tmp_path, lambda: clock[0], nonce_file_expected=True)
    assert len(later.nonces) == 0
    with pytest.raises(RosterSignatureError, match=r"^expired: "):
        later.verify(TOPIC, payload)


def test_keys_credential_missing_or_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_AGENT_ROSTER_KEYS", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    missing = _signatures(tmp_path, lambda: NOW)
    assert missing.status() == {
        "required": True,
        "keys": [],
        "refused": 0,
        "keys_error": "credential 'roster_keys' is not set",
    }
    for payload in (body_of(), signed(TOPIC, body_of())):
        with pytest.raises(RosterSignatureError, match=r"^roster_keys_missing: ") as caught:
            missing.verify(TOPIC, payload)
        assert caught.value.code == "roster_keys_missing"
    # A key limited to commands is a command key: refused for master data, the keys in use are kept.
    limited = {**key_entry(), "commands": ["open"]}
    trust_roster_keys(monkeypatch, limited)
    assert not missing.reload_keys()
    assert "list it without 'commands'" in missing.keys_error
    trust_roster_keys(monkeypatch)
    assert missing.reload_keys() and missing.status()["keys"] == [TEST_KEY_ID]
    trust_roster_keys(monkeypatch, {"id": "x", "algorithm": "ed25519", "public_key": "AAAA"})
    assert not missing.reload_keys()
    assert list(missing.keys) == [TEST_KEY_ID] and "32 bytes" in missing.keys_error


def test_optional_signatures_take_unsigned_messages_warn_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("EDGE_AGENT_ROSTER_KEYS", raising=False)
    with caplog.at_level(logging.WARNING, logger="edge_agent.roster_sync"):
        off = _signatures(tmp_path, lambda: NOW, required=False)
    assert any("roster_signatures is 'optional'" in r.getMessage() for r in caplog.records)
    assert off.verify(TOPIC, body_of()) is None  # unsigned, taken as it is
    assert off.status()["required"] is False and off.status()["unsigned_taken"] == 1
    # A signed message is still verified, which needs the keys.
    with pytest.raises(RosterSignatureError, match=r"^roster_keys_missing: "):
        off.verify(TOPIC, signed(TOPIC, body_of()))


# -- end to end: a real agent, a real broker ------------------------------------------------------


class Centre:
    """The master-data publisher: a paho client publishing QoS 1 in order."""

    def __init__(self, port: int, site: str) -> None:
        self.base = f"campus/v1/{site}/roster"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def topic(self, kind: str) -> str:
        return f"{self.base}/{kind}"

    def publish(self, kind: str, *payloads: bytes, retain: bool = False) -> None:
        infos = [self.client.publish(self.topic(kind), p, qos=1, retain=retain) for p in payloads]
        for info in infos:
            info.wait_for_publish(20)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Watch:
    """The gateway's roster replies and events, as the centre sees them."""

    def __init__(self, url: str, site: str, gateway: str) -> None:
        self.collector = Collector(url, f"campus/v1/{site}/{gateway}/#")

    def replies(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.collector.snapshot("/roster/reply")]

    def events(self, kind: str) -> list[dict[str, Any]]:
        out = []
        for m in self.collector.snapshot("/events/"):
            event = m.json()
            if event.get("type") == f"edu.campus.{kind}":
                out.append(event)
        return out

    async def reply(self, count: int) -> dict[str, Any]:
        await until(lambda: len(self.replies()) >= count, f"roster reply {count}")
        return self.replies()[count - 1]

    def refusals(self) -> list[dict[str, Any]]:
        """The audit events of roster messages refused (other audits, deletions, are not ours)."""
        return [
            a
            for a in self.events("gateway.audit.v1")
            if a["data"]["action"].startswith("roster_") and a["data"]["result"] == "refused"
        ]

    def close(self) -> None:
        self.collector.close()


async def roster_subscribed(gate: RunningGate) -> None:
    await until(
        lambda: any(
            "/roster/" in s.topic_filter and s.state == "subscribed" for s in gate.agent.link.subscriptions
        ),
        "the roster subscription",
    )


def index_of(gate: RunningGate) -> RosterIndex:
    assert gate.agent.roster is not None
    return gate.agent.roster.index


def run_scenario(
    tmp_path: Path,
    broker: MosquittoBroker,
    site: str,
    body: Callable[..., Awaitable[None]],
    *,
    proxied: bool = False,
    **config: Any,
) -> Watch:
    """Run ``body(gate, centre, watch, proxy)``; ``proxied``: the gateway reaches the broker through
    a :class:`FaultProxy` (``proxy``, else None), so the test can cut its connection."""
    watch = Watch(broker.url, site, "gw-signed")
    centre = Centre(broker.port, site)

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            proxy = await stack.enter_async_context(FaultProxy(broker.port)) if proxied else None
            url = proxy.url if proxy is not None else broker.url
            gate = await stack.enter_async_context(
                running_gate(tmp_path, url, site=site, gateway="gw-signed", **config)
            )
            await roster_subscribed(gate)
            await body(gate, centre, watch, proxy)

    try:
        asyncio.run(asyncio.wait_for(run(), 120))
    finally:
        centre.close()
        watch.close()
    for reply in watch.replies():
        validate(reply, SCHEMA_DIR / "roster" / "reply.json")
    return watch


def test_forged_replayed_expired_and_unsigned_roster_messages_are_refused_and_audited(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_roster_keys(monkeypatch)
    site = "signed-refusals"
    outcome: dict[str, Any] = {}

    async def body(gate: RunningGate, centre: Centre, watch: Watch, proxy: FaultProxy | None) -> None:
        delta = centre.topic("delta")
        good = signed(delta, body_of(2, "00C0FFEE02"))
        centre.publish("delta", good)
        assert (await watch.reply(1))["result"] == "applied"
        held = index_of(gate)
        assert held.version == 2 and "N2" in held.persons
        now = datetime.now(UTC)
        attempts = {
            # The next delta, as a forger would send it: under the centre's key id, or another.
            "bad_signature": signed(delta, body_of(3, "00BADBAD03"), key=OTHER_KEY),
            "unknown_key": signed(delta, body_of(3, "00BADBAD03"), key=OTHER_KEY, key_id=OTHER_KEY_ID),
            # The genuine delta 1->2 again: the same bytes, the same nonce.
            "replayed": good,
            # A genuine next delta the centre signed long ago, captured and held back.
            "expired": signed(
                delta, body_of(3, "00BADBAD03"), now=now - timedelta(hours=3), valid_for_s=3600
            ),
            "unsigned": json.dumps(snapshot(5)).encode(),
        }
        for n, (code, payload) in enumerate(attempts.items(), start=2):
            centre.publish("snapshot" if code == "unsigned" else "delta", payload)
            reply = await watch.reply(n)
            assert reply["result"] == "rejected" and reply["reason"].startswith(f"{code}: "), (code, reply)
            assert reply["version"] == 2
        # Exactly as it was: the same index object, nobody added, the forged card still unknown.
        assert index_of(gate) is held
        before = gate.agent.gates["gate-1"].stats.denied
        gate.reader.present("00BADBAD03")
        await until(lambda: gate.agent.gates["gate-1"].stats.denied == before + 1, "the forged card denied")
        outcome["counters"] = {
            k: v for k, v in gate.agent.counters.snapshot().items() if k.startswith("roster_")
        }
        outcome["status"] = gate.agent.status()["roster_signatures"]
        await until(lambda: len(watch.refusals()) >= 5, "an audit event per refusal")
        await until(lambda: len(watch.events("gateway.roster_rejected.v1")) >= 5, "the rejected events")

    watch = run_scenario(tmp_path, mosquitto, site, body)
    codes = ["bad_signature", "unknown_key", "replayed", "expired", "unsigned"]
    assert outcome["counters"] == {f"roster_{code}": 1 for code in codes}
    assert outcome["status"] == {"required": True, "keys": [TEST_KEY_ID], "refused": 5}
    audits = watch.refusals()
    for event in audits:
        validate_event(event)
    assert [a["data"]["reason"].split(":")[0] for a in audits] == codes
    assert all(a["data"]["result"] == "refused" and a["data"]["via"] == "mqtt" for a in audits)
    # Who signed is known once the signature verified: the replay and the expired one.
    assert [a["data"]["actor"] for a in audits] == ["unknown", "unknown", TEST_KEY_ID, TEST_KEY_ID, "unknown"]
    assert [a["data"]["action"] for a in audits] == ["roster_delta"] * 4 + ["roster_snapshot"]


def test_a_signed_snapshot_in_parts_is_applied_and_its_retained_copy_is_only_ignored(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_roster_keys(monkeypatch)
    site = "signed-parts"
    outcome: dict[str, Any] = {}

    async def body(gate: RunningGate, centre: Centre, watch: Watch, proxy: FaultProxy | None) -> None:
        topic = centre.topic("snapshot")
        whole = RosterSnapshot.model_validate(snapshot(3, extra_persons=150))
        parts = split_snapshot(whole, part_id="v3", max_part_bytes=8 * 1024 - MAX_SIGNATURE_BYTES)
        signed_parts = [signed(topic, p) for p in parts]
        assert len(signed_parts) > 3 and max(map(len, signed_parts)) <= 8 * 1024
        # One part forged in the middle: refused on its own, the genuine parts go on.
        forged = signed(topic, parts[1], key=OTHER_KEY)
        centre.publish("snapshot", signed_parts[0], forged, *signed_parts[1:-1])
        first = await watch.reply(1)
        assert first["result"] == "rejected" and first["reason"].startswith("bad_signature: "), first
        assert index_of(gate).version == 1
        centre.publish("snapshot", signed_parts[-1])
        applied = await watch.reply(2)
        assert applied["result"] == "applied" and applied["version"] == 3, applied
        assert set(index_of(gate).persons) == {p.id for p in whole.persons}
        # The centre keeps its current snapshot retained on the broker (signed in one message).
        centre.publish("snapshot", signed(topic, json.dumps(snapshot(4)).encode()), retain=True)
        assert (await watch.reply(3))["result"] == "applied"
        # The broker hands it over again at every reconnect: the version held, just ignored.
        assert proxy is not None
        connects = gate.agent.link.stats.connects
        proxy.reset()
        await until(lambda: gate.agent.link.stats.connects > connects, "the link reconnected")
        # A reply in flight when the connection went is sent again after it (at least once): the
        # retained copy's answer is the next one that is not that "applied" again.
        await until(
            lambda: any(r["result"] != "applied" for r in watch.replies()[3:]), "the retained copy answered"
        )
        later = watch.replies()[3:]
        again = next(r for r in later if r["result"] != "applied")
        assert again["result"] == "ignored" and again["version"] == 4, later
        assert all(r["version"] == 4 for r in later), later
        outcome["counters"] = {
            k: v for k, v in gate.agent.counters.snapshot().items() if k.startswith("roster_")
        }

    watch = run_scenario(tmp_path, mosquitto, site, body, proxied=True)
    assert outcome["counters"] == {"roster_bad_signature": 1, "roster_stale_snapshot": 1}, outcome
    # Only the forgery is audited; the redelivered snapshot raises no alarm.
    assert [a["data"]["reason"].split(":")[0] for a in watch.refusals()] == ["bad_signature"]


def test_keys_rotate_without_a_gap(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credential in a credentials directory updated in place (a container's mounted secret;
    under systemd the copy is fixed while the agent runs and a restart reads it), re-read on
    SIGHUP: a gateway without it refuses everything; then it trusts the old key; old and new
    during the overlap; the new only."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.delenv("EDGE_AGENT_ROSTER_KEYS", raising=False)
    site = "signed-rotation"
    seen: list[dict[str, Any]] = []

    async def body(gate: RunningGate, centre: Centre, watch: Watch, proxy: FaultProxy | None) -> None:
        delta = centre.topic("delta")
        signatures = gate.agent.roster_signatures
        assert signatures is not None

        async def sighup(*keys: tuple[str, Ed25519PrivateKey]) -> None:
            write_roster_keys(credentials, *(key_entry(key_id, key) for key_id, key in keys))
            os.kill(os.getpid(), signal.SIGHUP)  # what `systemctl reload edge-agent` sends
            await until(lambda: signatures.status()["keys"] == sorted(k for k, _ in keys), "keys reloaded")

        async def send(version: int, key_id: str, key: Ed25519PrivateKey) -> dict[str, Any]:
            centre.publish(
                "delta", signed(delta, body_of(version, f"00AB{version:06d}"), key=key, key_id=key_id)
            )
            reply = await watch.reply(len(seen) + 1)
            seen.append(reply)
            return reply

        missing = await send(2, TEST_KEY_ID, TEST_KEY)
        assert missing["result"] == "rejected" and missing["reason"].startswith("roster_keys_missing: ")
        assert "credential 'roster_keys' is not set" in gate.agent.status()["roster_signatures"]["keys_error"]
        await sighup((TEST_KEY_ID, TEST_KEY))
        assert (await send(2, TEST_KEY_ID, TEST_KEY))["result"] == "applied"
        # The new key is added before the centre switches: both are accepted.
        await sighup((TEST_KEY_ID, TEST_KEY), (OTHER_KEY_ID, OTHER_KEY))
        assert (await send(3, TEST_KEY_ID, TEST_KEY))["result"] == "applied"
        assert (await send(4, OTHER_KEY_ID, OTHER_KEY))["result"] == "applied"
        # The old one is removed: refused from then on, the new one goes on.
        await sighup((OTHER_KEY_ID, OTHER_KEY))
        old = await send(5, TEST_KEY_ID, TEST_KEY)
        assert old["result"] == "rejected" and old["reason"].startswith("unknown_key: "), old
        assert (await send(5, OTHER_KEY_ID, OTHER_KEY))["result"] == "applied"
        assert index_of(gate).version == 5
        # A credential that does not parse keeps the keys in use (and says why in the status).
        (credentials / ROSTER_KEYS_CREDENTIAL).write_text("{not json")
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: "keys_error" in signatures.status(), "the bad credential noticed")
        assert signatures.status()["keys"] == [OTHER_KEY_ID]
        assert (await send(6, OTHER_KEY_ID, OTHER_KEY))["result"] == "applied"

    run_scenario(tmp_path, mosquitto, site, body, from_file=True)
    assert [r["result"] for r in seen] == [
        "rejected",
        "applied",
        "applied",
        "applied",
        "rejected",
        "applied",
        "applied",
    ]


def test_the_roster_seed_file_need_not_be_signed(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No keys at all: the admin's unsigned seed (version 1) is applied at the first start, and the
    gate decides from it; roster messages from the broker are refused meanwhile."""
    monkeypatch.delenv("EDGE_AGENT_ROSTER_KEYS", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)

    async def body(gate: RunningGate, centre: Centre, watch: Watch, proxy: FaultProxy | None) -> None:
        assert index_of(gate).version == 1  # running_gate waited for the seed
        before = gate.agent.gates["gate-1"].stats.granted
        gate.reader.present("0012AB34CD")  # S1, in the seed
        await until(lambda: gate.agent.gates["gate-1"].stats.granted == before + 1, "the seed decides")

    run_scenario(tmp_path, mosquitto, "signed-seed", body)
