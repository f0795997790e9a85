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
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.")
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
        100, ge=1, le=65535, description="Most QoS 1 publishes awaiting PUBACK at once."
    )
    reconnect_min_s: float = Field(
        0.5, gt=0, description="First reconnect delay (for the backoff the agent hands the link)."
    )
    reconnect_max_s: float = Field(60.0, gt=0, description="Reconnect delays never exceed this.")
    inbound_queue_max: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Messages queued per subscription for its handler; when full the link stops reading "
        "from the broker until the handler catches up (backpressure, nothing dropped).",
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
