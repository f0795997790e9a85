"""ZKTeco terminals through the whole agent on a real Mosquitto: the pull driver against the TCP
simulator and the push server against the pushing-terminal simulator, records mapped to roster
persons (``terminal_user_ids``), unmapped ones as ``attendance.unmapped``, nothing twice across a
restart, nothing lost over a cut link, bad serials and a wrong comm key refused and counted."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_drivers.zkteco.codec import Record, User
from device_drivers.zkteco.sim import ZkDeviceSimulator, ZkPushTerminalSimulator
from edge_agent.config import parse_config
from edge_agent.gateway import Gateway
from sync.contract import validate_event
from tests.conftest import MosquittoBroker
from tests.mqtt_helpers import Collector
from tests.support.agent_harness import build_gateway
from tests.support.agent_process import AgentProcess
from tests.support.broker import free_port
from tests.support.sim_thread import SimulatorThread
from tests.support.wait import wait_until

SITE, GW = "zk-site", "gw-zk"
DAY = datetime(2026, 12, 1, 8, 0, 0)  # terminal local time (Asia/Shanghai)
RECORDED = "edu.campus.attendance.recorded.v1"
UNMAPPED = "edu.campus.attendance.unmapped.v1"


def roster_seed(tmp_path: Path) -> Path:
    seed = tmp_path / "roster.json"
    persons = [
        {"id": "S1", "name": "Student One", "role": "student", "group": "7A", "terminal_user_ids": ["101"]},
        {"id": "S2", "name": "Student Two", "role": "student", "group": "7A", "terminal_user_ids": ["102"]},
        {"id": "T1", "name": "Teacher", "role": "teacher", "terminal_user_ids": ["zk-office:103", "4711"]},
    ]
    seed.write_text(json.dumps({"kind": "snapshot", "version": 1, "persons": persons, "credentials": []}))
    return seed


def config_text(tmp_path: Path, url: str, devices: str, terminal: str = "zk-office") -> str:
    return f"""
gateway: {{site: {SITE}, id: {GW}, timezone: Asia/Shanghai}}
agent: {{data_dir: {tmp_path / "data"}, roster_seed: {roster_seed(tmp_path)}, shutdown_timeout_s: 3}}
mqtt: {{url: "{url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5}}
devices:
{devices}
terminals:
  - {{device: {terminal}, point: office-a}}
"""


def pull_device(port: int, **extra: Any) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in extra.items())
    return (
        f"  - {{kind: zkteco, id: zk-office, host: 127.0.0.1, port: {port}, poll_interval_s: 1, "
        f"timezone: Asia/Shanghai, timeout_s: 2, backoff: {{initial_s: 0.05, max_s: 0.3}}"
        + (f", {fields}" if fields else "")
        + "}"
    )


def events_of(collector: Collector, *types: str) -> list[dict[str, Any]]:
    return [m.json() for m in collector.snapshot("/events/") if m.json()["type"] in types]


async def until(pred: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def start(config: str, tmp_path: Path) -> tuple[Gateway, asyncio.Task[int]]:
    agent = build_gateway(parse_config(config), data_dir=tmp_path / "data")
    return agent, asyncio.create_task(agent.run())


async def stop(agent: Gateway, task: asyncio.Task[int]) -> None:
    agent.request_stop("test")
    await asyncio.wait_for(task, 30)


def log(n: int) -> list[Record]:
    """``n`` records of users 101..104 (104 is nobody's), two per second."""
    return [
        Record(str(101 + i % 4), DAY + timedelta(seconds=i // 2), 1 if i % 3 else 15, i % 2, 1 + i % 4)
        for i in range(n)
    ]


USERS = [User(i, str(100 + i), f"User {i}") for i in range(1, 5)]


def test_pull_records_once_in_order_across_a_cut_link_and_a_restart(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    n = 1700  # 68,000 bytes of log: two buffer chunks; the link drops after the first

    async def scenario() -> None:
        async with ZkDeviceSimulator(users=USERS, records=log(n), timezone="Asia/Shanghai") as sim:
            sim.faults.drop_after_chunks = 2  # the users' chunk and the first log chunk
            config = config_text(tmp_path, mosquitto.url, pull_device(sim.port))
            agent, task = await start(config, tmp_path)
            try:
                await until(lambda: len(events_of(collector, RECORDED, UNMAPPED)) >= n, f"{n} records")
                assert sim.connections >= 2
            finally:
                await stop(agent, task)
            # While the agent is down the terminal records two more; the restarted agent sends only those.
            sim.add_record("102", DAY + timedelta(hours=1), status=2, punch=1)
            sim.add_record("999", DAY + timedelta(hours=1, seconds=1), status=1, punch=0)
            agent, task = await start(config, tmp_path)
            try:
                await until(lambda: len(events_of(collector, RECORDED, UNMAPPED)) >= n + 2, "2 more records")
                await asyncio.sleep(1.5)  # a poll more: still nothing twice
            finally:
                await stop(agent, task)

    asyncio.run(scenario())
    collector.close()
    events = events_of(collector, RECORDED, UNMAPPED)
    for e in events:
        validate_event(e)
    assert len(events) == n + 2
    assert len({e["id"] for e in events}) == n + 2
    times = [e["data"]["terminal_time"] for e in events]
    assert times == sorted(times)
    first = events[0]
    assert first["type"] == RECORDED and first["subject"] == "S1"
    assert first["data"]["method"] == "face" and first["data"]["punch"] == "check_in"
    assert first["data"]["point"] == "office-a"
    assert first["data"]["terminal_time"].startswith("2026-12-01T00:00:00")  # 08:00 Shanghai
    assert "received_at" in first["data"]
    by_user = {e["data"]["terminal_user_id"]: e for e in events}
    assert by_user["103"]["subject"] == "T1"  # "zk-office:103": this terminal's 103
    unmapped = by_user["104"]
    assert unmapped["type"] == UNMAPPED and unmapped["data"]["record"]["user_id"] == "104"
    assert by_user["999"]["type"] == UNMAPPED
    assert by_user["102"]["data"]["method"] == "card" and by_user["102"]["data"]["punch"] == "check_out"
    assert len([e for e in events if e["type"] == UNMAPPED]) == n // 4 + 1


def test_wrong_comm_key_is_offline_with_a_clear_reason_and_a_counter(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_ZK_OFFICE_KEY", "1111")
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario() -> None:
        async with ZkDeviceSimulator(comm_key=2222, users=USERS, records=log(3)) as sim:
            config = config_text(
                tmp_path, mosquitto.url, pull_device(sim.port, password_credential="zk_office_key")
            )
            agent, task = await start(config, tmp_path)
            try:
                await until(lambda: events_of(collector, "edu.campus.device.offline.v1"), "device.offline")
                driver: Any = agent.devices.drivers["zk-office"]
                await until(lambda: driver.counters.get("auth_failed", 0) >= 2, "auth_failed counted twice")
                assert not events_of(collector, RECORDED, UNMAPPED)
            finally:
                await stop(agent, task)

    asyncio.run(scenario())
    collector.close()
    (off,) = events_of(collector, "edu.campus.device.offline.v1")
    assert off["data"]["device"] == "zk-office"
    assert "authentication failed" in off["data"]["reason"] and "comm key" in off["data"]["reason"]


def test_push_terminal_retries_after_a_cut_and_unknown_serials_are_refused(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    port = free_port()
    device = (
        f"  - {{kind: zkteco_push, id: zk-push, listen_host: 127.0.0.1, listen_port: {port}, "
        "timezone: Asia/Shanghai, terminals: [{serial: CEXJ0001, id: zk-lobby}]}"
    )
    config = config_text(tmp_path, mosquitto.url, device, terminal="zk-lobby")
    terminal = ZkPushTerminalSimulator("CEXJ0001", url=f"http://127.0.0.1:{port}", batch=10, interval_s=0.1)

    async def scenario() -> None:
        for i in range(25):
            terminal.add_record(
                "4711" if i % 5 else "555", DAY + timedelta(seconds=i), status=i % 2, verify=1
            )
        async with terminal:
            # The gateway is not up yet: the terminal keeps everything and retries.
            await until(lambda: terminal.state.failures >= 2, "failed pushes")
            assert terminal.pending == 25
            agent, task = await start(config, tmp_path)
            try:
                await until(lambda: terminal.pending == 0, "all pushed")
                await until(lambda: len(events_of(collector, RECORDED, UNMAPPED)) >= 25, "25 events")
                async with httpx.AsyncClient() as client:
                    r = await client.post(
                        f"http://127.0.0.1:{port}/iclock/cdata?SN=INTRUDER&table=ATTLOG",
                        content=b"4711\t2026-12-01 09:00:00\t0\t1\n",
                    )
                assert r.status_code == 403
                driver: Any = agent.devices.drivers["zk-push"]
                assert driver.counters["unknown_serial"] == 1
                assert driver.counters["records"] == 25
            finally:
                await stop(agent, task)

    asyncio.run(scenario())
    collector.close()
    events = events_of(collector, RECORDED, UNMAPPED)
    assert len(events) == 25 and len({e["id"] for e in events}) == 25
    for e in events:
        validate_event(e)
    assert {e["data"]["device"] for e in events} == {"zk-lobby"}
    mapped = [e for e in events if e["type"] == RECORDED]
    assert len(mapped) == 20 and {e["subject"] for e in mapped} == {"T1"}
    assert mapped[0]["data"]["method"] == "fingerprint"
    assert [e["data"]["terminal_time"] for e in events] == sorted(e["data"]["terminal_time"] for e in events)
    unmapped = [e for e in events if e["type"] == UNMAPPED]
    assert unmapped[0]["data"]["record"]["pin"] == "555"
    assert events[0]["data"]["terminal_time"].startswith("2026-12-01T00:00:00")


def test_agent_killed_mid_download_skips_nothing_after_restart(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """SIGKILL while the log streams: the restarted agent starts at the last acknowledged record;
    what the crash window delivers again carries the same event id."""
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    n = 20000
    with SimulatorThread(ZkDeviceSimulator(users=USERS, records=log(n), timezone="Asia/Shanghai")) as sim:
        config = tmp_path / "agent.yaml"
        config.write_text(config_text(tmp_path, mosquitto.url, pull_device(sim.port)))
        agent = AgentProcess(config, tmp_path / "data", mosquitto.url)
        mark_file = tmp_path / "data" / "devices" / "zk-office" / "zkteco_mark.json"

        def marked() -> int:
            return int(json.loads(mark_file.read_text())["count"]) if mark_file.exists() else 0

        try:
            wait_until(marked, 90, 0.005, what="a first mark", ignore=(ValueError,))
        finally:
            agent.kill()
        at_kill = marked()
        assert 0 < at_kill < n, at_kill  # killed while the log streamed
        agent = AgentProcess(config, tmp_path / "data", mosquitto.url)
        try:
            wait_until(
                lambda: len({e["id"] for e in events_of(collector, RECORDED, UNMAPPED)}) >= n, 120, what="all"
            )
            agent.signal(signal.SIGTERM)
            assert agent.wait(30) == 0
        finally:
            agent.kill()
    collector.close()
    events = events_of(collector, RECORDED, UNMAPPED)
    ids = [e["id"] for e in events]
    assert len(set(ids)) == n
    by_id: dict[str, dict[str, Any]] = {}
    for e in events:  # a record delivered again is the same event, to the byte of its data
        assert by_id.setdefault(e["id"], e)["data"]["terminal_time"] == e["data"]["terminal_time"]


def test_a_record_the_agent_fails_to_handle_is_delivered_after_the_device_restarts(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """A bug turning one terminal record into an event must not skip it: nothing after it is
    acknowledged, the supervisor restarts the device, and its driver delivers it again from the
    mark. (The fault is injected into the agent's handler: it is the agent's own failure.)"""
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    n = 40

    async def scenario() -> None:
        async with ZkDeviceSimulator(users=USERS, timezone="Asia/Shanghai") as sim:
            agent, task = await start(config_text(tmp_path, mosquitto.url, pull_device(sim.port)), tmp_path)
            try:
                await until(lambda: agent.router.terminals is not None, "the gates and terminals built")
                await until(lambda: agent.devices.state["zk-office"]["online"], "the terminal online")
                handler = agent.router.terminals
                assert handler is not None
                real = handler.on_record
                failures = []

                def on_record(reading: Any) -> Any:
                    if not failures and reading.record_id.startswith("103|"):
                        failures.append(reading.record_id)
                        raise RuntimeError("injected: the record cannot be made an event")
                    return real(reading)

                handler.on_record = on_record  # type: ignore[method-assign]
                for record in log(n):
                    sim.add_record(record.user_id, record.timestamp, record.status, record.punch)
                await until(lambda: len(events_of(collector, RECORDED, UNMAPPED)) >= n, f"{n} records")
                assert failures, "the fault was never hit"
                assert agent.counters.snapshot().get("reading_handler_failed") == 1
                restarts = agent.supervisor.snapshot()["device-zk-office"]["restarts"]
                assert isinstance(restarts, int) and restarts >= 1
            finally:
                await stop(agent, task)

    asyncio.run(scenario())
    collector.close()
    events = events_of(collector, RECORDED, UNMAPPED)
    ids = [e["id"] for e in events]
    # Every record, the failed one included; what the restart re-read before the failure carries
    # the ids it had (the centre de-duplicates on them).
    assert len(set(ids)) == n
    failed = next(e for e in events if e["data"].get("terminal_user_id") == "103" and e["type"] == RECORDED)
    assert failed["subject"] == "T1"
