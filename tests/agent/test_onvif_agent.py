"""An ONVIF camera's events through the whole agent: the simulated camera (SOAP over HTTP, digest
login checked), onvif-zeep-async in the driver, the router, outbox and link, to a real Mosquitto.
Motion and tamper become device.motion / device.tamper; a refused login, malformed SOAP and a cut
link become offline/online events with their reasons, and counters in the metrics."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from device_drivers.onvif.sim import OnvifSimulator
from edge_agent.config import parse_config
from edge_agent.doctor import Status, probe_network_devices
from edge_agent.metrics import GatewayCollector
from sync.contract import validate_event
from tests.conftest import MosquittoBroker
from tests.mqtt_helpers import Collector
from tests.support.agent_harness import build_gateway
from tests.support.wait import async_wait_until

SITE, GW = "cam-site", "gw-cam"
PASSWORD = "hall-cam-pw"


def config_text(tmp_path: Path, url: str, port: int) -> str:
    return f"""
gateway: {{site: {SITE}, id: {GW}, timezone: UTC}}
agent: {{data_dir: {tmp_path / "data"}, shutdown_timeout_s: 3}}
mqtt: {{url: "{url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5}}
devices:
  - kind: onvif
    id: hall-cam-events
    host: 127.0.0.1
    port: {port}
    username: admin
    password_credential: hall_cam_password
    pull_timeout_s: 1
    timeout_s: 3
    backoff: {{initial_s: 0.05, max_s: 0.3}}
"""


def events(collector: Collector, event_type: str) -> list[dict[str, Any]]:
    return [m.json() for m in collector.snapshot("/events/") if m.json()["type"] == event_type]


def test_onvif_events_end_to_end(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_HALL_CAM_PASSWORD", PASSWORD)
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario() -> None:
        # The camera's password is not yet the one in the credential: the login is refused.
        async with OnvifSimulator(password="factory-default") as sim:
            agent = build_gateway(
                parse_config(config_text(tmp_path, mosquitto.url, sim.port)), data_dir=tmp_path / "data"
            )
            task = asyncio.create_task(agent.run())
            try:
                await async_wait_until(
                    lambda: events(collector, "edu.campus.device.offline.v1"), 30, what="offline: bad login"
                )
                driver = agent.devices.drivers["hall-cam-events"]
                assert driver.counters["auth_failures"] >= 1
                sim.password = PASSWORD  # the installer fixes the camera's password
                await async_wait_until(
                    lambda: events(collector, "edu.campus.device.online.v1"), 30, what="online"
                )
                await async_wait_until(lambda: sim.subscriptions == 1, what="subscribed")

                sim.raise_motion(True)
                sim.raise_motion(False)
                sim.raise_tamper(True)
                await async_wait_until(
                    lambda: events(collector, "edu.campus.device.tamper.v1"), 30, what="tamper event"
                )
                await async_wait_until(
                    lambda: len(events(collector, "edu.campus.device.motion.v1")) == 2, 30, what="motion"
                )

                sim.garble(1)
                await async_wait_until(lambda: driver.counters.get("malformed_soap") == 1, what="garbled")
                await async_wait_until(
                    lambda: len(events(collector, "edu.campus.device.online.v1")) == 2, 30, what="online 2"
                )

                sim.cut()
                await async_wait_until(
                    lambda: len(events(collector, "edu.campus.device.offline.v1")) == 3, 30, what="cut"
                )
                sim.restore()
                await async_wait_until(
                    lambda: len(events(collector, "edu.campus.device.online.v1")) == 3, 30, what="online 3"
                )
                await async_wait_until(lambda: sim.subscriptions >= 1, what="subscribed again")
                sim.raise_motion(True)
                await async_wait_until(
                    lambda: len(events(collector, "edu.campus.device.motion.v1")) == 3, 30, what="motion 3"
                )

                registry = CollectorRegistry()
                assert agent.services is not None
                registry.register(GatewayCollector(agent.services))
                labels = {"device": "hall-cam-events", "name": "auth_failures"}
                value = registry.get_sample_value("edge_device_events_total", labels)
                assert value is not None and value >= 1
            finally:
                agent.request_stop("test")
                await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    collector.close()
    all_events = [m.json() for m in collector.snapshot("/events/")]
    for event in all_events:
        validate_event(event)
    motion = events(collector, "edu.campus.device.motion.v1")
    assert [(e["data"]["device"], e["data"]["active"]) for e in motion] == [
        ("hall-cam-events", True),
        ("hall-cam-events", False),
        ("hall-cam-events", True),
    ]
    assert motion[0]["data"]["topic"] == "RuleEngine/CellMotionDetector/Motion"
    (tamper,) = events(collector, "edu.campus.device.tamper.v1")
    assert tamper["data"]["tampered"] is True and tamper["data"]["kind"] == "onvif"
    assert collector.snapshot("/alerts/"), "a tamper is an alert"
    offline = events(collector, "edu.campus.device.offline.v1")
    assert "not authorized" in offline[0]["data"]["reason"]
    assert "malformed SOAP" in offline[1]["data"]["reason"]
    assert offline[2]["data"]["reason"].startswith(("connection", "timed out"))


def test_simulated_camera_through_the_agent(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    text = f"""
gateway: {{site: {SITE}, id: {GW}, timezone: UTC}}
agent: {{data_dir: {tmp_path / "data"}, shutdown_timeout_s: 3}}
mqtt: {{url: "{mosquitto.url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5}}
devices:
  - {{kind: onvif, id: sim-cam, simulated: true, pull_timeout_s: 1}}
"""

    async def scenario() -> None:
        agent = build_gateway(parse_config(text), data_dir=tmp_path / "data")
        task = asyncio.create_task(agent.run())
        try:
            await async_wait_until(
                lambda: events(collector, "edu.campus.device.online.v1"), 30, what="online"
            )
            sim = agent.devices.drivers["sim-cam"].simulator  # type: ignore[union-attr]
            assert isinstance(sim, OnvifSimulator)
            await async_wait_until(lambda: sim.subscriptions == 1, what="subscribed")
            sim.raise_motion(True, alarm=True)
            await async_wait_until(
                lambda: events(collector, "edu.campus.device.motion.v1"), 30, what="motion"
            )
        finally:
            agent.request_stop("test")
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    collector.close()
    (motion,) = events(collector, "edu.campus.device.motion.v1")
    validate_event(motion)
    assert motion["data"] == {"device": "sim-cam", "active": True, "topic": "VideoSource/MotionAlarm"}


def test_doctor_probes_the_camera(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "hall_cam_password").write_text(PASSWORD + "\n")
    loop = asyncio.new_event_loop()
    sim = OnvifSimulator(password=PASSWORD, clock_skew_s=90)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(sim.start(), loop).result(30)
    try:
        config = parse_config(config_text(tmp_path, "mqtt://127.0.0.1:1883", sim.port))
        results = {r.name: r for r in probe_network_devices(config, credentials)}
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    prefix = "device hall-cam-events"
    assert results[f"{prefix} reachable"].status is Status.OK
    clock = results[f"{prefix} clock"]
    skew = re.search(r"camera clock ([+-][0-9.]+) s", clock.detail)
    assert (
        clock.status is Status.WARN and skew is not None and 88 <= float(skew.group(1)) <= 91
    )  # whole seconds
    assert results[f"{prefix} authenticated"].status is Status.OK
    assert results[f"{prefix} events"].status is Status.OK
