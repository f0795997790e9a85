"""Settings of one central ingest consumer."""

from __future__ import annotations

import socket

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sync.mqtt.config import parse_broker_url


def default_client_id(group: str) -> str:
    return f"central-ingest-{group}-{socket.gethostname()}"


class IngestConfig(BaseModel):
    """How one ingest consumer reaches the broker and the database."""

    model_config = ConfigDict(extra="forbid")

    mqtt_url: str = Field(description="Broker URL, mqtt://host[:port]; mqtts:// uses the system CAs.")
    database: str = Field(description="PostgreSQL connection string (postgresql://user@host:port/db).")
    group: str = Field(
        "central",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Shared-subscription group: every consumer of one group gets a share of the stream.",
    )
    client_id: str | None = Field(
        None,
        description="MQTT client id. It must be stable across restarts (the broker keeps the session, "
        "and with it the unacknowledged messages, under this id) and unique per running consumer. "
        "Defaults to 'central-ingest-<group>-<hostname>'.",
    )
    topic_prefix: str = Field("campus/v1", description="Prefix of every gateway topic.")
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=60,
        description="How long the broker keeps this consumer's session (and queues its share of "
        "messages) while it is down.",
    )
    receive_maximum: int = Field(
        1000,
        ge=1,
        le=65535,
        description="Most unacknowledged messages the broker sends at once (MQTT 5 flow control); "
        "bounds memory and the redelivery window after a crash.",
    )
    batch_max: int = Field(500, ge=1, description="Most messages written in one transaction.")
    batch_wait_ms: float = Field(
        5.0,
        ge=0,
        description="How long a lone message waits for company before it is written; messages that "
        "queued up while the previous batch was committed are written at once.",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.")
    username: str | None = Field(
        None, description="Broker user name; the password comes from the environment."
    )
    stats_interval_s: float = Field(30.0, gt=0, description="How often the counters are logged.")

    @field_validator("mqtt_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @field_validator("database")
    @classmethod
    def _check_database(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")) and "=" not in value:
            raise ValueError("database must be a postgresql:// URL or a libpq 'key=value' string")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or any(c in value for c in "#+") or value.startswith("/") or value.endswith("/"):
            raise ValueError("topic_prefix must be a plain topic path without wildcards or outer slashes")
        return value

    @property
    def effective_client_id(self) -> str:
        return self.client_id or default_client_id(self.group)

    @property
    def shared_filter(self) -> str:
        return f"$share/{self.group}/{self.topic_prefix}/#"

    @property
    def status_filter(self) -> str:
        return f"{self.topic_prefix}/+/+/status"


__all__ = ["IngestConfig", "default_client_id"]
