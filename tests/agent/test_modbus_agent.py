"""Modbus doors and fire alarms end to end: the real agent in this process, a simulated Modbus TCP
I/O module (a pymodbus server on 127.0.0.1, reached through the registry with `simulated: true`),
simulated card readers on pty pairs, and a real Mosquitto. Events are read off the broker and
checked against their schemas; relays are read back from the module."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from edge_agent.config import GatewayConfig, parse_config
from edge_agent.config.references import DEFER_REFERENCES, door_problems
from sync.contract import validate_event
from tests.agent.roster_data import snapshot
from tests.support.agent_harness import Gateway, build_gateway
from tests.support.broker import MosquittoBroker
from tests.support.mqtt import Collector
from tests.support.wait import async_wait_until

SITE, GW = "io-site", "gw-io"
TIMEOUT_S = 20
CARD_S1 = "0012AB34CD"  # S1, a student: may pass gate-1 and room-7a


def config_text(tmp_path: Path, mqtt_url: str) -> str:
    seed = tmp_path / "roster.json"
    seed.write_text(json.dumps(snapshot(1)))
    return f"""
gateway: {{site: {SITE}, id: {GW}, timezone: Asia/Shanghai}}
agent: {{data_dir: {tmp_path / "data"}, roster_seed: {seed}, shutdown_timeout_s: 3}}
mqtt: {{url: "{mqtt_url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5}}
api: {{enabled: false}}
devices:
  - {{kind: card_reader, id: reader-1, profile: em4100_id12, simulated: true, debounce_s: 0}}
  - {{kind: card_reader, id: reader-2, profile: em4100_id12, simulated: true, debounce_s: 0}}
  - {{kind: card_reader, id: reader-3, profile: em4100_id12, simulated: true, debounce_s: 0}}
  - {{kind: card_reader, id: reader-4, profile: em4100_id12, simulated: true, debounce_s: 0}}
  - {{kind: relay_door, id: side-strike, line: 4, simulated: true}}
  - kind: modbus_io
    id: io-1
    simulated: true
    profile: generic_8di_8do
    timeout_s: 0.3
    poll_interval_s: 0.05
    failures_before_offline: 2
    backoff: {{initial_s: 0.1, max_s: 0.3}}
    inputs:
      - {{name: door1-contact, address: 0, role: door_contact, door: door-1, active_low: true}}
      - {{name: fire-a, address: 6, role: fire_alarm, zone: A, debounce_ms: 0}}
      - {{name: side-contact, address: 1, role: door_contact, door: side-strike}}
      - {{name: fire-b, address: 7, role: fire_alarm, zone: B, debounce_ms: 0}}
    outputs:
      - {{name: door1-strike, coil: 0, door: door-1, pulse_ms: 300}}
      - {{name: door2-strike, coil: 1, door: door-2}}
      - {{name: door3-strike, coil: 2, door: door-3}}
gates:
  - {{id: gate-1, readers: [{{device: reader-1}}], door: door-1, zone: A, held_open_s: 1,
     passage_timeout_s: 2}}
  - {{id: room-7a, readers: [{{device: reader-2}}], door: door-2, zone: A}}
  - {{id: lab-1, readers: [{{device: reader-3}}], door: door-3, zone: B}}
  - {{id: side-door, readers: [{{device: reader-4}}], turnstile: side-strike, zone: B}}
"""


@asynccontextmanager
async def running(tmp_path: Path, broker: MosquittoBroker) -> AsyncIterator[Gateway]:
    config = parse_config(config_text(tmp_path, broker.url))
    agent = build_gateway(config, data_dir=tmp_path / "data")
    task = asyncio.create_task(agent.run())
    try:

        def ready() -> bool:
            if task.done():
                raise AssertionError(f"the agent stopped: {task}")
            online = [agent.devices.state.get(d, {}).get("online") for d in ("io-1", "reader-1")]
            return len(agent.gates) == 4 and all(online)

        await async_wait_until(ready, TIMEOUT_S, what="agent and devices ready")
        yield agent
    finally:
        agent.request_stop("test")
        await asyncio.wait_for(task, 20)


def events(collector: Collector, event_type: str) -> list[dict[str, Any]]:
    found = [e for e in collector.events() if e["type"] == event_type]
    for event in found:
        validate_event(event)
    return found


async def wait_events(collector: Collector, event_type: str, n: int = 1, **data: Any) -> list[dict[str, Any]]:
    def matching() -> list[dict[str, Any]]:
        return [e for e in events(collector, event_type) if data.items() <= e["data"].items()]

    await async_wait_until(lambda: len(matching()) >= n, TIMEOUT_S, what=f"{n} x {event_type} {data}")
    return matching()


def module(agent: Gateway) -> Any:
    return agent.devices.drivers["io-1"].simulator  # type: ignore[union-attr]


def test_a_grant_pulses_the_relay_and_the_door_contact_reports_forced_and_held_open(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario() -> None:
        async with running(tmp_path, mosquitto) as agent:
            sim = module(agent)
            agent.devices.drivers["reader-1"].simulator.present(CARD_S1)  # type: ignore[union-attr]
            granted = (await wait_events(collector, "edu.campus.access.granted.v1", gate="gate-1"))[0]
            assert granted["subject"] == "S1"
            # The relay of door-1 closed, and opened again after its pulse; door-2's never moved.
            await async_wait_until(lambda: sim.pulses(0) == 1 and not sim.coil(0), TIMEOUT_S, what="pulse")
            assert sim.pulses(1) == 0
            # The door opens within the grant's window: a passage, not forced.
            sim.set_input("door1-contact", True)
            await wait_events(collector, "edu.campus.access.door_state.v1", gate="gate-1", open=True)
            passage = (await wait_events(collector, "edu.campus.access.passage.v1"))[0]
            assert passage["data"]["result"] == "passed" and passage["data"]["grant_id"] == granted["id"]
            # ... and stays open past held_open_s.
            held = (await wait_events(collector, "edu.campus.access.door_held_open.v1"))[0]
            assert held["data"] == {"gate": "gate-1", "device": "io-1", "direction": None}
            assert held["severity"] == "warning"
            sim.set_input("door1-contact", False)
            # The first closed state is the one reported at start.
            await wait_events(collector, "edu.campus.access.door_state.v1", 2, gate="gate-1", open=False)
            assert events(collector, "edu.campus.access.forced.v1") == []
            # Opened again with no grant: forced.
            sim.set_input("door1-contact", True)
            forced = (await wait_events(collector, "edu.campus.access.forced.v1", gate="gate-1"))[0]
            assert forced["data"] == {"gate": "gate-1", "device": "io-1", "direction": None}
            assert forced["severity"] == "critical"
            states = [
                e["data"]
                for e in events(collector, "edu.campus.access.door_state.v1")
                if e["data"]["gate"] == "gate-1"
            ]
            assert [s["open"] for s in states] == [False, True, False, True]  # first: the state at start
            assert states[-1] == {"gate": "gate-1", "device": "io-1", "door": "door-1", "open": True}
            assert agent.gates["gate-1"].stats.forced == 1
            # A relay door (GPIO strike) with its contact on the module: forced too.
            sim.set_input("side-contact", True)
            side = await wait_events(collector, "edu.campus.access.forced.v1", gate="side-door")
            assert side[0]["data"]["device"] == "io-1"
            assert agent.devices.drivers["io-1"].counters["pulses"] == 1

    try:
        asyncio.run(scenario())
    finally:
        collector.close()


def test_a_fire_alarm_frees_every_gate_of_its_zone_and_only_those(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario() -> None:
        async with running(tmp_path, mosquitto) as agent:
            sim = module(agent)
            sim.set_input("fire-a", True)
            alarm = (await wait_events(collector, "edu.campus.security.fire_alarm.v1", active=True))[0]
            assert alarm["data"] == {
                "zone": "A",
                "device": "io-1",
                "input": "fire-a",
                "active": True,
                "gates": ["gate-1", "room-7a"],
            }
            assert alarm["severity"] == "critical"
            freed = await wait_events(collector, "edu.campus.access.free_passage.v1", 2, active=True)
            assert sorted(e["data"]["gate"] for e in freed) == ["gate-1", "room-7a"]
            # Zone A's relays are held closed; zone B's gate is untouched.
            assert sim.coil(0) and sim.coil(1) and not sim.coil(2)
            assert not agent.gates["lab-1"].free_passage
            # A card in free passage is still decided and logged; the hold is not cut by a pulse.
            agent.devices.drivers["reader-1"].simulator.present(CARD_S1)  # type: ignore[union-attr]
            await wait_events(collector, "edu.campus.access.granted.v1", gate="gate-1")
            assert sim.pulses(0) == 1 and sim.coil(0)  # only the hold closed it
            # The door opened during the alarm is neither forced nor held open.
            sim.set_input("door1-contact", True)
            await wait_events(collector, "edu.campus.access.door_state.v1", open=True)
            sim.set_input("door1-contact", False)
            sim.set_input("fire-a", False)
            cleared = (await wait_events(collector, "edu.campus.security.fire_alarm.v1", active=False))[0]
            assert cleared["data"]["gates"] == ["gate-1", "room-7a"] and cleared["severity"] == "info"
            await wait_events(collector, "edu.campus.access.free_passage.v1", 2, active=False)
            await async_wait_until(lambda: not sim.coil(0) and not sim.coil(1), TIMEOUT_S, what="released")
            assert events(collector, "edu.campus.access.forced.v1") == []
            assert events(collector, "edu.campus.access.door_held_open.v1") == []
            assert [e["data"]["gate"] for e in events(collector, "edu.campus.access.free_passage.v1")].count(
                "lab-1"
            ) == 0
            # Zone B: its Modbus door and its GPIO relay door are held open, zone A's are not.
            strike: Any = agent.devices.drivers["side-strike"].pins[0]  # type: ignore[union-attr]
            sim.set_input("fire-b", True)
            alarm_b = (await wait_events(collector, "edu.campus.security.fire_alarm.v1", zone="B"))[0]
            assert alarm_b["data"]["gates"] == ["lab-1", "side-door"]
            await async_wait_until(lambda: sim.coil(2) and strike.active, TIMEOUT_S, what="zone B held")
            assert not sim.coil(0) and not agent.gates["gate-1"].free_passage
            sim.set_input("fire-b", False)
            await wait_events(collector, "edu.campus.security.fire_alarm.v1", zone="B", active=False)
            await async_wait_until(
                lambda: not sim.coil(2) and not strike.active, TIMEOUT_S, what="zone B back"
            )

    try:
        asyncio.run(scenario())
    finally:
        collector.close()


def test_link_cut_and_faults_offline_online_resync_and_counters(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario() -> None:
        async with running(tmp_path, mosquitto) as agent:
            sim = module(agent)
            driver = agent.devices.drivers["io-1"]
            await wait_events(collector, "edu.campus.access.door_state.v1", open=False)
            # Exception responses: counted, the module stays online, polling goes on.
            sim.answer_with_exception(4)
            await async_wait_until(
                lambda: driver.counters.get("exception_responses", 0) >= 3, TIMEOUT_S, what="exceptions"
            )
            sim.answer_with_exception(None)
            assert events(collector, "edu.campus.device.offline.v1") == []
            # The link is cut; the door opens meanwhile; the resync after reconnect reports it.
            await sim.stop()
            offline = (await wait_events(collector, "edu.campus.device.offline.v1", device="io-1"))[0]
            assert offline["data"]["kind"] == "modbus_io"
            sim.set_input("door1-contact", True)
            await sim.start()
            await wait_events(collector, "edu.campus.device.online.v1", 2, device="io-1")
            await wait_events(collector, "edu.campus.access.door_state.v1", open=True)
            # A module that stops answering: timeouts, then offline, then back.
            sim.stop_answering()
            await wait_events(collector, "edu.campus.device.offline.v1", 2, device="io-1")
            sim.stop_answering(False)
            await wait_events(collector, "edu.campus.device.online.v1", 3, device="io-1")
            assert driver.counters["timeouts"] >= 2 and driver.counters["disconnects"] >= 2
            # The command surface of a Modbus door (what remote open / hold_open drive).
            door2 = agent.gates["room-7a"].door_device
            assert door2 is not None and agent.doors.door_device("nope") is None
            await door2.hold_open()
            assert sim.coil(1)
            await door2.normal()
            await door2.open()
            assert sim.pulses(1) == 2
            await async_wait_until(lambda: not sim.coil(1), TIMEOUT_S, what="door-2 released")
            # The driver's counters are the agent's metrics.
            assert agent.counters.get("input_door_contact") >= 2

    try:
        asyncio.run(scenario())
    finally:
        collector.close()


def test_door_and_zone_references_are_checked(tmp_path: Path) -> None:
    text = config_text(tmp_path, "mqtt://127.0.0.1:1883")
    text = text.replace("door: door-3, zone: B", "door: door-9, zone: B").replace(
        "zone: A, debounce", "zone: C, debounce"
    )
    text = text.replace("door: door-1, active_low", "door: door-11, active_low")
    # Deferred, so this holds before and after GatewayConfig calls door_problems itself.
    config = GatewayConfig.model_validate(yaml.safe_load(text), context={DEFER_REFERENCES: True})
    problems = {".".join(map(str, p.loc)): p.message for p in door_problems(config.devices, config.gates)}
    assert problems == {
        "gates.2.door": "gate lab-1: unknown door 'door-9' (did you mean 'door-3'?)",
        "devices.5.inputs.0.door": "input door1-contact: unknown door 'door-11' (did you mean 'door-1'?)",
        "devices.5.inputs.1.zone": "input fire-a: unknown zone 'C'; `gates[].zone` has: A, B",
    }
