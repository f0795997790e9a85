"""``edge-agent cameras discover`` against the simulated camera: WS-Discovery (unicast to its UDP
port, and multicast where this host loops it back), then profiles and stream URIs through
onvif-zeep-async, printed as a snippet that ``edge-agent config check`` accepts."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from device_drivers.onvif.codec import ProbeMatch, build_probe_matches, parse_probe
from device_drivers.onvif.discovery import describe, discover
from device_drivers.onvif.sim import OnvifSimulator
from edge_agent.config import load_config

PASSWORD = "disc-pw-123"
HEADER = """gateway: {site: disc-site, id: gw-disc, timezone: UTC}
mqtt: {url: "mqtt://127.0.0.1:1883"}
"""


async def cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "EDGE_AGENT_CAM_PW": PASSWORD}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_discover_prints_a_snippet_that_config_check_accepts(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[OnvifSimulator], int, str, str]:
        # Two cameras of the same name (as a batch installed from one template): unique ids.
        hall = OnvifSimulator(password=PASSWORD, name="Hall Cam 2", location="Block B")
        twin = OnvifSimulator(password=PASSWORD, name="Hall Cam 2", endpoint="urn:uuid:twin-0002")
        async with hall, twin:
            rc, out, err = await cli(
                "cameras", "discover", "--no-multicast",
                "--target", f"127.0.0.1:{hall.discovery_port}",
                "--target", f"127.0.0.1:{twin.discovery_port}",
                "--timeout", "1", "--user", "admin", "--password-credential", "cam_pw",
            )  # fmt: skip
            return [hall, twin], rc, out, err

    (hall, twin), rc, out, err = asyncio.run(scenario())
    assert rc == 0, err
    assert "# 2 ONVIF device(s) answered" in out
    assert "found Hall Cam 2 (SIM-CAM-1, Block B)" in out
    assert f'url: "rtsp://127.0.0.1:554{hall.profiles[0].path}"' in out  # main: 1920x1080
    assert f"sub-stream 640x360 (SubStream): rtsp://127.0.0.1:554{hall.profiles[1].path}" in out
    assert PASSWORD not in out and PASSWORD not in err
    assert out.count("password_credential: cam_pw") == 2
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(HEADER + out)
    check = asyncio.run(cli("config", "check", str(config_file)))
    assert check[0] == 0, check
    config = load_config(config_file)
    assert [c.device.id for c in config.cameras] == ["hall-cam-2", "hall-cam-2-2"]
    assert all(c.device.url.endswith("/101") for c in config.cameras)  # type: ignore[union-attr]
    ports = {d.id: d.port for d in config.devices if d.kind == "onvif"}
    assert ports == {"hall-cam-2-events": hall.port, "hall-cam-2-2-events": twin.port}


def test_discover_with_a_wrong_password_says_so(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, str, str]:
        async with OnvifSimulator(password="other") as sim:
            return await cli(
                "cameras", "discover", "--no-multicast", "--target", f"127.0.0.1:{sim.discovery_port}",
                "--timeout", "1", "--user", "admin", "--password-credential", "cam_pw",
            )  # fmt: skip

    rc, out, err = asyncio.run(scenario())
    assert rc == 0  # the camera was found; describing it failed
    assert "NotAuthorized" in err
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(HEADER + out)
    assert asyncio.run(cli("config", "check", str(config_file)))[0] == 0


class _Noise(asyncio.DatagramProtocol):
    """Answers every probe with garbage, a ProbeMatches for another probe, and a DTD bomb."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        probe = parse_probe(data)
        self.transport.sendto(b"\xff\xfe not xml at all", addr)
        self.transport.sendto(build_probe_matches("urn:uuid:other", [ProbeMatch("urn:uuid:x", ())]), addr)
        self.transport.sendto(b'<!DOCTYPE a [<!ENTITY b "c">]><a>&b;</a>', addr)
        assert probe.message_id


def test_discovery_ignores_and_counts_garbage() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        noise, _ = await loop.create_datagram_endpoint(_Noise, local_addr=("127.0.0.1", 0))
        try:
            async with OnvifSimulator() as sim:
                found = await discover(
                    1.0,
                    targets=(
                        ("127.0.0.1", noise.get_extra_info("sockname")[1]),
                        ("127.0.0.1", sim.discovery_port),
                    ),
                    multicast=False,
                )
                assert [m.endpoint for m, _ in found.devices] == [sim.endpoint]
                assert found.counters["ignored_garbage"] == 1
                assert found.counters["ignored_bad_data"] == 2  # another probe's answer, the DTD
                description = await describe(found.devices[0][0], None, None)
                assert description.error is None
                assert description.main is not None and (description.main.width, description.main.height) == (
                    1920,
                    1080,
                )
                assert description.sub is not None and description.sub.height == 360
        finally:
            noise.close()

    asyncio.run(scenario())


def test_multicast_probe_finds_the_camera() -> None:
    async def scenario() -> None:
        async with OnvifSimulator(multicast=True) as sim:
            if not sim.multicast_joined:
                pytest.skip("this host cannot join 239.255.255.250:3702")
            found = await discover(1.5)
            endpoints = [m.endpoint for m, _ in found.devices]
            if not endpoints and sim.counters.get("probes", 0) == 0:
                pytest.skip("multicast does not loop back on this host")
            assert sim.endpoint in endpoints
            (match,) = [m for m, _ in found.devices if m.endpoint == sim.endpoint]
            assert match.device_service == sim.device_service

    asyncio.run(scenario())
