"""A simulated ONVIF camera: the device, media and events services as SOAP over HTTP (what
``onvif-zeep-async``'s client talks to, WS-Security UsernameToken digests checked), and a
WS-Discovery responder on UDP. Test and demo equipment, reached through the registry.

Events: :meth:`OnvifSimulator.raise_motion` / :meth:`raise_tamper` / :meth:`raise_event` queue a
notification that the next (long-polling) ``PullMessages`` returns. Faults: :attr:`password`
(change it to make the client's digest wrong), :meth:`garble` (the next answers are not XML),
:meth:`cut` / :meth:`restore` (every request's connection is dropped, as a cable pulled).

Demo traffic (the config's ``sim_motion_every_s`` / ``sim_tamper_every_s``): while it runs, the
camera raises motion (and tamper) by itself, on then off ``motion_s`` later, through the same
subscriptions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import socket
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from device_drivers.errors import MalformedFrame
from device_drivers.onvif.codec import (
    DISCOVERY_PORT,
    MULTICAST_GROUP,
    NS_SOAP,
    NS_TT,
    ProbeMatch,
    build_probe_matches,
    parse_probe,
    parse_xml,
)

logger = logging.getLogger(__name__)

NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS_DEVICE = "http://www.onvif.org/ver10/device/wsdl"
NS_MEDIA = "http://www.onvif.org/ver10/media/wsdl"
NS_EVENTS = "http://www.onvif.org/ver10/events/wsdl"
NS_WSNT = "http://docs.oasis-open.org/wsn/b-2"
NS_WSA5 = "http://www.w3.org/2005/08/addressing"

PRE_AUTH = {"GetSystemDateAndTime", "GetServices", "GetCapabilities", "GetServiceCapabilities"}
"""Operations ONVIF lets anyone call (Core spec, "PRE_AUTH" access class)."""

_NAMESPACES = (
    f'xmlns:s="{NS_SOAP}" xmlns:tt="{NS_TT}" xmlns:tds="{NS_DEVICE}" xmlns:trt="{NS_MEDIA}" '
    f'xmlns:tev="{NS_EVENTS}" xmlns:wsnt="{NS_WSNT}" xmlns:wsa5="{NS_WSA5}" '
    'xmlns:tns1="http://www.onvif.org/ver10/topics" xmlns:ter="http://www.onvif.org/ver10/error"'
)


@dataclass(frozen=True, slots=True)
class SimProfile:
    token: str
    name: str
    width: int
    height: int
    path: str


class _Subscription:
    def __init__(self, number: int, terminates: datetime) -> None:
        self.number = number
        self.terminates = terminates
        self.queue: list[str] = []
        self.wake = asyncio.Event()


class OnvifSimulator:
    """An ONVIF camera on 127.0.0.1 (HTTP on a free port; WS-Discovery on a free UDP port, and on
    the multicast group when ``multicast`` and the host allows it). ``password`` None: no login."""

    def __init__(
        self,
        *,
        username: str = "admin",
        password: str | None = None,
        name: str = "Sim Camera",
        hardware: str = "SIM-CAM-1",
        location: str = "Lab",
        endpoint: str = "urn:uuid:5f1b2c3d-0000-4000-8000-00000000ca01",
        clock_skew_s: float = 0.0,
        multicast: bool = False,
        rtsp_host: str = "127.0.0.1",
        motion_every_s: float | None = None,
        motion_s: float = 3.0,
        tamper_every_s: float | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.name, self.hardware, self.location, self.endpoint = name, hardware, location, endpoint
        self.clock_skew = timedelta(seconds=clock_skew_s)
        self.multicast = multicast
        self.rtsp_host = rtsp_host
        self.motion_every_s, self.motion_s, self.tamper_every_s = motion_every_s, motion_s, tamper_every_s
        self._demo: list[asyncio.Task[None]] = []
        self.profiles = [
            SimProfile("profile_main", "MainStream", 1920, 1080, "/Streaming/Channels/101"),
            SimProfile("profile_sub", "SubStream", 640, 360, "/Streaming/Channels/102"),
        ]
        self.counters: dict[str, int] = {}
        self.port = 0
        self.discovery_port = 0
        self.multicast_joined = False
        self.unauthorized_as_http = False
        self.get_services = True
        """False: an older camera without GetServices (clients fall back to GetCapabilities)."""
        """Refuse a login with a bare HTTP 401 (as cameras behind HTTP digest do), not a SOAP fault."""
        self._garble = 0
        self._garble_shape = False
        self._cut = False
        self._runner: web.AppRunner | None = None
        self._udp: list[asyncio.DatagramTransport] = []
        self._subscriptions: dict[int, _Subscription] = {}
        self._next_subscription = 1

    @classmethod
    def from_config(cls, config: Any) -> Self:
        """The simulator of an ``onvif`` device with ``simulated: true``: its login is the config's
        (``username``, the password from ``password_credential``); none when neither is set."""
        password = None
        if getattr(config, "password_credential", None):
            from device_drivers.secrets import load_password

            password = load_password(config.password_credential)
        return cls(
            username=getattr(config, "username", None) or "admin",
            password=password,
            motion_every_s=getattr(config, "sim_motion_every_s", None),
            motion_s=getattr(config, "sim_motion_s", 3.0),
            tamper_every_s=getattr(config, "sim_tamper_every_s", None),
        )

    @property
    def url(self) -> str:
        """Where the driver connects: ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def device_service(self) -> str:
        return f"{self.url}/onvif/device_service"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _DiscoveryResponder(self), local_addr=("127.0.0.1", self.discovery_port)
        )
        self.discovery_port = transport.get_extra_info("sockname")[1]
        self._udp.append(transport)
        if self.multicast:
            try:
                msock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
                msock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                with contextlib.suppress(AttributeError, OSError):
                    msock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                msock.bind(("", DISCOVERY_PORT))
                mreq = struct.pack("4s4s", socket.inet_aton(MULTICAST_GROUP), socket.inet_aton("0.0.0.0"))
                msock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                mtransport, _ = await loop.create_datagram_endpoint(
                    lambda: _DiscoveryResponder(self), sock=msock
                )
                self._udp.append(mtransport)
                self.multicast_joined = True
            except OSError as err:
                logger.warning(
                    "simulated camera: cannot join %s:%d: %s", MULTICAST_GROUP, DISCOVERY_PORT, err
                )
        if not self._demo:
            for every, raise_it, what in (
                (self.motion_every_s, self.raise_motion, "motion"),
                (self.tamper_every_s, self.raise_tamper, "tamper"),
            ):
                if every is not None:
                    self._demo.append(
                        asyncio.create_task(self._now_and_then(every, raise_it), name=f"demo-onvif-{what}")
                    )

    async def _now_and_then(self, every_s: float, raise_it: Callable[[bool], None]) -> None:
        """A detector firing every ``every_s`` (the first after that long), clearing ``motion_s`` later
        (at most half the period, so it always clears before it fires again)."""
        loop = asyncio.get_running_loop()
        fires_at = loop.time() + every_s
        while True:
            await asyncio.sleep(max(fires_at - loop.time(), 0.0))
            raise_it(True)
            await asyncio.sleep(min(self.motion_s, every_s / 2))
            raise_it(False)
            fires_at += every_s

    async def stop(self) -> None:
        demo, self._demo = self._demo, []
        for task in demo:
            task.cancel()
        for task in demo:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self._subscriptions.values():
            sub.wake.set()
        for transport in self._udp:
            transport.close()
        self._udp.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def raise_motion(self, active: bool, *, alarm: bool = False) -> None:
        """The camera's motion detector: ``RuleEngine/CellMotionDetector/Motion`` (``IsMotion``), or
        ``VideoSource/MotionAlarm`` (``State``) with ``alarm``."""
        if alarm:
            self.raise_event("tns1:VideoSource/MotionAlarm", {"State": _bool(active)})
        else:
            self.raise_event("tns1:RuleEngine/CellMotionDetector/Motion", {"IsMotion": _bool(active)})

    def raise_tamper(self, tampered: bool, *, scene_change: bool = False) -> None:
        """``RuleEngine/TamperDetector/Tamper`` (``IsTamper``), or with ``scene_change``
        ``VideoSource/GlobalSceneChange/ImagingService`` (``State``)."""
        if scene_change:
            self.raise_event("tns1:VideoSource/GlobalSceneChange/ImagingService", {"State": _bool(tampered)})
        else:
            self.raise_event("tns1:RuleEngine/TamperDetector/Tamper", {"IsTamper": _bool(tampered)})

    def raise_event(self, topic: str, data: dict[str, str], *, operation: str = "Changed") -> None:
        """Queue a notification of ``topic`` on every live subscription."""
        items = "".join(f'<tt:SimpleItem Name="{k}" Value="{v}"/>' for k, v in data.items())
        xml = (
            "<wsnt:NotificationMessage>"
            f'<wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">{topic}</wsnt:Topic>'
            f'<wsnt:Message><tt:Message UtcTime="{_iso(self.now())}" PropertyOperation="{operation}">'
            '<tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="vsc_1"/></tt:Source>'
            f"<tt:Data>{items}</tt:Data></tt:Message></wsnt:Message>"
            "</wsnt:NotificationMessage>"
        )
        self._count("events_raised")
        for sub in self._subscriptions.values():
            sub.queue.append(xml)
            sub.wake.set()

    def garble(self, answers: int = 1, *, well_formed: bool = False) -> None:
        """The next ``answers`` authenticated answers are not XML (``well_formed``: well-formed SOAP
        whose body is not the operation's answer)."""
        self._garble += answers
        self._garble_shape = well_formed

    def cut(self) -> None:
        """Drop every connection from now on (and the long polls waiting now)."""
        self._cut = True
        for sub in self._subscriptions.values():
            sub.wake.set()

    def restore(self) -> None:
        self._cut = False

    @property
    def subscriptions(self) -> int:
        """Live PullPoint subscriptions."""
        return len(self._subscriptions)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_skew

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._count("requests")
        if self._cut:
            return self._drop(request)
        body = await request.read()
        try:
            root = parse_xml(body, limit=1 << 20)
        except MalformedFrame:
            self._count("bad_requests")
            return self._fault("s:Sender", "ter:WellFormed", "not well-formed", status=400)
        op_node = root.find(f"{{{NS_SOAP}}}Body/*")
        if op_node is None:
            return self._fault("s:Sender", "ter:WellFormed", "no body", status=400)
        op = op_node.tag.rpartition("}")[2]
        self._count(f"op_{op}")
        if op not in PRE_AUTH and self.password is not None:
            problem = self._check_auth(root)
            if problem:
                self._count("auth_failures")
                logger.info("simulated camera refuses %s: %s", op, problem)
                if self.unauthorized_as_http:
                    return web.Response(status=401, headers={"WWW-Authenticate": 'Digest realm="sim"'})
                return self._fault("s:Sender", "ter:NotAuthorized", "Sender not Authorized", status=400)
        if self._garble > 0 and op not in PRE_AUTH:
            self._garble -= 1
            if self._garble_shape:
                return self._ok("<tds:SomethingElse><tt:Unexpected>1</tt:Unexpected></tds:SomethingElse>")
            return web.Response(body=b"<s:Envelope><garbled", content_type="application/soap+xml")
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            return self._fault("s:Receiver", "ter:ActionNotSupported", f"{op} not supported", status=400)
        try:
            result = await handler(request, op_node)
        except _Dropped:
            return self._drop(request)
        if isinstance(result, web.StreamResponse):
            return result
        return self._ok(result)

    def _drop(self, request: web.Request) -> web.StreamResponse:
        self._count("dropped_connections")
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)

    def _check_auth(self, root: ET.Element) -> str | None:
        token = root.find(f"{{{NS_SOAP}}}Header/{{{NS_WSSE}}}Security/{{{NS_WSSE}}}UsernameToken")
        if token is None:
            return "no UsernameToken"
        user = token.findtext(f"{{{NS_WSSE}}}Username", "")
        password = token.find(f"{{{NS_WSSE}}}Password")
        nonce = token.findtext(f"{{{NS_WSSE}}}Nonce", "")
        created = token.findtext(f"{{{NS_WSU}}}Created", "")
        if user != self.username:
            return f"unknown user {user!r}"
        if password is None or not created:
            return "no password or Created"
        if not str(password.get("Type", "")).endswith("#PasswordDigest"):
            # PasswordText: the password itself.
            return None if (password.text or "") == self.password else "wrong password"
        try:
            raw_nonce = base64.b64decode(nonce, validate=True)
        except ValueError:
            return "bad nonce"
        expected = base64.b64encode(
            hashlib.sha1(raw_nonce + created.encode() + (self.password or "").encode()).digest()
        ).decode()
        if (password.text or "").strip() != expected:
            return "wrong password digest"
        try:
            when = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return f"bad Created {created!r}"
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if abs((when - self.now()).total_seconds()) > 300:
            return f"Created {created} is more than 5 minutes off the camera's clock"
        return None

    def _ok(self, body: str) -> web.Response:
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope {_NAMESPACES}>'
            f"<s:Body>{body}</s:Body></s:Envelope>"
        )
        return web.Response(body=xml.encode(), content_type="application/soap+xml", charset="utf-8")

    def _fault(self, code: str, subcode: str, reason: str, *, status: int) -> web.Response:
        body = (
            f"<s:Fault><s:Code><s:Value>{code}</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode>"
            f'</s:Code><s:Reason><s:Text xml:lang="en">{reason}</s:Text></s:Reason></s:Fault>'
        )
        response = self._ok(body)
        response.set_status(status)
        return response

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    async def _op_GetServices(self, request: web.Request, node: ET.Element) -> str | web.Response:
        if not self.get_services:
            return self._fault(
                "s:Receiver", "ter:ActionNotSupported", "GetServices not supported", status=400
            )
        services = [
            (NS_DEVICE, "device_service"),
            (NS_MEDIA, "media_service"),
            (NS_EVENTS, "events_service"),
        ]
        parts = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{self.url}/onvif/{path}</tds:XAddr>"
            "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
            for ns, path in services
        )
        return f"<tds:GetServicesResponse>{parts}</tds:GetServicesResponse>"

    async def _op_GetCapabilities(self, request: web.Request, node: ET.Element) -> str:
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{self.url}/onvif/device_service</tt:XAddr></tt:Device>"
            f"<tt:Events><tt:XAddr>{self.url}/onvif/events_service</tt:XAddr>"
            "<tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport>"
            "<tt:WSPullPointSupport>true</tt:WSPullPointSupport>"
            "<tt:WSPausableSubscriptionManagerInterfaceSupport>false"
            "</tt:WSPausableSubscriptionManagerInterfaceSupport></tt:Events>"
            f"<tt:Media><tt:XAddr>{self.url}/onvif/media_service</tt:XAddr><tt:StreamingCapabilities>"
            "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
            "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    async def _op_GetDeviceInformation(self, request: web.Request, node: ET.Element) -> str:
        return (
            "<tds:GetDeviceInformationResponse><tds:Manufacturer>SimVision</tds:Manufacturer>"
            f"<tds:Model>{self.hardware}</tds:Model><tds:FirmwareVersion>1.0.0</tds:FirmwareVersion>"
            "<tds:SerialNumber>SIM0001</tds:SerialNumber><tds:HardwareId>1</tds:HardwareId>"
            "</tds:GetDeviceInformationResponse>"
        )

    async def _op_GetSystemDateAndTime(self, request: web.Request, node: ET.Element) -> str:
        now = self.now()
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>Manual</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone><tt:UTCDateTime>"
            f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
            f"<tt:Second>{now.second}</tt:Second></tt:Time>"
            f"<tt:Date><tt:Year>{now.year}</tt:Year><tt:Month>{now.month}</tt:Month>"
            f"<tt:Day>{now.day}</tt:Day></tt:Date>"
            "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    async def _op_GetProfiles(self, request: web.Request, node: ET.Element) -> str:
        parts = "".join(
            f'<trt:Profiles token="{p.token}" fixed="true"><tt:Name>{p.name}</tt:Name>'
            f'<tt:VideoEncoderConfiguration token="venc_{p.token}"><tt:Name>{p.name}</tt:Name>'
            "<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding>"
            f"<tt:Resolution><tt:Width>{p.width}</tt:Width><tt:Height>{p.height}</tt:Height></tt:Resolution>"
            "<tt:Quality>5</tt:Quality><tt:SessionTimeout>PT60S</tt:SessionTimeout>"
            "</tt:VideoEncoderConfiguration></trt:Profiles>"
            for p in self.profiles
        )
        return f"<trt:GetProfilesResponse>{parts}</trt:GetProfilesResponse>"

    async def _op_GetStreamUri(self, request: web.Request, node: ET.Element) -> str | web.Response:
        token = node.findtext(f"{{{NS_MEDIA}}}ProfileToken", "")
        profile = next((p for p in self.profiles if p.token == token), None)
        if profile is None:
            return self._fault("s:Sender", "ter:NoProfile", f"no profile {token}", status=400)
        return (
            "<trt:GetStreamUriResponse><trt:MediaUri>"
            f"<tt:Uri>rtsp://{self.rtsp_host}:554{profile.path}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
            "</trt:MediaUri></trt:GetStreamUriResponse>"
        )

    async def _op_CreatePullPointSubscription(self, request: web.Request, node: ET.Element) -> str:
        number = self._next_subscription
        self._next_subscription += 1
        now = self.now()
        sub = _Subscription(number, now + _duration(node.findtext(f"{{{NS_EVENTS}}}InitialTerminationTime")))
        self._subscriptions[number] = sub
        return (
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference>"
            f"<wsa5:Address>{self.url}/onvif/subscription/{number}</wsa5:Address>"
            "</tev:SubscriptionReference>"
            f"<wsnt:CurrentTime>{_iso(now)}</wsnt:CurrentTime>"
            f"<wsnt:TerminationTime>{_iso(sub.terminates)}</wsnt:TerminationTime>"
            "</tev:CreatePullPointSubscriptionResponse>"
        )

    def _subscription(self, request: web.Request) -> _Subscription | None:
        tail = request.path.rpartition("/subscription/")[2]
        sub = self._subscriptions.get(int(tail)) if tail.isdigit() else None
        if sub is not None and sub.terminates < self.now():
            del self._subscriptions[sub.number]
            return None
        return sub

    def _unknown_subscription(self) -> web.Response:
        return self._fault("s:Sender", "ter:InvalidArgVal", "unknown or expired subscription", status=400)

    async def _op_PullMessages(self, request: web.Request, node: ET.Element) -> str | web.Response:
        sub = self._subscription(request)
        if sub is None:
            return self._unknown_subscription()
        timeout = min(_duration(node.findtext(f"{{{NS_EVENTS}}}Timeout"), 10.0).total_seconds(), 60.0)
        limit_text = node.findtext(f"{{{NS_EVENTS}}}MessageLimit", "100")
        limit = int(limit_text) if limit_text.isdigit() else 100
        if not sub.queue:
            sub.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sub.wake.wait(), timeout)
        if self._cut:
            raise _Dropped
        messages, sub.queue = sub.queue[:limit], sub.queue[limit:]
        now = self.now()
        return (
            f"<tev:PullMessagesResponse><tev:CurrentTime>{_iso(now)}</tev:CurrentTime>"
            f"<tev:TerminationTime>{_iso(sub.terminates)}</tev:TerminationTime>"
            f"{''.join(messages)}</tev:PullMessagesResponse>"
        )

    async def _op_Renew(self, request: web.Request, node: ET.Element) -> str | web.Response:
        sub = self._subscription(request)
        if sub is None:
            return self._unknown_subscription()
        now = self.now()
        sub.terminates = now + _duration(node.findtext(f"{{{NS_WSNT}}}TerminationTime"))
        return (
            f"<wsnt:RenewResponse><wsnt:TerminationTime>{_iso(sub.terminates)}</wsnt:TerminationTime>"
            f"<wsnt:CurrentTime>{_iso(now)}</wsnt:CurrentTime></wsnt:RenewResponse>"
        )

    async def _op_Unsubscribe(self, request: web.Request, node: ET.Element) -> str | web.Response:
        sub = self._subscription(request)
        if sub is None:
            return self._unknown_subscription()
        del self._subscriptions[sub.number]
        sub.wake.set()
        return "<wsnt:UnsubscribeResponse/>"


class _Dropped(Exception):
    pass


class _DiscoveryResponder(asyncio.DatagramProtocol):
    def __init__(self, sim: OnvifSimulator) -> None:
        self.sim = sim
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            probe = parse_probe(data)
        except MalformedFrame:
            self.sim._count("discovery_garbage")
            return
        wanted = {t.rpartition(":")[2] for t in probe.types}
        if wanted and not wanted & {"NetworkVideoTransmitter", "Device"}:
            return
        self.sim._count("probes")
        sim = self.sim
        match = ProbeMatch(
            endpoint=sim.endpoint,
            xaddrs=(sim.device_service,),
            scopes=(
                "onvif://www.onvif.org/type/video_encoder",
                "onvif://www.onvif.org/Profile/Streaming",
                f"onvif://www.onvif.org/name/{_quote(sim.name)}",
                f"onvif://www.onvif.org/hardware/{_quote(sim.hardware)}",
                f"onvif://www.onvif.org/location/{_quote(sim.location)}",
            ),
            types=("dn:NetworkVideoTransmitter", "tds:Device"),
        )
        if self.transport is not None:
            self.transport.sendto(build_probe_matches(probe.message_id, [match]), addr)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(text: str | None, default_s: float = 60.0) -> timedelta:
    """``PT60S`` / ``PT1M`` / an absolute time -> a duration (the simulator needs no more)."""
    if not text:
        return timedelta(seconds=default_s)
    text = text.strip()
    if text.startswith("PT"):
        total, number = 0.0, ""
        for ch in text[2:]:
            if ch.isdigit() or ch == ".":
                number += ch
            else:
                value = float(number or 0)
                total += value * {"H": 3600, "M": 60, "S": 1}.get(ch, 0)
                number = ""
        return timedelta(seconds=total)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return timedelta(seconds=default_s)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when - datetime.now(UTC)


__all__ = ["OnvifSimulator", "SimProfile"]
