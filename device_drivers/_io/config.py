"""Config shared by device families: the reconnect backoff and the fields of every serial device.

A leaf: pydantic and the stdlib only, so any family's config module (and the agent's root config)
can import it without pulling in drivers. That ``profile`` names a profile of the right family is
checked by the registry, which may read profile files (:data:`device_drivers.registry.DeviceConfig`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BackoffConfig(BaseModel):
    """Reconnect delays: ``initial_s`` doubling (times ``multiplier``) up to ``max_s``, with jitter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_s: float = Field(default=0.5, gt=0, description="First delay after a failure, seconds.")
    max_s: float = Field(default=30.0, gt=0, description="Longest delay between attempts, seconds.")
    multiplier: float = Field(default=2.0, ge=1, description="Growth of the delay per failed attempt.")
    jitter: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Fraction of each delay that is random (0: none, 1: full jitter).",
    )


def noise_log_interval() -> Any:
    """The ``noise_log_interval_s`` field every device with an input line has (one definition)."""
    return Field(
        default=10.0,
        gt=0,
        le=3600,
        description="What the device's line drops (garbage bytes, bad frames, lost reads) is logged as "
        "one summary line per this many seconds at most; the counters keep every drop.",
    )


class SerialDeviceConfig(BaseModel):
    """Fields every serial device has; subclasses add ``kind`` and set ``families``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="Device id, unique on this gateway; used in events."
    )
    profile: str = Field(
        description="Firmware profile: a shipped profile id (e.g. `em4100_id12`) or a path to a YAML file."
    )
    port: str | None = Field(
        default=None,
        description="pyserial port URL: `/dev/ttyUSB0`, `/dev/serial/by-id/...`, `socket://host:port`, "
        "`loop://`. Not needed when `simulated`.",
    )
    simulated: bool = Field(
        default=False, description="Run the device's simulator on a pty and connect the driver to it (demo)."
    )
    backoff: BackoffConfig = Field(default=BackoffConfig(), description="Reconnect delays.")
    noise_log_interval_s: float = noise_log_interval()

    families: ClassVar[tuple[str, ...]] = ()
    """The profile families this device accepts; the registry checks ``profile`` against them."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.port is None and not self.simulated:
            raise ValueError("give a port, or set simulated: true")
        return self


class NetworkDeviceConfig(BaseModel):
    """Fields every device reached over the network has (vendor terminals, ONVIF cameras, Modbus
    TCP); subclasses add ``kind`` and their own fields. Passwords never sit in the YAML:
    ``password_credential`` names a systemd credential (see :func:`device_drivers.secrets.load_password`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="Device id, unique on this gateway; used in events."
    )
    host: str | None = Field(
        default=None, description="Host name or IP address of the device. Not needed when `simulated`."
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="TCP port; default: the protocol's.")
    username: str | None = Field(default=None, description="Login name, where the device asks for one.")
    password_credential: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name of the credential holding the device's password (or comm key).",
    )
    timeout_s: float = Field(default=5.0, gt=0, le=120, description="Timeout of one request, seconds.")
    timezone: str | None = Field(
        default=None,
        description="IANA timezone of the device's own clock (its timestamps are local time); default: "
        "the gateway's.",
    )
    simulated: bool = Field(
        default=False, description="Run the device's simulator on localhost and connect to it (demo)."
    )
    backoff: BackoffConfig = Field(default=BackoffConfig(), description="Reconnect delays.")
    noise_log_interval_s: float = noise_log_interval()

    @model_validator(mode="after")
    def _check_host(self) -> Self:
        if self.host is None and not self.simulated:
            raise ValueError("give a host, or set simulated: true")
        return self


__all__ = ["BackoffConfig", "NetworkDeviceConfig", "SerialDeviceConfig", "noise_log_interval"]
