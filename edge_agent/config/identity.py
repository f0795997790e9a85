"""Who the gateway is and the process settings of the agent (leaf: pydantic only)."""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError("must be 1-64 letters, digits, '_', '.', '-' and start with a letter or digit")
    return value


class GatewayIdentity(BaseModel):
    """Who this gateway is; these name every topic and every event ``source``."""

    model_config = ConfigDict(extra="forbid")

    site: str = Field(description="Campus/site id, e.g. 'north-campus'.")
    id: str = Field(description="Gateway id, unique within the site, e.g. 'gw-gate-1'.")
    name: str = Field("", description="Human-readable name shown on consoles.")
    timezone: str = Field(
        "UTC",
        description="IANA time zone of the campus (e.g. 'Asia/Shanghai'); schedules and timetables use it.",
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}") from err
        return value

    _site = field_validator("site")(classmethod(lambda cls, v: check_id(v)))
    _id = field_validator("id")(classmethod(lambda cls, v: check_id(v)))


class AgentConfig(BaseModel):
    """Process-level settings of the agent."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(
        "/var/lib/edge-agent",
        description="Where the SQLite files live; overridden by --data-dir or EDGE_AGENT_DATA_DIR.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level; SIGHUP reloads it."
    )
    shutdown_timeout_s: float = Field(
        10.0, gt=0, le=300, description="On SIGTERM, how long to keep publishing the backlog before leaving."
    )
    heartbeat_interval_s: float = Field(
        30.0, gt=0, description="How often the gateway reports its own heartbeat event."
    )
    alert_snapshot_retention_s: float = Field(
        86400.0,
        ge=0,
        description="How long the local alert book keeps alert snapshots (they may show faces) for the "
        "console; 0 keeps none. The centre's copy is its own retention.",
    )
    alert_retention_s: float = Field(
        30 * 86400.0, gt=0, description="How long the local alert book keeps alerts."
    )
    attendance_record_retention_days: int = Field(
        2,
        ge=1,
        le=366,
        description="Days the local attendance records (who was recorded where, when; they only keep a "
        "person from being recorded twice in one session) are kept before they are deleted.",
    )
    consent_check_interval_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="How often face templates are checked against their persons' consent, besides at "
        "every roster change and at the moment a consent is due to expire: templates whose consent "
        "lapsed are deleted.",
    )
    telemetry_interval_s: float = Field(
        60.0, gt=0, description="How often counters go to the `telemetry` topic (not stored while offline)."
    )
    roster_seed: str | None = Field(
        None,
        description="A roster snapshot (JSON file, the format the centre publishes) applied at start when "
        "the local roster is empty: first install, demo. A relative path is relative to the config file.",
    )
    roster_max_message_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest roster message (snapshot or delta) the agent reads, and the most all parts "
        "of one snapshot sent in parts may add up to; a larger one is refused "
        "with a 'rejected' reply and counted. The default fits a big campus: a 30 MB snapshot holds "
        "~166,000 people with one card each; face embeddings add ~10 kB per template.",
    )
    roster_part_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A roster snapshot sent in parts that gets no next part for this long is dropped "
        "(its staged entries can hold hundreds of MB) and a resync is requested from the centre.",
    )
    roster_signatures: Literal["required", "optional"] = Field(
        "required",
        description="Roster snapshots and deltas must carry a valid signature by a key in "
        "roster_keys_credential (docs/INTEGRATORS.md, 'Signed master data'). 'optional' also takes "
        "unsigned ones (a lab without keys; signed ones are still verified): it is logged as a warning "
        "at every start and shown in the status. The local roster_seed file is never signed.",
    )
    roster_keys_credential: str = Field(
        "roster_keys",
        description="Credential name of the keys trusted to sign master data (JSON, the format of the "
        "command keys); SIGHUP re-reads it, so a new key can be added before the centre switches to it.",
    )
    roster_signature_max_age_s: float = Field(
        30 * 86400.0,
        ge=60,
        le=366 * 86400.0,
        description="Longest validity window (expires_at - issued_at) a roster signature may have. "
        "The retained snapshot lives on the broker: the centre re-publishes it, newly signed, before "
        "it expires, or a gateway that reconnects after that refuses it as expired.",
    )
    roster_clock_skew_s: float = Field(
        300.0,
        ge=0,
        le=3600,
        description="Tolerated difference between the centre's clock and ours when judging a roster "
        "signature's issued_at and expires_at.",
    )


class SimulatedSourceConfig(BaseModel):
    """A simulated device for demos and tests: it reports heartbeats (and optional test alerts)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Device id; becomes the last part of the event source.")
    kind: Literal["heartbeat"] = Field("heartbeat", description="What the simulated device does.")
    interval_s: float = Field(1.0, gt=0, description="Seconds between heartbeat events.")
    test_alert_interval_s: float | None = Field(
        None, gt=0, description="If set, raise a security test alert this often (to exercise the alert lane)."
    )

    _id = field_validator("id")(classmethod(lambda cls, v: check_id(v)))
