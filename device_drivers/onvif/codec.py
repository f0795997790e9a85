"""Sans-I/O pieces of ONVIF: WS-Discovery messages (SOAP over UDP) and the mapping of ONVIF event
topics to our readings.

WS-Discovery is small (one Probe out, ProbeMatches back), so it is built and parsed here rather than
with the PyPI ``WSDiscovery`` package: that package parses every datagram with ``minidom`` (no
entity or size limits), runs its own threads, and its asyncio variant is a placeholder. Datagrams
come from anyone on the segment, so :func:`parse_xml` refuses DTDs (no entity expansion at all)
and anything larger than :data:`MAX_DATAGRAM`.

No asyncio and no sockets here: :mod:`device_drivers.onvif.discovery` and the driver do the I/O.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from device_drivers.errors import MalformedFrame

MULTICAST_GROUP = "239.255.255.250"
DISCOVERY_PORT = 3702
MAX_DATAGRAM = 65507
"""The largest UDP payload; a ProbeMatch is a few kilobytes."""

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_DN = "http://www.onvif.org/ver10/network/wsdl"
NS_TDS = "http://www.onvif.org/ver10/device/wsdl"
NS_TT = "http://www.onvif.org/ver10/schema"

ACTION_PROBE = f"{NS_WSD}/Probe"
ACTION_PROBE_MATCHES = f"{NS_WSD}/ProbeMatches"
DISCOVERY_TO = "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
ANONYMOUS = f"{NS_WSA}/role/anonymous"


def parse_xml(data: bytes, *, limit: int = MAX_DATAGRAM) -> ET.Element:
    """The root element of ``data``; :class:`MalformedFrame` for anything too large, with a DTD
    (entity declarations are how XML bombs and external entities get in) or not well-formed."""
    if len(data) > limit:
        raise MalformedFrame(f"{len(data)} bytes, over {limit}", code="bad_length", consumed=len(data))
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise MalformedFrame("XML with a DTD refused", code="bad_data", consumed=len(data), raw=data[:64])
    try:
        return ET.fromstring(data)
    except ET.ParseError as err:
        raise MalformedFrame(
            f"not XML: {err}", code="garbage", consumed=max(1, len(data)), raw=data[:64]
        ) from None


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def build_probe(message_id: str | None = None) -> tuple[str, bytes]:
    """A WS-Discovery Probe for ONVIF cameras (``dn:NetworkVideoTransmitter tds:Device``), and its
    MessageID (the RelatesTo of the answers)."""
    mid = message_id or new_message_id()
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_WSA}" xmlns:d="{NS_WSD}" '
        f'xmlns:dn="{NS_DN}" xmlns:tds="{NS_TDS}">'
        "<s:Header>"
        f'<a:Action s:mustUnderstand="1">{ACTION_PROBE}</a:Action>'
        f"<a:MessageID>{mid}</a:MessageID>"
        f"<a:ReplyTo><a:Address>{ANONYMOUS}</a:Address></a:ReplyTo>"
        f'<a:To s:mustUnderstand="1">{DISCOVERY_TO}</a:To>'
        "</s:Header>"
        "<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types></d:Probe></s:Body>"
        "</s:Envelope>"
    )
    return mid, xml.encode()


@dataclass(frozen=True, slots=True)
class Probe:
    """A Probe as a responder sees it."""

    message_id: str
    types: tuple[str, ...]


def parse_probe(data: bytes) -> Probe:
    """A Probe datagram; :class:`MalformedFrame` when it is not one."""
    root = parse_xml(data)
    action = root.findtext(f"{{{NS_SOAP}}}Header/{{{NS_WSA}}}Action", "").strip()
    if action != ACTION_PROBE:
        raise MalformedFrame(f"not a Probe (action {action!r})", code="unknown_code", consumed=len(data))
    message_id = root.findtext(f"{{{NS_SOAP}}}Header/{{{NS_WSA}}}MessageID", "").strip()
    if not message_id:
        raise MalformedFrame("Probe without a MessageID", code="bad_data", consumed=len(data))
    types = root.findtext(f"{{{NS_SOAP}}}Body/{{{NS_WSD}}}Probe/{{{NS_WSD}}}Types", "")
    return Probe(message_id, tuple(types.split()))


@dataclass(frozen=True, slots=True)
class ProbeMatch:
    """One device that answered: its endpoint reference (stable id, ``urn:uuid:...``), service
    addresses (``http://host/onvif/device_service``) and scopes (``onvif://www.onvif.org/name/...``)."""

    endpoint: str
    xaddrs: tuple[str, ...]
    scopes: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    metadata_version: int = 0

    def scope(self, key: str) -> str | None:
        """The value of the ONVIF scope ``onvif://www.onvif.org/<key>/<value>``, URL-decoded
        (``name``, ``hardware``, ``location``...), or None."""
        prefix = f"onvif://www.onvif.org/{key}/"
        for scope in self.scopes:
            if scope.startswith(prefix):
                return unquote(scope[len(prefix) :])
        return None

    @property
    def name(self) -> str | None:
        return self.scope("name")

    @property
    def hardware(self) -> str | None:
        return self.scope("hardware")

    @property
    def location(self) -> str | None:
        return self.scope("location")

    @property
    def device_service(self) -> str | None:
        """The first HTTP(S) XAddr."""
        return next((x for x in self.xaddrs if urlsplit(x).scheme in ("http", "https")), None)


def build_probe_matches(relates_to: str, matches: list[ProbeMatch], message_id: str | None = None) -> bytes:
    """A ProbeMatches answer (what a camera sends back; the simulator uses it)."""
    parts = []
    for m in matches:
        parts.append(
            "<d:ProbeMatch>"
            f"<a:EndpointReference><a:Address>{_esc(m.endpoint)}</a:Address></a:EndpointReference>"
            f"<d:Types>{_esc(' '.join(m.types))}</d:Types>"
            f"<d:Scopes>{_esc(' '.join(m.scopes))}</d:Scopes>"
            f"<d:XAddrs>{_esc(' '.join(m.xaddrs))}</d:XAddrs>"
            f"<d:MetadataVersion>{m.metadata_version}</d:MetadataVersion>"
            "</d:ProbeMatch>"
        )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_WSA}" xmlns:d="{NS_WSD}" '
        f'xmlns:dn="{NS_DN}" xmlns:tds="{NS_TDS}">'
        "<s:Header>"
        f"<a:MessageID>{message_id or new_message_id()}</a:MessageID>"
        f"<a:RelatesTo>{_esc(relates_to)}</a:RelatesTo>"
        f"<a:To>{ANONYMOUS}</a:To>"
        f"<a:Action>{ACTION_PROBE_MATCHES}</a:Action>"
        "</s:Header>"
        f"<s:Body><d:ProbeMatches>{''.join(parts)}</d:ProbeMatches></s:Body>"
        "</s:Envelope>"
    )
    return xml.encode()


def parse_probe_matches(data: bytes, *, relates_to: str | None = None) -> list[ProbeMatch]:
    """The matches in a ProbeMatches datagram. :class:`MalformedFrame` when it is not XML, not a
    ProbeMatches, answers another probe than ``relates_to``, or a match has no endpoint."""
    root = parse_xml(data)
    header = root.find(f"{{{NS_SOAP}}}Header")
    action = (header.findtext(f"{{{NS_WSA}}}Action", "") if header is not None else "").strip()
    if action != ACTION_PROBE_MATCHES:
        raise MalformedFrame(f"not ProbeMatches (action {action!r})", code="unknown_code", consumed=len(data))
    if relates_to is not None:
        got = (header.findtext(f"{{{NS_WSA}}}RelatesTo", "") if header is not None else "").strip()
        if got != relates_to:
            raise MalformedFrame(f"answers another probe ({got!r})", code="bad_data", consumed=len(data))
    body = root.find(f"{{{NS_SOAP}}}Body/{{{NS_WSD}}}ProbeMatches")
    if body is None:
        raise MalformedFrame("ProbeMatches without a body", code="bad_framing", consumed=len(data))
    matches = []
    for node in body.findall(f"{{{NS_WSD}}}ProbeMatch"):
        endpoint = node.findtext(f"{{{NS_WSA}}}EndpointReference/{{{NS_WSA}}}Address", "").strip()
        if not endpoint:
            raise MalformedFrame("ProbeMatch without an endpoint", code="bad_data", consumed=len(data))
        version = node.findtext(f"{{{NS_WSD}}}MetadataVersion", "0").strip()
        matches.append(
            ProbeMatch(
                endpoint=endpoint,
                xaddrs=tuple(node.findtext(f"{{{NS_WSD}}}XAddrs", "").split()),
                scopes=tuple(node.findtext(f"{{{NS_WSD}}}Scopes", "").split()),
                types=tuple(node.findtext(f"{{{NS_WSD}}}Types", "").split()),
                metadata_version=int(version) if version.isdigit() else 0,
            )
        )
    return matches


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


EventKind = Literal["motion", "tamper"]


@dataclass(frozen=True, slots=True)
class TopicRule:
    """An ONVIF topic we turn into a reading: which kind, and which data item holds the state."""

    kind: EventKind
    item: str


TOPICS: dict[str, TopicRule] = {
    "RuleEngine/CellMotionDetector/Motion": TopicRule("motion", "IsMotion"),
    "VideoSource/MotionAlarm": TopicRule("motion", "State"),
    "VideoSource/GlobalSceneChange/ImagingService": TopicRule("tamper", "State"),
    "RuleEngine/TamperDetector/Tamper": TopicRule("tamper", "IsTamper"),
}
"""Topics without their namespace prefixes (``tns1:RuleEngine/...`` -> ``RuleEngine/...``)."""


def normalize_topic(topic: str) -> str:
    """``tns1:RuleEngine/tnsaxis:X`` -> ``RuleEngine/X``: prefixes differ between cameras."""
    return "/".join(part.rpartition(":")[2] for part in topic.strip().split("/"))


@dataclass(frozen=True, slots=True)
class TopicEvent:
    """What a notification means for us: ``kind`` and its ``active`` state."""

    kind: EventKind
    active: bool
    topic: str
    initial: bool = False
    """The camera reports the state it had when we subscribed (``PropertyOperation="Initialized"``)."""


@dataclass(slots=True)
class EventMessage:
    """The parts of a ``tt:Message`` we read: its data items and property operation."""

    data: dict[str, str] = field(default_factory=dict)
    operation: str = ""


def read_message(element: ET.Element | None) -> EventMessage:
    """The data items (``SimpleItem Name Value``) of a ``tt:Message`` element (ElementTree or lxml)."""
    message = EventMessage()
    if element is None:
        return message
    message.operation = str(element.get("PropertyOperation") or "")
    for child in element:
        if _local(child.tag) == "Data":
            for item in child:
                name = item.get("Name")
                if _local(item.tag) == "SimpleItem" and name is not None:
                    message.data[str(name)] = str(item.get("Value") or "")
    return message


def classify(topic: str, message: EventMessage) -> TopicEvent | None:
    """The reading a notification makes, None for a topic we do not map; :class:`ValueError` for a
    mapped topic whose state item is missing or not a boolean."""
    name = normalize_topic(topic)
    rule = TOPICS.get(name)
    if rule is None:
        return None
    value = message.data.get(rule.item)
    if value is None:
        raise ValueError(f"{name}: no {rule.item} item")
    low = value.strip().lower()
    if low not in ("true", "false", "1", "0"):
        raise ValueError(f"{name}: {rule.item}={value!r} is not a boolean")
    return TopicEvent(rule.kind, low in ("true", "1"), name, initial=message.operation == "Initialized")


def _local(tag: object) -> str:
    return str(tag).rpartition("}")[2]


__all__ = [
    "DISCOVERY_PORT",
    "MAX_DATAGRAM",
    "MULTICAST_GROUP",
    "TOPICS",
    "EventMessage",
    "Probe",
    "ProbeMatch",
    "TopicEvent",
    "build_probe",
    "build_probe_matches",
    "classify",
    "normalize_topic",
    "parse_probe",
    "parse_probe_matches",
    "parse_xml",
    "read_message",
]
