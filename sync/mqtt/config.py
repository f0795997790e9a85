"""The link's settings and the broker URL: a leaf (pydantic and the standard library only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TlsConfig(BaseModel):
    """TLS towards the broker; file paths, so keys can live in ``$CREDENTIALS_DIRECTORY``."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(
        None, description="CA bundle that signed the broker's certificate; system CAs if unset."
    )
    cert_file: str | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key_credential: str | None = Field(
        None, description="Name of the credential holding the client key (PEM), never the key itself."
    )
    insecure_skip_verify: bool = Field(False, description="Do not check the broker's host name. Tests only.")


class MqttConfig(BaseModel):
    """How the gateway reaches the central broker."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker URL, mqtt://host[:port] or mqtts://host[:port]; overridden by --mqtt-url or "
        "EDGE_AGENT_MQTT_URL.",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version; 'auto' tries 5 and falls back to 3.1.1 for an older broker."
    )
    client_id: str | None = Field(None, description="MQTT client id; defaults to '<site>-<gateway>'.")
    username: str | None = Field(None, description="Broker user name; the password comes from credentials.")
    password_credential: str = Field(
        "mqtt_password",
        description="Credential name of the broker password ($CREDENTIALS_DIRECTORY/<name> or "
        "EDGE_AGENT_MQTT_PASSWORD).",
    )
    tls: TlsConfig | None = Field(None, description="TLS settings; mqtts:// without this uses system CAs.")
    topic_prefix: str = Field("campus/v1", description="Prefix of every topic.")
    keepalive_s: int = Field(
        15,
        ge=5,
        le=3600,
        description="MQTT keep-alive interval. A link that goes silent (a dead 4G link, a blackholed "
        "route) is given up between keepalive_s and 2 x keepalive_s + 1 s after it went silent: paho "
        "sends a PINGREQ at the latest keepalive_s after its last one and drops the connection when "
        "the PINGRESP has not come keepalive_s later (the link ticks paho once a second). The broker "
        "sets the gateway offline (its Last Will) after 1.5 x keepalive_s of silence.",
    )
    session_expiry_s: int = Field(
        3600,
        ge=0,
        le=7 * 86400,
        description="How long the broker keeps this gateway's session (its subscriptions and the QoS 1 "
        "roster messages and commands published meanwhile) while the link is down; a reconnect within "
        "it receives what it missed, in order. 0: a clean session at every connect (what was published "
        "while away is lost to this gateway and the roster resyncs).",
    )
    inflight_window: int = Field(
        400,
        ge=1,
        le=65535,
        description="Most QoS 1 publishes awaiting PUBACK at once (fewer if the broker's MQTT 5 Receive "
        "Maximum says so). The drain cannot beat inflight_window / round-trip time (400: 1,300-4,000 "
        "events/s over 300-100 ms; measured 0.75-0.85 of it); more makes a new alert wait behind "
        "more bytes on a thin link and resends more after a reconnect (docs/DISTRICT.md).",
    )
    reconnect_min_s: float = Field(
        1.0,
        gt=0,
        description="Ceiling of the first reconnect delay after a loss (for the backoff the agent hands "
        "the link); each failed attempt doubles the ceiling up to reconnect_max_s.",
    )
    reconnect_max_s: float = Field(60.0, gt=0, description="Reconnect delays never exceed this.")
    reconnect_jitter: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Fraction of each reconnect delay that is random. 1 (full jitter: uniform between 0 "
        "and the ceiling) spreads a fleet that lost the broker together over the whole ceiling, so "
        "hundreds of gateways do not reconnect and replay in lockstep; 0 only for tests.",
    )
    drain_rate_events_s: float | None = Field(
        None,
        ge=0,
        description="Most backlog events per second the drain publishes (token bucket, one second of "
        "burst). New alerts bypass it. None or 0: no limit. Off by default: one campus drains at "
        "full speed; a district sizes it from what its broker and consumers take (docs/DISTRICT.md).",
    )
    drain_rate_bytes_s: float | None = Field(
        None,
        ge=0,
        description="Most backlog bytes per second the drain publishes (payloads and snapshots; token "
        "bucket, one second of burst). New alerts bypass it. None or 0: no limit.",
    )
    inbound_queue_max: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Messages queued per subscription for its handler; when full the link stops reading "
        "from the broker until the handler catches up (backpressure, nothing dropped).",
    )
    inbound_queue_max_bytes: int = Field(
        1 << 20,
        ge=1,
        description="Payload bytes queued per subscription for its handler; past it the link stops "
        "reading from the broker until the handler catches up. A message larger than this is still "
        "taken, alone. Keeps a burst of big messages (a roster snapshot in parts) from being read "
        "all at once on the event loop the gates decide on.",
    )
    reply_queue_max: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Replies waiting for the broker; beyond this a reply is refused.",
    )
    reply_ttl_s: float = Field(
        300.0, gt=0, description="Default time a reply may wait for the broker before it expires."
    )
    status_interval_s: float = Field(30.0, gt=0, description="How often the retained status is refreshed.")
    connect_timeout_s: float = Field(10.0, gt=0, description="How long to wait for CONNACK.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or any(c in value for c in "#+") or value.startswith("/") or value.endswith("/"):
            raise ValueError("topic_prefix must be a plain topic path without wildcards or outer slashes")
        return value


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]``; raises ValueError with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r} has no host")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as err:
        raise ValueError(f"broker URL {url!r} has a bad port") from err
    return BrokerAddress(parts.hostname, port, tls)


__all__ = ["BrokerAddress", "MqttConfig", "TlsConfig", "parse_broker_url"]
