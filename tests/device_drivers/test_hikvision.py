"""The ISAPI driver against the simulated terminal: real HTTP, real digest auth (httpx.DigestAuth),
the multipart alert stream, AcsEvent catch-up, user and card sync, the doctor probe."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_drivers.hikvision import codec
from device_drivers.hikvision.config import HikvisionConfig
from device_drivers.hikvision.driver import HikvisionDriver, TerminalUser, probe_hikvision
from device_drivers.hikvision.sim import IsapiSimulator, SimUser
from device_drivers.readings import DeviceOffline, DeviceOnline, Reading, TerminalAccess, TerminalAttendance
from tests.support.wait import async_wait_until


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test on its own event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


FAST = {"initial_s": 0.05, "max_s": 0.2, "jitter": 0.0}


def _config(**extra: Any) -> HikvisionConfig:
    base: dict[str, Any] = {"id": "hik1", "kind": "hikvision", "simulated": True, "backoff": FAST}
    return HikvisionConfig.model_validate({**base, **extra})


@dataclass
class Pump:
    """Reads the driver's readings in a task and acknowledges each record, like the agent does."""

    driver: HikvisionDriver
    ack: bool = True
    readings: list[Reading] = field(default_factory=list)

    @property
    def records(self) -> list[TerminalAccess | TerminalAttendance]:
        return [r for r in self.readings if isinstance(r, TerminalAccess | TerminalAttendance)]

    async def run(self) -> None:
        async for reading in self.driver.readings():
            self.readings.append(reading)
            if self.ack:
                self.driver.acknowledge(reading)


@asynccontextmanager
async def running(driver: HikvisionDriver, *, ack: bool = True) -> AsyncIterator[Pump]:
    pump = Pump(driver, ack)
    async with driver:
        task = asyncio.create_task(pump.run())
        try:
            yield pump
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _online(pump: Pump, n: int = 1) -> None:
    await async_wait_until(lambda: sum(isinstance(r, DeviceOnline) for r in pump.readings) >= n, 10)


def _serials(pump: Pump) -> list[str]:
    return [r.record_id for r in pump.records if isinstance(r, TerminalAccess)]


@sync
async def test_events_arrive_once_in_order_with_the_terminals_decision(tmp_path: Path) -> None:
    config = _config()
    sim = IsapiSimulator.from_config(config)
    driver = HikvisionDriver.from_config(config, simulator=sim, state_dir=tmp_path)
    async with running(driver) as pump:
        await _online(pump)
        await async_wait_until(lambda: driver.counters.get("heartbeats", 0) >= 1, 10)
        sim.users["S1001"] = SimUser("S1001", "Li")
        sim.cards["0012345678"] = "S1001"
        serials = [
            sim.present_card("0012345678"),
            sim.present_card("0099999999"),
            sim.present_face("S1001"),
            sim.raise_event(codec.MINOR_DOOR_OPEN_NORMAL),
            sim.raise_event(codec.MINOR_DOOR_OPEN_TIMEOUT),
            sim.raise_event(codec.MINOR_HOST_DESMANTLE_ALARM, major=codec.MAJOR_ALARM),
        ]
        await async_wait_until(lambda: len(_serials(pump)) >= 6, 10)
        await async_wait_until(lambda: driver.counters.get("pictures_skipped", 0) >= 1, 10)
        await async_wait_until(lambda: driver.counters.get("heartbeats", 0) >= 3, 10)
    assert _serials(pump) == [str(s) for s in serials]
    kinds = [(r.kind, r.user_id, r.reason) for r in pump.records if isinstance(r, TerminalAccess)]
    assert kinds == [
        ("granted", "S1001", None),
        ("denied", None, "card_unknown"),
        ("granted", "S1001", None),
        ("door_open", None, None),
        ("door_held_open", None, None),
        ("tamper", None, None),
    ]
    assert driver.acknowledged is not None and driver.acknowledged[0] == serials[-1]
    assert (tmp_path / "hikvision.json").is_file()


@sync
async def test_a_cut_link_is_caught_up_by_acs_event_search_nothing_lost_nothing_doubled(
    tmp_path: Path,
) -> None:
    config = _config()
    sim = IsapiSimulator.from_config(config)
    driver = HikvisionDriver.from_config(config, simulator=sim, state_dir=tmp_path)
    async with running(driver) as pump:
        await _online(pump)
        before = [sim.raise_event(codec.MINOR_DOOR_OPEN_NORMAL) for _ in range(3)]
        await async_wait_until(lambda: len(_serials(pump)) == 3, 10)
        sim.go_down()
        await async_wait_until(lambda: any(isinstance(r, DeviceOffline) for r in pump.readings), 10)
        # The terminal keeps deciding while the gateway cannot hear it: 70 events, three search pages.
        during = [sim.raise_event(codec.MINOR_FACE_VERIFY_FAIL) for _ in range(70)]
        sim.come_up()
        await _online(pump, 2)
        after = [sim.raise_event(codec.MINOR_DOOR_CLOSE_NORMAL) for _ in range(3)]
        await async_wait_until(lambda: len(_serials(pump)) >= 76, 15)
        await asyncio.sleep(0)  # a stray duplicate would be in by now: the stream is drained in order
        await async_wait_until(lambda: driver.counters.get("heartbeats", 0) >= 3, 10)
    assert _serials(pump) == [str(s) for s in before + during + after]
    assert driver.counters["catch_up_events"] >= 70
    search_pages = [p for m, p in sim.requests if p == "/ISAPI/AccessControl/AcsEvent"]
    assert len(search_pages) >= 3


@sync
async def test_what_was_not_acknowledged_is_delivered_again_after_a_restart(tmp_path: Path) -> None:
    config = _config()
    sim = IsapiSimulator.from_config(config)
    async with sim:
        sim.start = sim.stop = _noop  # type: ignore[method-assign]  # one terminal across both drivers
        first = HikvisionDriver.from_config(config, simulator=sim, state_dir=tmp_path)
        async with running(first, ack=False) as pump:
            await _online(pump)
            acked = sim.raise_event(codec.MINOR_DOOR_OPEN_NORMAL)
            await async_wait_until(lambda: len(_serials(pump)) == 1, 10)
            first.acknowledge(pump.records[0])
            lost = sim.raise_event(codec.MINOR_DOOR_CLOSE_NORMAL)
            await async_wait_until(lambda: len(_serials(pump)) == 2, 10)
        # Raised while no gateway ran at all.
        offline = sim.raise_event(codec.MINOR_DOOR_OPEN_ABNORMAL)
        second = HikvisionDriver.from_config(config, simulator=sim, state_dir=tmp_path)
        async with running(second) as pump2:
            await async_wait_until(lambda: len(_serials(pump2)) >= 2, 10)
            await async_wait_until(lambda: second.counters.get("heartbeats", 0) >= 2, 10)
    assert acked < lost < offline
    assert _serials(pump2) == [str(lost), str(offline)]


async def _noop() -> None:
    return None


@sync
async def test_wrong_password_is_offline_counted_and_backs_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_HIK_WRONG", "not-the-password")
    config = _config(password_credential="hik_wrong", auth_retry_s=0.5)
    sim = IsapiSimulator(password="the-password")
    driver = HikvisionDriver.from_config(config, simulator=sim, state_dir=tmp_path)
    started = time.monotonic()
    async with running(driver) as pump:
        await async_wait_until(lambda: driver.counters.get("auth_failed", 0) >= 2, 10)
        elapsed = time.monotonic() - started
    offline = [r for r in pump.readings if isinstance(r, DeviceOffline)]
    assert [r.reason for r in offline] == ["authentication failed"]  # said once, not per attempt
    assert not any(isinstance(r, DeviceOnline) for r in pump.readings)
    # Two failed logins are at least auth_retry_s apart: the driver does not hammer the account.
    assert elapsed >= 0.5
    assert driver.counters["auth_failed"] <= 1 + elapsed / 0.5


@sync
async def test_the_simulator_speaks_real_digest_auth(tmp_path: Path) -> None:
    async with IsapiSimulator(password="pw") as sim:
        base = f"http://{sim.host}:{sim.port}"
        async with httpx.AsyncClient(base_url=base) as plain:
            assert (await plain.get("/ISAPI/System/deviceInfo")).status_code == 401
        async with httpx.AsyncClient(base_url=base, auth=httpx.DigestAuth("admin", "wrong")) as wrong:
            assert (await wrong.get("/ISAPI/System/deviceInfo")).status_code == 401
        async with httpx.AsyncClient(base_url=base, auth=httpx.DigestAuth("admin", "pw")) as good:
            for _ in range(3):  # the reused challenge (nc=2, 3) passes too
                answer = await good.get("/ISAPI/System/deviceInfo")
                assert answer.status_code == 200 and b"<model>DS-K1T671M</model>" in answer.content


@sync
async def test_malformed_parts_are_counted_and_the_stream_goes_on(tmp_path: Path) -> None:
    config = _config(max_part_bytes=4096)
    sim = IsapiSimulator.from_config(config)
    driver = HikvisionDriver.from_config(config, simulator=sim, state_dir=tmp_path)
    async with running(driver) as pump:
        await _online(pump)
        await async_wait_until(lambda: driver.counters.get("heartbeats", 0) >= 1, 10)
        sim.send_bad_json()
        sim.send_garbage()
        sim._broadcast(codec.encode_part("image/jpeg", b"\xff" * 10_000, b"MIME_boundary"))
        sim.send_heartbeat()
        serial = sim.raise_event(codec.MINOR_DOOR_OPEN_NORMAL)
        await async_wait_until(lambda: _serials(pump) == [str(serial)], 10)
    assert driver.counters["part_bad_json"] == 1
    assert driver.counters["stream_oversize"] >= 1
    assert driver.counters.get("stream_garbage", 0) + driver.counters.get("stream_bad_headers", 0) >= 1
    assert sum(isinstance(r, DeviceOffline) for r in pump.readings) == 0


@sync
async def test_user_and_card_sync_is_a_diff_and_idempotent(tmp_path: Path) -> None:
    config = _config(timezone="Asia/Shanghai")
    sim = IsapiSimulator.from_config(config)
    driver = HikvisionDriver.from_config(config, simulator=sim, state_dir=tmp_path)
    until = datetime(2027, 7, 1, tzinfo=UTC)
    users = [
        TerminalUser(f"S{n:04d}", f"Student {n}", cards=(f"{n:010d}",))
        for n in range(40)  # two pages
    ] + [TerminalUser("V1", "Visitor", "visitor", valid_until=until, cards=("77", "78"))]
    async with driver:
        sim.users["LOCAL"] = SimUser("LOCAL", "x")
        first = await driver.sync_users(users)
        assert (first.added, first.deleted, first.cards_added, first.errors) == (41, 1, 42, {})
        assert sim.users["V1"].end == "2027-07-01T08:00:00" and sim.users["V1"].user_type == "visitor"
        assert sim.cards["0000000007"] == "S0007" and "LOCAL" not in sim.users
        again = await driver.sync_users(users)
        assert (again.added, again.modified, again.deleted, again.cards_added, again.cards_deleted) == (
            0,
        ) * 5
        assert again.unchanged == 41
        changed = [u for u in users if u.employee_no != "S0003"]
        changed[0] = TerminalUser("S0000", "Renamed", cards=("5555",))
        third = await driver.sync_users(changed)
        assert (third.modified, third.deleted, third.cards_added, third.cards_deleted) == (1, 1, 1, 1)
        assert "S0003" not in sim.users and "0000000003" not in sim.cards
        assert sim.cards.get("5555") == "S0000" and "0000000000" not in sim.cards
        # A refusal is named per user; the rest goes on.
        sim.cards["9999"] = "S0001"
        clash = await driver.sync_users([*changed, TerminalUser("S9", "Clash", cards=("9999",))])
        assert "card 9999" not in clash.errors  # owned by S0001 on the terminal: deleted first, then given
        assert sim.cards["9999"] == "S9"
        bad = await driver.sync_users([*changed, TerminalUser("X" * 40, "Too long")])
        assert list(bad.errors) == ["X" * 40] and "badParameters" in bad.errors["X" * 40]


@sync
async def test_probe_reports_device_and_clock_skew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_HIK_PW", "pw")
    async with IsapiSimulator(password="pw") as sim:
        sim.clock_skew = timedelta(seconds=-120)
        config = HikvisionConfig(
            id="hik1",
            kind="hikvision",
            host=sim.host,
            port=sim.port,
            username="admin",
            password_credential="hik_pw",
        )
        checks = {r.check: r for r in await probe_hikvision(config)}
        assert checks["reachable"].status == "ok"
        assert checks["authenticated"].status == "ok" and "DS-K1T671M" in checks["authenticated"].detail
        assert checks["clock"].status == "warn"
        # The terminal's time has whole seconds: 120 s behind reads as 120 or 121.
        assert re.search(r"terminal clock -12[01] s off", checks["clock"].detail)
        monkeypatch.setenv("EDGE_AGENT_HIK_PW", "nope")
        checks = {r.check: r for r in await probe_hikvision(config)}
        assert (
            checks["authenticated"].status == "fail"
            and "authentication failed" in checks["authenticated"].detail
        )
    closed = HikvisionConfig(
        id="h", kind="hikvision", host="127.0.0.1", port=sim.port, password_credential="hik_pw"
    )
    assert [r.status for r in await probe_hikvision(closed)] == ["fail"]


@sync
async def test_a_terminal_that_numbers_from_one_again_is_followed_not_ignored(tmp_path: Path) -> None:
    config = _config()
    sim = IsapiSimulator.from_config(config)
    driver = HikvisionDriver.from_config(config, simulator=sim, state_dir=tmp_path)
    async with running(driver) as pump:
        await _online(pump)
        old = [sim.raise_event(codec.MINOR_DOOR_OPEN_NORMAL) for _ in range(2)]
        await async_wait_until(lambda: len(_serials(pump)) == 2, 10)
        sim.go_down()
        await async_wait_until(lambda: any(isinstance(r, DeviceOffline) for r in pump.readings), 10)
        sim.history.clear()  # a factory reset: log gone, numbers from 1
        sim.serial = 0
        new = [sim.raise_event(codec.MINOR_DOOR_CLOSE_NORMAL) for _ in range(2)]
        sim.come_up()
        await async_wait_until(lambda: len(_serials(pump)) == 4, 15)
        live = sim.raise_event(codec.MINOR_DOOR_OPEN_NORMAL)
        await async_wait_until(lambda: len(_serials(pump)) == 5, 10)
    assert _serials(pump) == [str(s) for s in [*old, *new, live]] and new == [1, 2]
    assert driver.counters["serial_reset"] == 1
    assert driver.acknowledged is not None and driver.acknowledged[0] == live


@sync
async def test_the_mark_moves_only_when_every_reading_of_an_event_is_acknowledged(tmp_path: Path) -> None:
    config = _config()
    sim = IsapiSimulator.from_config(config)
    sim.users["S1"] = SimUser("S1", "One")
    sim.cards["42"] = "S1"
    driver = HikvisionDriver.from_config(config, simulator=sim, state_dir=tmp_path)
    async with running(driver, ack=False) as pump:
        await _online(pump)
        mark = driver.acknowledged
        serial = sim.present_card("42", attendance_status="checkOut")
        await async_wait_until(lambda: len(pump.records) == 2, 10)
        access, attendance = pump.records
        assert isinstance(attendance, TerminalAttendance) and attendance.punch == "check_out"
        driver.acknowledge(access)
        assert driver.acknowledged == mark  # the attendance record is not committed yet
        driver.acknowledge(attendance)
        assert driver.acknowledged is not None and driver.acknowledged[0] == serial
    reopened = HikvisionDriver.from_config(config, state_dir=tmp_path)
    assert reopened.acknowledged == driver.acknowledged


@sync
async def test_a_silent_stream_is_given_up_and_reconnected(tmp_path: Path) -> None:
    config = _config(heartbeat_timeout_s=0.5)
    sim = IsapiSimulator.from_config(config)
    driver = HikvisionDriver.from_config(config, simulator=sim, state_dir=tmp_path)
    async with running(driver) as pump:
        await _online(pump)
        sim.heartbeat_s = 3600.0  # the terminal hangs: no heartbeat, no event, the socket stays open
        sim.send_heartbeat()
        await _online(pump, 2)
        serial = sim.raise_event(codec.MINOR_DOOR_OPEN_NORMAL)
        await async_wait_until(lambda: _serials(pump) == [str(serial)], 10)
    offline = [r for r in pump.readings if isinstance(r, DeviceOffline)]
    assert offline and offline[0].reason.startswith("ReadTimeout")
    assert sim.streams_opened >= 2
