"""The MQTT side of sync: the link (``client``), the outbox drain, one broker connection
(``session``), the leaf settings (``config``), MQTT 5 request/response properties, and the shape of
the reconnect backoff the link is handed."""

from __future__ import annotations

from sync.mqtt.backoff import ReconnectBackoff
from sync.mqtt.client import LinkState, MessageHandler, MqttLink, ReplyExpired, Subscription
from sync.mqtt.config import BrokerAddress, MqttConfig, TlsConfig, parse_broker_url
from sync.mqtt.properties import reply_properties, response_properties
from sync.mqtt.stats import LinkStats

__all__ = [
    "BrokerAddress",
    "LinkState",
    "LinkStats",
    "MessageHandler",
    "MqttConfig",
    "MqttLink",
    "ReconnectBackoff",
    "ReplyExpired",
    "Subscription",
    "TlsConfig",
    "parse_broker_url",
    "reply_properties",
    "response_properties",
]
