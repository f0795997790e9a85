"""A whole gate, end to end: simulated reader and turnstile speaking their bytes over pty pairs,
the real agent (drivers, decisions, outbox, link) in this process, and a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_drivers import load_profile, resolve_profile
from device_drivers._io.sim import PtyEndpoint
from device_drivers.card.sim import CardReaderSimulator
from device_drivers.turnstile.sim import TurnstileSimulator
from edge_agent.config import parse_config
from edge_agent.gateway import Gateway
from sync.contract import SCHEMA_DIR, validate, validate_event
from tests.agent.roster_data import snapshot
from tests.conftest import MosquittoBroker, free_port
from tests.mqtt_helpers import Collector
from tests.support.roster_signing import signed, trust_roster_keys

SITE, GW = "gate-site", "gw-gate"


@dataclass
class Gate:
    agent: Gateway
    reader: CardReaderSimulator
    turnstile: TurnstileSimulator


def gate_config(tmp_path: Path, url: str, reader_url: str, turnstile_url: str, **agent: Any) -> Any:
    seed = tmp_path / "roster.json"
    seed.write_text(json.dumps(snapshot(1)))
    text = f"""
gateway: {{site: {SITE}, id: {GW}, timezone: Asia/Shanghai}}
agent: {{data_dir: {tmp_path / "data"}, roster_seed: {seed}, shutdown_timeout_s: 3,
         telemetry_interval_s: 0.5}}
mqtt: {{url: "{url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5}}
devices:
  - {{kind: card_reader, id: reader-in, profile: em4100_id12, port: "{reader_url}", debounce_s: 0}}
  - {{kind: turnstile, id: turnstile-1, profile: turnstile_stx_xor, port: "{turnstile_url}"}}
gates:
  - id: gate-1
    readers: [{{device: reader-in, direction: entry}}]
    turnstile: turnstile-1
    passage_timeout_s: 1.5
"""
    return parse_config(text)


@asynccontextmanager
async def running_gate(tmp_path: Path, url: str, *, auto_pass: bool = True) -> AsyncIterator[Gate]:
    reader = CardReaderSimulator(load_profile(resolve_profile("em4100_id12")), PtyEndpoint())
    turnstile = TurnstileSimulator(
        load_profile(resolve_profile("turnstile_stx_xor")),
        PtyEndpoint(),
        passage_delay_s=0.1,
        auto_pass=auto_pass,
        passage_window_s=0.5,
    )
    async with reader, turnstile:
        config = gate_config(tmp_path, url, reader.url, turnstile.url)
        agent = Gateway(config, data_dir=tmp_path / "data")
        task = asyncio.create_task(agent.run())
        try:
            await until(
                lambda: "gate-1" in agent.gates and agent.roster is not None and agent.roster.version == 1,
                "agent ready",
            )

            # Both devices: a swipe before the turnstile's first poll answers is granted but cannot open.
            def online(device: str) -> bool:
                return agent.devices.state.get(device, {}).get("online") is True

            await until(lambda: online("reader-in") and online("turnstile-1"), "reader and turnstile online")
            yield Gate(agent, reader, turnstile)
        finally:
            agent.request_stop("test")
            await asyncio.wait_for(task, 20)


async def until(pred: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def events_of(collector: Collector, event_type: str) -> list[dict[str, Any]]:
    return [m.json() for m in collector.snapshot("/events/") if m.json()["type"] == event_type]


async def wait_events(collector: Collector, event_type: str, n: int = 1) -> list[dict[str, Any]]:
    await until(lambda: len(events_of(collector, event_type)) >= n, f"{n} x {event_type}")
    return events_of(collector, event_type)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_swipe_grant_open_passage_and_alerts(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario() -> None:
        async with running_gate(tmp_path, mosquitto.url) as gate:
            gate.reader.present("0012AB34CD")
            await until(lambda: any(c.name == "open" for c in gate.turnstile.commands), "open command")
            assert gate.turnstile.commands[0].direction == "entry"
            granted = (await wait_events(collector, "edu.campus.access.granted.v1"))[0]
            passage = (await wait_events(collector, "edu.campus.access.passage.v1"))[0]
            assert granted["subject"] == "S1" and granted["data"]["person"]["group"] == "7A"
            assert passage["data"]["result"] == "passed" and passage["data"]["grant_id"] == granted["id"]
            # Unknown and blocked cards are denied, and the turnstile is not opened for them.
            opens = len(gate.turnstile.commands)
            gate.reader.present("DEADBEEF00")
            gate.reader.present("0012AB34CF")
            denied = await wait_events(collector, "edu.campus.access.denied.v1", 2)
            assert [d["data"]["reason"] for d in denied] == ["unknown_credential", "blocked"]
            assert len(gate.turnstile.commands) == opens
            # Line noise and a bad checksum between cards: counted, and the next card still works.
            gate.reader.inject(b"\x02garbage\xff\x03")
            gate.reader.present_bad_checksum("0012AB34CE")
            gate.reader.present("0012AB34CE")
            await wait_events(collector, "edu.campus.access.granted.v1", 2)
            counters = gate.agent.devices.drivers["reader-in"].counters
            assert counters.get("bad_checksum", 0) >= 1
            # The turnstile reports alarms: forced, tailgating; a passage nobody was granted.
            gate.turnstile.raise_event("forced", "entry")
            gate.turnstile.raise_event("tailgating", "entry")
            gate.turnstile.raise_event("passage_done", "exit")
            gate.turnstile.raise_event("door_held_open", "entry")
            forced = (await wait_events(collector, "edu.campus.access.forced.v1"))[0]
            assert forced["severity"] == "critical"
            tailgating = await wait_events(collector, "edu.campus.access.tailgating.v1", 2)
            assert {t["data"]["evidence"] for t in tailgating} == {"turnstile_alarm", "passage_without_grant"}
            await until(
                lambda: any(m.topic.endswith("/alerts/critical") for m in collector.snapshot()), "alert"
            )
            held = (await wait_events(collector, "edu.campus.access.door_held_open.v1"))[0]
            assert held["severity"] == "warning" and held["data"]["direction"] == "entry"
            # Periodic telemetry (every 0.5 s here) carries the gate and reader counters.
            await until(
                lambda: any(
                    m.json()["gates"]["gate-1"]["granted"] >= 2 for m in collector.snapshot("/telemetry")
                ),
                "telemetry with the grants",
            )

    run(scenario)
    collector.close()
    for m in collector.snapshot("/events/"):
        validate_event(m.json())
    statuses = [m.json() for m in collector.snapshot("/status")]
    for status in statuses:
        validate(status, SCHEMA_DIR / "status.json")
    telemetry = [m.json() for m in collector.snapshot("/telemetry")]
    assert telemetry, "no telemetry published"
    for t in telemetry:
        validate(t, SCHEMA_DIR / "telemetry.json")
    assert telemetry[-1]["gates"]["gate-1"]["granted"] >= 2
    assert telemetry[-1]["devices"]["reader-in"].get("bad_checksum", 0) >= 1
    assert telemetry[-1]["outbox"]["appended"] >= 8
    online = [s for s in statuses if s["state"] == "online"]
    assert online and online[0]["roster_version"] == 1
    assert set(online[0]["devices"]) >= {"reader-in", "turnstile-1"}


def test_passage_timeout_closes_the_transaction(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario() -> None:
        async with running_gate(tmp_path, mosquitto.url, auto_pass=False) as gate:
            gate.reader.present("0012AB34CD")
            passage = (await wait_events(collector, "edu.campus.access.passage.v1"))[0]
            assert passage["data"]["result"] == "timeout" and passage["subject"] == "S1"
            assert gate.agent.gates["gate-1"].stats.timeouts == 1

    run(scenario)
    collector.close()


def test_broker_down_gate_still_opens_and_events_arrive_later(tmp_path: Path) -> None:
    port = free_port()
    broker = MosquittoBroker(tmp_path)
    broker.port = port

    async def scenario() -> None:
        async with running_gate(tmp_path, f"mqtt://127.0.0.1:{port}") as gate:
            for card in ("0012AB34CD", "0012AB34CE", "DEADBEEF00"):
                gate.reader.present(card)
            await until(
                lambda: sum(c.name == "open" for c in gate.turnstile.commands) == 2, "gate opened offline"
            )
            await until(lambda: gate.agent.gates["gate-1"].stats.passages == 2, "passages offline")
            assert gate.agent.link is not None and not gate.agent.link.connected.is_set()
            assert gate.agent.outbox.pending_total >= 5
            broker.start()
            collector = Collector(broker.url, f"campus/v1/{SITE}/{GW}/#")
            try:
                await until(lambda: gate.agent.outbox.pending_total == 0, "backlog delivered", 30)
            finally:
                collector.close()

    try:
        run(scenario)
    finally:
        broker.stop()
    conn_events = sorted(Path(tmp_path / "data").glob("outbox.db"))
    assert conn_events


def _publish(url_port: int, topic: str, payload: bytes, props: Properties | None = None) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", url_port)
    client.loop_start()
    client.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def test_roster_snapshot_and_deltas_over_mqtt_with_replies(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_roster_keys(monkeypatch)  # the centre signs every message (tests/support/roster_signing.py)
    collector = Collector(mosquitto.url, "#")

    def replies() -> list[dict[str, Any]]:
        return [
            m.json()
            for m in collector.snapshot()
            if m.topic.endswith("/roster/reply") or m.topic == "test/replies"
        ]

    async def scenario() -> None:
        async with running_gate(tmp_path, mosquitto.url) as gate:
            await until(
                lambda: gate.agent.link is not None and gate.agent.link.connected.is_set(), "connected"
            )
            await asyncio.sleep(0.3)  # the roster subscription is in place once connected
            base = f"campus/v1/{SITE}/roster"
            snap = snapshot(5)
            snap["persons"].append(
                {"id": "S7", "name": "Late joiner", "role": "student", "access_groups": ["students"]}
            )
            snap["credentials"].append({"credential": "0000000777", "person_id": "S7"})
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "test/replies"
            props.CorrelationData = b"req-1"
            await asyncio.to_thread(
                _publish,
                mosquitto.port,
                f"{base}/snapshot",
                signed(f"{base}/snapshot", json.dumps(snap).encode()),
                props,
            )
            await until(
                lambda: gate.agent.roster is not None and gate.agent.roster.version == 5, "snapshot applied"
            )
            gate.reader.present("0000000777")
            granted = await wait_events(collector, "edu.campus.access.granted.v1")
            assert granted[0]["subject"] == "S7"
            # A delta that skips a version: nothing changes; the reply asks for a snapshot.
            gap = {
                "kind": "delta",
                "from_version": 7,
                "version": 8,
                "upsert": {"persons": [{"id": "X", "name": "x", "role": "staff"}]},
            }
            await asyncio.to_thread(
                _publish, mosquitto.port, f"{base}/delta", signed(f"{base}/delta", json.dumps(gap).encode())
            )
            # A delta that removes S7 follows the held version and applies.
            leave = {"kind": "delta", "from_version": 5, "version": 6, "delete": {"persons": ["S7"]}}
            await asyncio.to_thread(
                _publish, mosquitto.port, f"{base}/delta", signed(f"{base}/delta", json.dumps(leave).encode())
            )
            # Signed by the centre, yet not a roster message: refused after the signature verified.
            await asyncio.to_thread(
                _publish, mosquitto.port, f"{base}/delta", signed(f"{base}/delta", b'{"kind": not json')
            )
            await until(lambda: len(replies()) >= 4, "four replies")
            assert gate.agent.roster is not None and gate.agent.roster.version == 6
            assert "X" not in gate.agent.roster.index.persons
            gate.reader.present("0000000777")
            denied = await wait_events(collector, "edu.campus.access.denied.v1")
            # A leaver's card is denied as such, never attributed to the departed person's id.
            assert denied[-1]["data"]["reason"] == "person_not_in_roster"
            await wait_events(collector, "edu.campus.gateway.roster_rejected.v1", 2)

    run(scenario)
    collector.close()
    got = replies()
    for reply in got:
        validate(reply, SCHEMA_DIR / "roster" / "reply.json")
    assert [r["result"] for r in got] == ["applied", "resync_needed", "applied", "rejected"]
    assert got[1]["version"] == 5 and got[1]["requested_version"] == 8
    # The MQTT 5 request got its answer on its response topic.
    assert collector.snapshot("test/replies")[0].json()["result"] == "applied"


def test_osdp_reader_secure_channel_grant_gives_green_led_and_opens(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """An OSDP v2 reader (libosdp peripheral, secure channel on) at a gate: the card is decided from the
    roster, the turnstile opens, and the reader shows green (grant) or red (deny)."""
    import osdp

    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    seed = tmp_path / "roster.json"
    roster = snapshot(1)
    roster["credentials"].append({"credential": "4660:123456", "format": "any", "person_id": "T1"})
    seed.write_text(json.dumps(roster))

    async def scenario() -> None:
        turnstile = TurnstileSimulator(
            load_profile(resolve_profile("turnstile_stx_xor")), PtyEndpoint(), passage_delay_s=0.1
        )
        async with turnstile:
            config = parse_config(f"""
gateway: {{site: {SITE}, id: {GW}}}
agent: {{data_dir: {tmp_path / "data"}, roster_seed: {seed}, shutdown_timeout_s: 3}}
mqtt: {{url: "{mosquitto.url}"}}
devices:
  - {{kind: osdp, id: bus-1, simulated: true, readers: [{{id: osdp-in, address: 1}}]}}
  - {{kind: turnstile, id: turnstile-1, profile: turnstile_stx_xor, port: "{turnstile.url}"}}
gates:
  - {{id: gate-1, readers: [{{device: osdp-in}}], turnstile: turnstile-1}}
""")
            agent = Gateway(config, data_dir=tmp_path / "data")
            task = asyncio.create_task(agent.run())
            try:
                await until(
                    lambda: agent.devices.state.get("osdp-in", {}).get("online") is True, "reader online", 30
                )
                pd = agent.devices.drivers["bus-1"].simulator.readers[1]  # type: ignore[union-attr]
                pd.present("4660:123456/37")
                await until(lambda: any(c.name == "open" for c in turnstile.commands), "open command")
                granted = (await wait_events(collector, "edu.campus.access.granted.v1"))[0]
                assert granted["subject"] == "T1" and granted["data"]["credential_format"] == "H10304"
                pd.present("4660:999/37")
                denied = (await wait_events(collector, "edu.campus.access.denied.v1"))[0]
                assert denied["data"]["reason"] == "unknown_credential"

                def leds() -> list[Any]:
                    return [c["on_color"] for c in pd.commands if c["command"] == osdp.Command.LED]

                await until(lambda: len(leds()) >= 2, "LED feedback")
                assert leds()[:2] == [osdp.CommandLEDColor.Green, osdp.CommandLEDColor.Red]
            finally:
                agent.request_stop("test")
                await asyncio.wait_for(task, 30)

    run(scenario)
    collector.close()
