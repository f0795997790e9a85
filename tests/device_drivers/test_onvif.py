"""ONVIF events driver against the simulated camera, through onvif-zeep-async's own client: the
PullPoint subscription, motion and tamper topics, the clock, bad login, malformed SOAP and a cut
link. Plus the sans-I/O WS-Discovery codec."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_drivers.errors import MalformedFrame
from device_drivers.onvif.codec import (
    EventMessage,
    ProbeMatch,
    build_probe,
    build_probe_matches,
    classify,
    parse_probe,
    parse_probe_matches,
)
from device_drivers.onvif.config import OnvifConfig
from device_drivers.onvif.driver import OnvifEventsDriver, probe_onvif
from device_drivers.onvif.sim import OnvifSimulator
from device_drivers.readings import DeviceOffline, DeviceOnline, DeviceTamper, MotionDetected, Reading
from tests.support.wait import async_wait_until

PASSWORD = "s3cret-pw"


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_CAM_PW", PASSWORD)
    monkeypatch.setenv("EDGE_AGENT_WRONG_PW", "not-the-password")


def config(sim: OnvifSimulator, **extra: Any) -> OnvifConfig:
    fields: dict[str, Any] = {
        "kind": "onvif",
        "id": "cam-1",
        "host": "127.0.0.1",
        "port": sim.port,
        "username": "admin",
        "password_credential": "cam_pw",
        "pull_timeout_s": 1.0,
        "timeout_s": 3.0,
        "backoff": {"initial_s": 0.05, "max_s": 0.2},
    }
    fields.update(extra)
    return OnvifConfig.model_validate(fields)


class Reader:
    """Collects a driver's readings in a task."""

    def __init__(self, driver: OnvifEventsDriver) -> None:
        self.driver = driver
        self.readings: list[Reading] = []
        self.task = asyncio.create_task(self._collect(driver.readings()))

    async def _collect(self, readings: AsyncIterator[Reading]) -> None:
        async for reading in readings:
            self.readings.append(reading)

    def of(self, kind: type) -> list[Any]:
        return [r for r in self.readings if isinstance(r, kind)]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_motion_and_tamper_topics_become_readings() -> None:
    async def scenario() -> None:
        async with OnvifSimulator(password=PASSWORD) as sim:
            async with OnvifEventsDriver.from_config(config(sim)) as driver:  # the sim outlives it
                reader = Reader(driver)
                await async_wait_until(lambda: reader.of(DeviceOnline), what="online")
                await async_wait_until(lambda: sim.subscriptions == 1, what="subscribed")
                sim.raise_motion(True)
                sim.raise_motion(False)
                sim.raise_motion(True, alarm=True)
                sim.raise_tamper(True)
                sim.raise_tamper(False, scene_change=True)
                sim.raise_event("tns1:Device/Trigger/DigitalInput", {"LogicalState": "true"})
                sim.raise_event("tns1:RuleEngine/CellMotionDetector/Motion", {"IsMotion": "maybe"})
                await async_wait_until(lambda: len(reader.of(DeviceTamper)) == 2, what="tampers")
                await async_wait_until(lambda: driver.counters.get("malformed_events") == 1, what="bad item")
                motion = reader.of(MotionDetected)
                assert [(m.active, m.topic) for m in motion] == [
                    (True, "RuleEngine/CellMotionDetector/Motion"),
                    (False, "RuleEngine/CellMotionDetector/Motion"),
                    (True, "VideoSource/MotionAlarm"),
                ]
                assert [(t.tampered, t.power_failure) for t in reader.of(DeviceTamper)] == [
                    (True, False),
                    (False, False),
                ]
                assert driver.counters["ignored_topics"] == 1
                assert driver.counters["notifications"] == 7
                assert driver.clock_skew_s is not None and abs(driver.clock_skew_s) <= 2
            # leaving unsubscribes
            assert sim.counters.get("op_Unsubscribe") == 1
            assert sim.subscriptions == 0

    run(scenario())


def test_an_older_camera_without_get_services_works_through_get_capabilities() -> None:
    async def scenario() -> None:
        async with OnvifSimulator(password=PASSWORD) as sim:
            sim.get_services = False
            async with OnvifEventsDriver.from_config(config(sim)) as driver:
                reader = Reader(driver)
                await async_wait_until(lambda: sim.subscriptions == 1, what="subscribed")
                sim.raise_motion(True)
                await async_wait_until(lambda: reader.of(MotionDetected), what="motion")
                assert sim.counters["op_GetCapabilities"] >= 1

    run(scenario())


def test_topic_filter_keeps_only_the_named_topics() -> None:
    async def scenario() -> None:
        async with OnvifSimulator(password=PASSWORD) as sim:
            cfg = config(sim, topics=["tns1:RuleEngine/TamperDetector/Tamper"])
            async with OnvifEventsDriver.from_config(cfg) as driver:
                reader = Reader(driver)
                await async_wait_until(lambda: sim.subscriptions == 1, what="subscribed")
                sim.raise_motion(True)
                sim.raise_tamper(True)
                await async_wait_until(lambda: reader.of(DeviceTamper), what="tamper")
                assert reader.of(MotionDetected) == []
                assert driver.counters["filtered_topics"] == 1

    run(scenario())


def test_subscription_is_renewed() -> None:
    async def scenario() -> None:
        # renewed at half the termination time: 5 s with the shortest subscription allowed
        async with (
            OnvifSimulator(password=PASSWORD) as sim,
            OnvifEventsDriver.from_config(config(sim, subscription_s=10)) as driver,
        ):
            await async_wait_until(lambda: driver.counters.get("renewals", 0) >= 1, 20, what="renewed")
            assert sim.counters["op_Renew"] >= 1
            assert driver.counters["sessions"] == 1

    run(scenario())


def test_wrong_password_goes_offline_with_a_clear_reason_and_counts() -> None:
    async def scenario() -> None:
        async with (
            OnvifSimulator(password=PASSWORD) as sim,
            OnvifEventsDriver.from_config(config(sim, password_credential="wrong_pw")) as driver,
        ):
            reader = Reader(driver)
            await async_wait_until(lambda: driver.counters.get("auth_failures", 0) >= 2, what="retries")
            offline = reader.of(DeviceOffline)
            assert len(offline) == 1  # reported once, retried quietly
            assert "not authorized" in offline[0].reason and "NotAuthorized" in offline[0].reason
            assert reader.of(DeviceOnline) == []
            assert sim.counters["auth_failures"] >= 2
            # the password is fixed on the camera's side: the driver comes back by itself
            sim.password = "not-the-password"
            await async_wait_until(lambda: reader.of(DeviceOnline), what="online")

    run(scenario())


def test_a_missing_credential_is_an_offline_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_AGENT_CAM_PW")

    async def scenario() -> None:
        async with (
            OnvifSimulator(password=PASSWORD) as sim,
            OnvifEventsDriver.from_config(config(sim)) as driver,
        ):
            reader = Reader(driver)
            await async_wait_until(lambda: reader.of(DeviceOffline), what="offline")
            assert "EDGE_AGENT_CAM_PW" in reader.of(DeviceOffline)[0].reason
            assert driver.counters["credential_errors"] >= 1
            monkeypatch.setenv("EDGE_AGENT_CAM_PW", PASSWORD)  # installed late
            await async_wait_until(lambda: reader.of(DeviceOnline), what="online")

    run(scenario())


def test_http_401_is_a_refused_login_too() -> None:
    async def scenario() -> None:
        async with OnvifSimulator(password=PASSWORD) as sim:
            sim.unauthorized_as_http = True
            async with OnvifEventsDriver.from_config(config(sim, password_credential="wrong_pw")) as driver:
                reader = Reader(driver)
                await async_wait_until(lambda: reader.of(DeviceOffline), what="offline")
                assert driver.counters["auth_failures"] >= 1
                assert "HTTP 401" in reader.of(DeviceOffline)[0].reason

    run(scenario())


def test_camera_clock_skew_is_measured_and_digests_follow_its_clock() -> None:
    async def scenario() -> None:
        async with OnvifSimulator(password=PASSWORD, clock_skew_s=3600) as sim:
            async with OnvifEventsDriver.from_config(config(sim)) as driver:
                reader = Reader(driver)
                await async_wait_until(lambda: reader.of(DeviceOnline), what="online with adjust_time")
                assert driver.clock_skew_s is not None and 3598 <= abs(driver.clock_skew_s) <= 3602
                assert driver.counters["clock_skew_warnings"] == 1
            async with OnvifEventsDriver.from_config(config(sim, adjust_time=False)) as driver:
                reader = Reader(driver)
                await async_wait_until(lambda: driver.counters.get("auth_failures"), what="refused")
                assert reader.of(DeviceOnline) == []

    run(scenario())


def test_malformed_soap_is_counted_and_the_driver_goes_on() -> None:
    async def scenario() -> None:
        async with (
            OnvifSimulator(password=PASSWORD) as sim,
            OnvifEventsDriver.from_config(config(sim)) as driver,
        ):
            reader = Reader(driver)
            await async_wait_until(lambda: sim.subscriptions == 1, what="subscribed")
            sim.garble(1)  # the next PullMessages answer is not XML
            await async_wait_until(lambda: driver.counters.get("malformed_soap") == 1, what="counted")
            await async_wait_until(lambda: driver.counters.get("sessions") == 2, what="new session")
            await async_wait_until(lambda: sim.subscriptions >= 1, what="subscribed again")
            sim.raise_motion(True)
            await async_wait_until(lambda: reader.of(MotionDetected), what="motion after garbage")
            assert [type(r).__name__ for r in reader.readings][:3] == [
                "DeviceOnline",
                "DeviceOffline",
                "DeviceOnline",
            ]
            assert "malformed SOAP" in reader.of(DeviceOffline)[0].reason

    run(scenario())


def test_soap_of_the_wrong_shape_is_malformed_too() -> None:
    async def scenario() -> None:
        async with (
            OnvifSimulator(password=PASSWORD) as sim,
            OnvifEventsDriver.from_config(config(sim)) as driver,
        ):
            reader = Reader(driver)
            await async_wait_until(lambda: sim.subscriptions == 1, what="subscribed")
            sim.garble(1, well_formed=True)
            await async_wait_until(lambda: driver.counters.get("malformed_soap") == 1, what="counted")
            await async_wait_until(lambda: driver.counters.get("sessions") == 2, what="new session")
            assert "SOAP answer" in reader.of(DeviceOffline)[0].reason

    run(scenario())


def test_cut_link_goes_offline_and_reconnects() -> None:
    async def scenario() -> None:
        async with (
            OnvifSimulator(password=PASSWORD) as sim,
            OnvifEventsDriver.from_config(config(sim)) as driver,
        ):
            reader = Reader(driver)
            await async_wait_until(lambda: sim.subscriptions == 1, what="subscribed")
            sim.cut()
            await async_wait_until(lambda: reader.of(DeviceOffline), what="offline")
            assert driver.counters["connection_errors"] >= 1
            sim.restore()
            await async_wait_until(lambda: len(reader.of(DeviceOnline)) == 2, what="back online")
            await async_wait_until(lambda: driver.counters.get("sessions") == 2, what="new session")
            sim.raise_motion(True)
            await async_wait_until(lambda: reader.of(MotionDetected), what="motion after the cut")

    run(scenario())


def test_simulated_device_runs_its_own_simulator() -> None:
    async def scenario() -> None:
        from device_drivers.registry import open_driver

        cfg = OnvifConfig.model_validate(
            {"kind": "onvif", "id": "cam-sim", "simulated": True, "pull_timeout_s": 1.0}
        )
        driver = open_driver(cfg)
        assert isinstance(driver, OnvifEventsDriver)
        async with driver:
            reader = Reader(driver)
            await async_wait_until(lambda: reader.of(DeviceOnline), what="online")
            sim = driver.simulator
            assert isinstance(sim, OnvifSimulator)
            await async_wait_until(lambda: sim.subscriptions == 1, what="subscribed")
            sim.raise_motion(True)
            await async_wait_until(lambda: reader.of(MotionDetected), what="motion")

    run(scenario())


def test_probe_reports_reachable_clock_authenticated_events() -> None:
    async def scenario() -> None:
        async with OnvifSimulator(password=PASSWORD, clock_skew_s=-120) as sim:
            good = {r.check: r for r in await probe_onvif(config(sim))}
            assert good["reachable"].status == "ok"
            assert good["clock"].status == "warn" and "-12" in good["clock"].detail
            assert good["authenticated"].status == "ok" and "SimVision" in good["authenticated"].detail
            assert good["events"].status == "ok"
            bad = {r.check: r for r in await probe_onvif(config(sim, password_credential="wrong_pw"))}
            assert bad["reachable"].status == "ok"
            assert bad["authenticated"].status == "fail" and "NotAuthorized" in bad["authenticated"].detail
        gone = await probe_onvif(config(sim, timeout_s=1.0))
        assert [(r.check, r.status) for r in gone] == [("reachable", "fail")]

    run(scenario())


def test_probe_round_trip_and_fresh_message_ids() -> None:
    mid1, probe1 = build_probe()
    mid2, _ = build_probe()
    assert mid1 != mid2 and mid1.startswith("urn:uuid:")
    parsed = parse_probe(probe1)
    assert parsed.message_id == mid1
    assert parsed.types == ("dn:NetworkVideoTransmitter", "tds:Device")


def test_probe_matches_round_trip_and_scopes() -> None:
    match = ProbeMatch(
        endpoint="urn:uuid:1",
        xaddrs=("http://10.0.0.5/onvif/device_service", "http://[fe80::1]/onvif/device_service"),
        scopes=("onvif://www.onvif.org/name/Hall%20Cam%20%231", "onvif://www.onvif.org/location/Block%20B"),
        types=("dn:NetworkVideoTransmitter",),
        metadata_version=3,
    )
    data = build_probe_matches("urn:uuid:probe", [match])
    (back,) = parse_probe_matches(data, relates_to="urn:uuid:probe")
    assert back == match
    assert back.name == "Hall Cam #1" and back.location == "Block B" and back.hardware is None
    with pytest.raises(MalformedFrame) as other:
        parse_probe_matches(data, relates_to="urn:uuid:another")
    assert other.value.code == "bad_data"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x01garbage", "garbage"),
        (b"<a>" * 10, "garbage"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "bad_data"),
        (b"<x>" + b"a" * 70000 + b"</x>", "bad_length"),
        (build_probe()[1], "unknown_code"),
    ],
)
def test_bad_discovery_datagrams_are_refused(data: bytes, code: str) -> None:
    with pytest.raises(MalformedFrame) as err:
        parse_probe_matches(data)
    assert err.value.code == code


def test_topics_map_to_kinds_and_bad_states_are_errors() -> None:
    motion = classify("tns1:RuleEngine/CellMotionDetector/Motion", EventMessage({"IsMotion": "true"}))
    assert motion is not None and (motion.kind, motion.active) == ("motion", True)
    scene = classify("tns1:VideoSource/GlobalSceneChange/ImagingService", EventMessage({"State": "0"}))
    assert scene is not None and (scene.kind, scene.active) == ("tamper", False)
    assert classify("tns1:Device/Trigger/DigitalInput", EventMessage({"LogicalState": "true"})) is None
    with pytest.raises(ValueError, match="no IsTamper"):
        classify("tns1:RuleEngine/TamperDetector/Tamper", EventMessage({"State": "true"}))
    assert datetime.now(UTC)  # keeps the import honest for readers of the timestamps above


_token = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1)


@given(
    endpoint=_token,
    xaddrs=st.lists(_token, max_size=3),
    scopes=st.lists(_token, max_size=5),
    version=st.integers(0, 10**6),
)
def test_probe_matches_round_trip_any_text(
    endpoint: str, xaddrs: list[str], scopes: list[str], version: int
) -> None:
    match = ProbeMatch(endpoint, tuple(xaddrs), tuple(scopes), ("dn:NetworkVideoTransmitter",), version)
    (back,) = parse_probe_matches(build_probe_matches("urn:uuid:p", [match]), relates_to="urn:uuid:p")
    assert back == match


def test_a_flood_of_notifications_nobody_reads_is_dropped_and_counted() -> None:
    async def scenario() -> None:
        async with OnvifSimulator(password=PASSWORD) as sim:
            driver = OnvifEventsDriver.from_config(config(sim))
            driver.queue_size = 50
            async with driver:
                await async_wait_until(lambda: sim.subscriptions == 1, what="subscribed")
                for i in range(500):
                    sim.raise_motion(i % 2 == 0)
                await async_wait_until(lambda: driver.counters.get("motion") == 500, what="all pulled")
                assert driver.counters["dropped_readings"] >= 500 - 50
                # still running: a new event after the flood is pulled too
                sim.raise_tamper(True)
                await async_wait_until(lambda: driver.counters.get("tamper") == 1, what="after the flood")
                assert driver.online

    run(scenario())
