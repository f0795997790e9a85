"""Finding ONVIF cameras and describing them: WS-Discovery over UDP (multicast on the segment,
and unicast to given ``host:port`` targets), then per camera, through ``onvif-zeep-async``,
``GetDeviceInformation``, ``GetProfiles`` and ``GetStreamUri`` (main stream: the highest
resolution; sub-stream: the lowest), and a config snippet to paste.

The snippet names the password only by its credential (``password_credential``), never itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from onvif import ONVIFCamera

from device_drivers.errors import DeviceError, MalformedFrame
from device_drivers.onvif.codec import (
    DISCOVERY_PORT,
    MAX_DATAGRAM,
    MULTICAST_GROUP,
    ProbeMatch,
    build_probe,
    parse_probe_matches,
)
from device_drivers.onvif.driver import RECOVERABLE, explain

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class DiscoveryResult:
    """The devices that answered (one per endpoint, in answer order) and what was dropped."""

    devices: list[tuple[ProbeMatch, str]] = field(default_factory=list)
    """``(match, sender address)``."""
    counters: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, message_id: str, result: DiscoveryResult) -> None:
        self.message_id = message_id
        self.result = result
        self.seen: set[str] = set()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.result.count("datagrams")
        try:
            matches = parse_probe_matches(data[:MAX_DATAGRAM], relates_to=self.message_id)
        except MalformedFrame as err:
            self.result.count(f"ignored_{err.code}")
            logger.debug("discovery: ignored a datagram from %s: %s", addr[0], err)
            return
        for match in matches:
            if match.endpoint not in self.seen:
                self.seen.add(match.endpoint)
                self.result.devices.append((match, str(addr[0])))

    def error_received(self, exc: Exception) -> None:
        self.result.count("socket_errors")
        self.result.errors.append(str(exc))


def parse_target(text: str) -> tuple[str, int]:
    """``host:port`` (port defaults to 3702)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, DISCOVERY_PORT
    if not port.isdigit():
        raise ValueError(f"target {text!r}: port must be a number")
    return host.strip("[]"), int(port)


async def discover(
    timeout_s: float = 3.0,
    *,
    interface: str | None = None,
    targets: tuple[tuple[str, int], ...] = (),
    multicast: bool = True,
) -> DiscoveryResult:
    """Send one Probe (to the multicast group and/or each target) and collect ProbeMatches for
    ``timeout_s``. ``interface`` is the local IPv4 address to send the multicast from."""
    message_id, probe = build_probe()
    result = DiscoveryResult()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.bind((interface or "0.0.0.0", 0))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    if interface:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Collector(message_id, result), sock=sock)
    try:
        destinations = [*targets, *([(MULTICAST_GROUP, DISCOVERY_PORT)] if multicast else [])]
        for destination in destinations:
            try:
                transport.sendto(probe, destination)
                result.count("probes_sent")
            except OSError as err:
                result.count("send_errors")
                result.errors.append(f"cannot send to {destination[0]}:{destination[1]}: {err}")
        await asyncio.sleep(timeout_s)  # WS-Discovery has no end of answers: listen for the window
    finally:
        transport.close()
    return result


@dataclass(frozen=True, slots=True)
class StreamProfile:
    token: str
    name: str
    width: int
    height: int
    uri: str | None


@dataclass(slots=True)
class CameraDescription:
    """What a camera told us: its identity, service address and stream profiles."""

    match: ProbeMatch
    host: str
    port: int
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    profiles: list[StreamProfile] = field(default_factory=list)
    error: str | None = None

    @property
    def main(self) -> StreamProfile | None:
        """The highest-resolution profile with a stream URI."""
        usable = [p for p in self.profiles if p.uri]
        return max(usable, key=lambda p: p.width * p.height, default=None)

    @property
    def sub(self) -> StreamProfile | None:
        """The lowest-resolution profile with a stream URI, when it is not the main one."""
        usable = [p for p in self.profiles if p.uri]
        low = min(usable, key=lambda p: p.width * p.height, default=None)
        return low if low is not None and low is not self.main else None


def service_address(match: ProbeMatch) -> tuple[str, int]:
    xaddr = match.device_service
    if xaddr is None:
        raise DeviceError(f"{match.endpoint} gives no HTTP service address", code="no_xaddr")
    parts = urlsplit(xaddr)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


async def describe(
    match: ProbeMatch, username: str | None, password: str | None, *, timeout_s: float = 10.0
) -> CameraDescription:
    """Ask the camera for its identity and profiles; a failure is kept in ``error``."""
    host, port = service_address(match)
    description = CameraDescription(match, host, port)
    camera = ONVIFCamera(host, port, username or "", password or "", no_cache=True, adjust_time=True)
    try:
        await asyncio.wait_for(camera.update_xaddrs(), timeout_s)
        devicemgmt = await camera.create_devicemgmt_service()
        info = await asyncio.wait_for(devicemgmt.GetDeviceInformation(), timeout_s)
        description.manufacturer, description.model = info.Manufacturer, info.Model
        description.firmware, description.serial = info.FirmwareVersion, info.SerialNumber
        media = await camera.create_media_service()
        for profile in await asyncio.wait_for(media.GetProfiles(), timeout_s) or []:
            encoder = getattr(profile, "VideoEncoderConfiguration", None)
            resolution = getattr(encoder, "Resolution", None)
            width = int(getattr(resolution, "Width", 0) or 0)
            height = int(getattr(resolution, "Height", 0) or 0)
            uri = None
            with contextlib.suppress(*RECOVERABLE):
                answer = await asyncio.wait_for(
                    media.GetStreamUri(
                        {
                            "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                            "ProfileToken": profile.token,
                        }
                    ),
                    timeout_s,
                )
                uri = str(answer.Uri) if answer is not None and answer.Uri else None
            description.profiles.append(
                StreamProfile(str(profile.token), str(profile.Name or profile.token), width, height, uri)
            )
    except RECOVERABLE as raw:
        description.error = str(explain(raw))
    finally:
        with contextlib.suppress(*RECOVERABLE):
            await camera.close()
    return description


def slug(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return value or "camera"


def _yaml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def snippet(
    descriptions: CameraDescription | list[CameraDescription],
    *,
    username: str | None = None,
    password_credential: str | None = None,
) -> str:
    """One ``cameras:`` entry per camera (its main stream as the URL, the sub-stream in a comment)
    and one ``devices:`` entry (``kind: onvif``, its events), to paste into a gateway config. Ids
    come from the cameras' names, made unique. No password, only its credential's name."""
    items = descriptions if isinstance(descriptions, list) else [descriptions]
    ids: list[str] = []
    for description in items:
        match = description.match
        base = slug(match.name or match.hardware or description.host)
        cid, n = base, 2
        while cid in ids:
            cid, n = f"{base}-{n}", n + 1
        ids.append(cid)
    cameras, devices = ["cameras:"], ["devices:"]
    for cid, description in zip(ids, items, strict=True):
        match = description.match
        made = f"{description.manufacturer or '?'} {description.model or ''}".rstrip()
        cameras.append(f"  # {match.name or cid}: {made}; endpoint {match.endpoint}")
        main, sub = description.main, description.sub
        if main is None:
            cameras.append(f"  # no stream URI ({description.error or 'no usable profile'}): fill in url")
            url = _yaml_str("rtsp://" + description.host + "/")
            cameras.append(f"  - device: {{kind: camera, id: {cid}, url: {url}}}")
        else:
            cameras.append("  - device:")
            cameras.append("      kind: camera")
            cameras.append(f"      id: {cid}")
            size = f"{main.width}x{main.height}"
            cameras.append(f"      url: {_yaml_str(main.uri or '')}  # main stream {size} ({main.name})")
            if sub is not None:
                cameras.append(
                    f"      # sub-stream {sub.width}x{sub.height} ({sub.name}): {sub.uri}"
                    " (the camera config has no field for it yet)"
                )
        devices.append("  - kind: onvif")
        devices.append(f"    id: {cid}-events")
        devices.append(f"    host: {description.host}")
        devices.append(f"    port: {description.port}")
        if username:
            devices.append(f"    username: {_yaml_str(username)}")
        devices.append(
            f"    password_credential: {password_credential or cid.replace('-', '_') + '_password'}"
        )
    return "\n".join(cameras + devices) + "\n"


__all__ = [
    "CameraDescription",
    "DiscoveryResult",
    "StreamProfile",
    "describe",
    "discover",
    "parse_target",
    "service_address",
    "snippet",
]
