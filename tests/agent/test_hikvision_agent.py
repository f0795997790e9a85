"""A Hikvision terminal through the whole agent to a real Mosquitto: the simulated ISAPI terminal
(real HTTP and digest auth) holds the roster the gateway wrote to it, decides itself, and its
decisions arrive as ``access.granted`` / ``access.denied`` (``decided_by: terminal``) under our
person ids, once and in order, also across a cut link (AcsEvent catch-up)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from device_drivers.hikvision import codec
from device_drivers.hikvision.sim import IsapiSimulator, SimUser
from edge_agent.roster import RosterIndex
from edge_agent.terminal_roster import terminal_users
from sync import AccessGroup, BlockedCredential, Credential, Person, RosterDelta
from tests.support.agent_harness import RunningGate, running_gate
from tests.support.broker import MosquittoBroker
from tests.support.mqtt import Collector
from tests.support.wait import async_wait_until

SITE, GW = "hik-site", "gw-hik"
DEVICES = (
    "  - {kind: hikvision, id: hik-gate, simulated: true, sync_roster: true, timezone: Asia/Shanghai,\n"
    "     heartbeat_timeout_s: 5, backoff: {initial_s: 0.05, max_s: 0.3}}\n"
)
TERMINALS = "terminals:\n  - {device: hik-gate, gate: gate-1, direction: entry}\n"


def _terminal_events(collector: Collector) -> list[dict[str, Any]]:
    out = []
    for message in collector.snapshot("/events/"):
        event = message.json()
        if event.get("source", "").endswith("/hik-gate"):
            out.append(event)
    return out


def _of(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == f"edu.campus.{kind}.v1"


async def _sim(gate: RunningGate) -> IsapiSimulator:
    agent = gate.agent
    await async_wait_until(lambda: agent.devices.state.get("hik-gate", {}).get("online") is True, 20)
    driver: Any = agent.devices.drivers["hik-gate"]
    assert isinstance(driver.simulator, IsapiSimulator)
    return driver.simulator


def test_terminal_decides_with_our_roster_and_events_arrive_once_in_order(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario() -> None:
        async with running_gate(
            tmp_path, mosquitto.url, site=SITE, gateway=GW, extra_devices=DEVICES, extra=TERMINALS
        ) as gate:
            sim = await _sim(gate)
            # The roster went down to the terminal: valid persons whose access groups include the
            # terminal's gate (N1 has no group), with their valid cards only.
            await async_wait_until(lambda: set(sim.users) == {"S1", "S2", "T1", "W1"}, 20)
            await async_wait_until(lambda: "0012AB34CE" in sim.cards, 10)
            assert sim.cards["0012AB34CD"] == "S1" and "00CCCCCCCC" not in sim.cards  # expired card
            assert "0012AB34CF" not in sim.cards  # blocked person B1

            granted = sim.present_card("0012AB34CD", attendance_status="checkIn")
            refused = sim.present_card("0012AB34CF")
            await async_wait_until(lambda: len(_terminal_events(collector)) >= 3, 20)

            # A person leaves: the terminal is told, and refuses their card from then on.
            delta = RosterDelta.model_validate(
                {"kind": "delta", "from_version": 1, "version": 2, "delete": {"persons": ["S2"]}}
            )
            assert gate.agent.roster is not None
            await asyncio.to_thread(gate.agent.roster.apply_delta, delta)
            await async_wait_until(lambda: "S2" not in sim.users and "0012AB34CE" not in sim.cards, 20)
            left = sim.present_card("0012AB34CE")

            # The link is cut; the terminal goes on deciding; nothing is lost or doubled.
            sim.go_down()
            await async_wait_until(
                lambda: gate.agent.devices.state.get("hik-gate", {}).get("online") is False, 20
            )
            while_down = [sim.present_face("S1") for _ in range(35)]
            sim.come_up()
            after = sim.raise_event(codec.MINOR_DOOR_OPEN_NORMAL)
            expected = [granted, refused, left, *while_down, after]
            access = lambda: [e for e in _terminal_events(collector) if "access." in e["type"]]  # noqa: E731
            await async_wait_until(lambda: len(access()) >= len(expected), 30)
            driver: Any = gate.agent.devices.drivers["hik-gate"]
            await async_wait_until(lambda: driver.acknowledged[0] == after, 20)

        events = access()
        assert len(events) == len(expected)
        assert len({e["id"] for e in events}) == len(events)  # once each
        assert [e["type"].split(".")[3] for e in events] == ["granted", "denied", "denied"] + [
            "granted"
        ] * len(while_down) + ["door_state"]
        first, second, third = events[:3]
        assert first["type"] == "edu.campus.access.granted.v1"
        assert first["data"]["decided_by"] == "terminal" and first["data"]["person"]["id"] == "S1"
        assert first["data"]["method"] == "card" and first["subject"] == "S1"
        assert second["type"] == "edu.campus.access.denied.v1"
        assert second["data"]["detail"] == "card_unknown" and "person" not in second["data"]
        assert third["type"] == "edu.campus.access.denied.v1" and third["data"]["credential"] == "0012AB34CE"
        faces = events[3:-1]
        assert all(_of("access.granted")(e) and e["data"]["method"] == "face" for e in faces)
        assert all(e["data"]["person"]["id"] == "S1" for e in faces)
        assert events[-1]["type"] == "edu.campus.access.door_state.v1" and events[-1]["data"]["open"] is True
        # In the terminal's order: event times never go backwards.
        times = [e["time"] for e in events]
        assert times == sorted(times)
        attendance = [e for e in _terminal_events(collector) if _of("attendance.recorded")(e)]
        assert len(attendance) == 1 and attendance[0]["data"]["person"]["id"] == "S1"
        assert attendance[0]["data"]["punch"] == "check_in"

    asyncio.run(scenario())
    collector.close()


def test_who_goes_to_a_terminal() -> None:
    now = datetime(2026, 9, 1, tzinfo=UTC)
    index = RosterIndex(
        version=3,
        persons={
            "S1": Person(id="S1", name="One", role="student", valid_from=datetime(2026, 9, 2, tzinfo=UTC)),
            "B1": Person(id="B1", name="Blocked", role="student", blocked=True),
            "L1": Person(id="L1", name="Left", role="staff", valid_until=datetime(2026, 8, 31, tzinfo=UTC)),
            "V1": Person(
                id="V1", name="Guest", role="visitor", valid_until=datetime(2026, 9, 1, 18, tzinfo=UTC)
            ),
        },
        credentials={
            "11": Credential(credential="11", person_id="S1"),
            "12": Credential(credential="12", person_id="S1"),  # lost: on the blocklist
            "13": Credential(credential="13", person_id="S1", valid_until=datetime(2026, 1, 1, tzinfo=UTC)),
            "21": Credential(credential="21", person_id="B1"),
            "41": Credential(credential="41", person_id="V1"),
        },
        blocklist={"12": BlockedCredential(credential="12", reason="lost")},
    )
    users = {u.employee_no: u for u in terminal_users(index, now)}
    assert set(users) == {"S1", "V1"}
    assert users["S1"].cards == ("11",) and users["S1"].valid_from == datetime(2026, 9, 2, tzinfo=UTC)
    assert users["V1"].user_type == "visitor" and users["V1"].cards == ("41",)
    assert users["S1"].user_type == "normal"
    # For a terminal reported as a gate, only those whose access groups include that gate (or '*').
    grouped = RosterIndex(
        version=4,
        persons={
            "S1": Person(id="S1", name="One", role="student", access_groups=["students"]),
            "T1": Person(id="T1", name="Two", role="teacher", access_groups=["staff"]),
            "W1": Person(id="W1", name="Three", role="staff", access_groups=["caretakers"]),
            "N1": Person(id="N1", name="Four", role="student"),
        },
        access_groups={
            "students": AccessGroup(id="students", gates=["main-gate"]),
            "staff": AccessGroup(id="staff", gates=["staff-door"]),
            "caretakers": AccessGroup(id="caretakers", gates=["*"]),
        },
    )
    assert {u.employee_no for u in terminal_users(grouped, now, "staff-door")} == {"T1", "W1"}
    assert {u.employee_no for u in terminal_users(grouped, now, "main-gate")} == {"S1", "W1"}


def test_a_wrong_password_is_a_clear_offline_event_and_a_counter(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two terminals configured as real ones (host, port, credential): the right password works,
    the wrong one gives `device.offline` with `authentication failed`, a counter, and no retry storm."""
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    monkeypatch.setenv("EDGE_AGENT_HIK_OK_PW", "right")
    monkeypatch.setenv("EDGE_AGENT_HIK_BAD_PW", "wrong")

    async def scenario() -> None:
        async with IsapiSimulator(password="right") as good, IsapiSimulator(password="right") as bad:
            devices = (
                f"  - {{kind: hikvision, id: hik-ok, host: 127.0.0.1, port: {good.port}, username: admin,\n"
                "     password_credential: hik_ok_pw, attendance: true}\n"
                f"  - {{kind: hikvision, id: hik-bad, host: 127.0.0.1, port: {bad.port}, username: admin,\n"
                "     password_credential: hik_bad_pw, auth_retry_s: 600}\n"
            )
            async with running_gate(
                tmp_path, mosquitto.url, site=SITE, gateway=GW, extra_devices=devices
            ) as gate:
                agent = gate.agent
                await async_wait_until(lambda: agent.devices.state["hik-ok"].get("online") is True, 20)
                bad_driver: Any = agent.devices.drivers["hik-bad"]
                await async_wait_until(lambda: bad_driver.counters.get("auth_failed", 0) >= 1, 20)
                good.users["4711"] = SimUser("4711", "Enrolled at the terminal")
                good.present_face("4711")
                await async_wait_until(
                    lambda: any(_of("attendance.unmapped")(e) for e in _source_events(collector, "hik-ok")),
                    20,
                )
                offline = [e for e in _source_events(collector, "hik-bad") if _of("device.offline")(e)]
                assert [e["data"]["reason"] for e in offline] == ["authentication failed"]
                assert agent.devices.state["hik-bad"].get("online") is False
                # auth_retry_s: 600: one refused login (plus the digest challenge), not a storm.
                assert bad_driver.counters["auth_failed"] == 1 and bad.auth_failures <= 2
                assert not bad.requests  # nothing past the login
        granted = [e for e in _source_events(collector, "hik-ok") if _of("access.granted")(e)]
        # Not a sync_roster terminal and no roster person holds 4711: no guessed person.
        assert len(granted) == 1 and "person" not in granted[0]["data"]
        assert granted[0]["data"]["terminal_user_id"] == "4711"

    asyncio.run(scenario())
    collector.close()


def _source_events(collector: Collector, device: str) -> list[dict[str, Any]]:
    return [m.json() for m in collector.snapshot("/") if m.json().get("source", "").endswith(f"/{device}")]
