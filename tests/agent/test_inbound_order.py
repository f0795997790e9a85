"""Master data and commands from the centre, through a real Mosquitto to the real gateway:
roster deltas applied strictly in order (also across a reconnect), and replies made while the
uplink is down delivered after it comes back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import CommandSettings
from sync.contract import validate_event
from tests.commands.harness import PREFIX, Centre, ed25519_entry, running_agent, wait_subscribed
from tests.mqtt_helpers import Collector
from tests.support.agent_harness import running_gate
from tests.support.broker import MosquittoBroker
from tests.support.proxy import FaultProxy
from tests.support.roster_signing import signed, trust_roster_keys
from tests.support.wait import until

SITE = "gate-site"
DELTAS = 200


def delta(version: int) -> dict[str, Any]:
    """Delta ``version - 1 → version``: one new person with a card, the way a term-start import
    arrives (thousands of these back to back)."""
    pid = f"D{version:05d}"
    return {
        "kind": "delta",
        "from_version": version - 1,
        "version": version,
        "upsert": {
            "persons": [
                {"id": pid, "name": f"New {version}", "role": "student", "access_groups": ["students"]}
            ],
            "credentials": [{"credential": f"{0x7000000000 + version:010X}", "person_id": pid}],
        },
    }


class CentrePublisher:
    """The centre's master-data publisher: QoS 1, back to back, without waiting between messages."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def burst(self, versions: range) -> None:
        topic = f"campus/v1/{SITE}/roster/delta"
        infos = [
            self.client.publish(topic, signed(topic, json.dumps(delta(v)).encode()), qos=1) for v in versions
        ]
        for info in infos:
            info.wait_for_publish(20)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(autouse=True)
def roster_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway trusts the centre's test key for roster messages."""
    trust_roster_keys(monkeypatch)


def roster_replies(collector: Collector) -> list[dict[str, Any]]:
    return [m.json() for m in collector.snapshot("/roster/reply")]


def run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_200_deltas_back_to_back_are_all_applied_in_order(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/+/roster/reply")
    centre = CentrePublisher(mosquitto.port)

    async def scenario() -> None:
        async with running_gate(tmp_path, mosquitto.url) as gate:
            agent = gate.agent
            await asyncio.to_thread(centre.burst, range(2, DELTAS + 2))
            await until(lambda: agent.roster is not None and agent.roster.version == DELTAS + 1, "all deltas")
            await until(lambda: len(roster_replies(collector)) == DELTAS, "a reply to each")
            assert {k: v for k, v in agent.counters.snapshot().items() if k.startswith("roster_")} == {}
            # The last person added can pass: the gate decides from the final roster.
            gate.reader.present(f"{0x7000000000 + DELTAS + 1:010X}")
            await until(lambda: agent.gates["gate-1"].stats.granted == 1, "the last new card granted")
            # `edge-agent status` reads the status file: it reports the final version.
            status_file = tmp_path / "data" / "status.json"
            await until(lambda: json.loads(status_file.read_text())["roster_version"] == DELTAS + 1, "status")

    try:
        run(scenario)
    finally:
        centre.close()
        collector.close()
    replies = roster_replies(collector)
    assert [r["result"] for r in replies] == ["applied"] * DELTAS
    assert [r["version"] for r in replies] == list(range(2, DELTAS + 2))


def test_deltas_stay_in_order_across_a_reconnect_of_the_link(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The link loses its connection in the middle of a burst; the broker keeps the gateway's
    session, so what it had not delivered yet arrives after the reconnect, after what was already
    queued at the gateway. All apply in order, none refused."""
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/+/roster/reply")
    centre = CentrePublisher(mosquitto.port)

    async def scenario() -> None:
        async with FaultProxy(mosquitto.port) as proxy, running_gate(tmp_path, proxy.url) as gate:
            agent = gate.agent
            roster_sub = next(s for s in agent.link.subscriptions if "/roster/" in s.topic_filter)
            connects = agent.link.stats.connects
            # The whole burst goes out; the connection drops under the gateway once the first
            # deltas are applied, while the broker still holds most of the burst for it.
            burst = asyncio.create_task(asyncio.to_thread(centre.burst, range(2, DELTAS + 2)))
            await until(lambda: roster_sub.handled >= 10, "the first deltas handled")
            proxy.reset()
            dropped_at = agent.roster.version if agent.roster else 0
            await burst
            await until(lambda: agent.link.stats.connects > connects, "the link reconnected")
            await until(lambda: agent.link.connected.is_set(), "the link serving again")
            await until(lambda: agent.roster is not None and agent.roster.version == DELTAS + 1, "all deltas")
            # A reply in flight when the connection dropped is sent again (at least once).
            expected = set(range(2, DELTAS + 2))
            await until(
                lambda: (
                    {r["version"] for r in roster_replies(collector) if r["result"] == "applied"} == expected
                ),
                "an 'applied' reply to each",
            )
            # None refused but as a replay. A delta the broker had sent but not seen acknowledged
            # when the connection dropped comes again after the reconnect: the same signed bytes,
            # whose nonce was taken, so it is refused as replayed and changes nothing.
            refusals = {k: v for k, v in agent.counters.snapshot().items() if k.startswith("roster_")}
            assert set(refusals) <= {"roster_replayed"}, refusals
            assert dropped_at < DELTAS, "the link dropped in the middle of the burst"

    try:
        run(scenario)
    finally:
        centre.close()
        collector.close()
    replies = roster_replies(collector)
    applied = [r["version"] for r in replies if r["result"] == "applied"]
    # Replies are at least once (one in flight at the drop is sent again); the roster version
    # reaching DELTAS + 1 with no gap refused is what proves each delta applied once, in order.
    assert sorted(set(applied)) == list(range(2, DELTAS + 2))
    refused = [r for r in replies if r["result"] != "applied"]
    assert all(r["result"] == "rejected" and r["reason"].startswith("replayed: ") for r in refused), refused


@pytest.fixture
def command_key(monkeypatch: pytest.MonkeyPatch) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("EDGE_AGENT_COMMAND_KEYS", json.dumps({"keys": [ed25519_entry("centre-ed", key)]}))
    return key


def test_a_reply_made_while_the_uplink_is_down_arrives_after_it_is_back(
    tmp_path: Path, mosquitto: MosquittoBroker, command_key: Ed25519PrivateKey
) -> None:
    centre = Centre(mosquitto.port, v5=True, ed25519=command_key, key_id="centre-ed")

    async def scenario() -> None:
        async with (
            FaultProxy(mosquitto.port) as proxy,
            running_agent(tmp_path, proxy.url, CommandSettings(enabled=True)) as gw,
        ):
            agent = gw.agent
            await wait_subscribed(centre)
            # wait_subscribed's own probe was answered; its reply must be off the queue first.
            await until(lambda: agent.link.replies_waiting == 0, "the probe's reply acknowledged")
            proxy.blackhole()
            proxy.reset()  # the uplink goes dark: connections cut, new ones go nowhere
            await until(lambda: not agent.link.connected.is_set(), "the link down")
            # The command arrived just before the link went: it is handled, its reply waits.
            body = centre.make("diagnostics")
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = centre.response_topic
            props.CorrelationData = b"while-offline"
            assert agent.commands is not None
            await agent.commands.handle(f"{PREFIX}/cmd/diagnostics", json.dumps(body).encode(), props)
            assert agent.link.replies_waiting == 1
            proxy.pass_through()
            reply = await asyncio.to_thread(centre.wait, lambda r: r.correlation == b"while-offline", 30)
            assert reply.body["id"] == body["id"] and reply.body["result"] == "ok"
            await until(lambda: agent.link.replies_waiting == 0, "the reply acknowledged by the broker")

    try:
        run(scenario)
    finally:
        centre.close()


def test_a_reply_that_cannot_wait_longer_expires_and_the_expiry_is_audited(
    tmp_path: Path, mosquitto: MosquittoBroker, command_key: Ed25519PrivateKey
) -> None:
    collector = Collector(mosquitto.url, f"{PREFIX}/events/gateway")

    def expiry_audits() -> list[dict[str, Any]]:
        return [
            e
            for e in (m.json() for m in collector.snapshot())
            if e["type"] == "edu.campus.gateway.audit.v1" and e["data"]["action"] == "reply"
        ]

    async def scenario() -> None:
        async with (
            FaultProxy(mosquitto.port) as proxy,
            running_agent(tmp_path, proxy.url, CommandSettings(enabled=True)) as gw,
        ):
            agent = gw.agent
            proxy.blackhole()
            proxy.reset()
            await until(lambda: not agent.link.connected.is_set(), "the link down")
            agent.link.send_reply("centre/replies/late", b'{"result": "ok"}', ttl_s=0.2)
            await until(lambda: agent.counters.get("reply_expired_ttl") == 1, "the reply expired")
            assert agent.link.replies_waiting == 0
            proxy.pass_through()
            # The audit is an event: kept in the outbox and delivered once the link is back.
            await until(lambda: len(expiry_audits()) == 1, "the expiry audited at the centre")

    try:
        run(scenario)
    finally:
        collector.close()
    (audit,) = expiry_audits()
    validate_event(audit)
    assert audit["data"]["target"] == "centre/replies/late" and audit["data"]["result"] == "failed"
