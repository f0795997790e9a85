"""MQTT 5 request/response: the response topic and correlation data of a request, and the
properties of a reply carrying that correlation back."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def response_properties(props: Properties | None) -> tuple[str | None, bytes | None]:
    """The MQTT 5 response topic and correlation data of a request, where it has them."""
    if props is None:
        return None, None
    return getattr(props, "ResponseTopic", None), getattr(props, "CorrelationData", None)


def reply_properties(correlation: bytes | None) -> Properties | None:
    """PUBLISH properties carrying ``correlation`` back to the requester (None without one)."""
    if correlation is None:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = correlation
    return props


__all__ = ["Properties", "reply_properties", "response_properties"]
