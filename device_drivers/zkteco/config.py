"""Configuration of zkteco devices. A leaf: pydantic and device_drivers._io.config only."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_drivers._io.config import NetworkDeviceConfig


class ZktecoConfig(NetworkDeviceConfig):
    """A ZKTeco terminal the gateway polls over its TCP protocol (port 4370): clock, users and the
    attendance log, downloaded from a persisted high-water mark; real-time events where the
    terminal sends them. ``password_credential`` names the credential holding the terminal's
    numeric comm key (none: the terminal has no comm key)."""

    kind: Literal["zkteco"] = Field(description="Selects this driver.")
    poll_interval_s: float = Field(
        default=30.0, ge=1, le=3600, description="Seconds between two checks of the terminal's log."
    )
    sync_clock: bool = Field(
        default=False, description="Set the terminal's clock to the gateway's when they differ."
    )
    max_clock_skew_s: float = Field(
        default=5.0, gt=0, description="Clock difference above which the skew is reported (and set)."
    )
    realtime: bool = Field(
        default=True,
        description="Register for the terminal's real-time attendance events (CMD_REG_EVENT) and read "
        "the log at once on each; falls back to polling when the terminal refuses.",
    )
    sim_users: list[str] = Field(
        default_factory=list,
        description="`simulated: true` (demo): the simulated terminal's user ids, who punch in turn "
        "(fingerprint, face, card) every `sim_interval_s`; empty: three users 1001-1003 at random.",
    )
    sim_interval_s: float = Field(
        default=20.0, gt=0, le=3600, description="`simulated: true`: seconds between two demo punches."
    )


class PushTerminal(BaseModel):
    """One terminal allowed to push to the gateway, by serial number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    serial: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Serial number (SN)."
    )
    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Device id of this terminal in readings and events (unique on this gateway).",
    )
    timezone: str | None = Field(
        default=None, description="IANA timezone of this terminal's clock; default: the server's `timezone`."
    )
    point: str | None = Field(default=None, description="Attendance point label (documentation only).")


class ZktecoPushConfig(NetworkDeviceConfig):
    """The gateway's ``/iclock`` server ZKTeco terminals push their records to (the "ADMS" HTTP
    push protocol): it listens, so ``host`` is not needed; ``terminals`` is the serial allow-list."""

    kind: Literal["zkteco_push"] = Field(description="Selects this driver.")
    listen_host: str = Field(default="0.0.0.0", description="Address the push server listens on.")
    listen_port: int = Field(default=8081, ge=0, le=65535, description="TCP port (0: any free port).")
    terminals: list[PushTerminal] = Field(
        default_factory=list, description="Terminals allowed to push: `{serial, id, timezone, point}`."
    )
    ack_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long an upload waits for its records to be committed before the terminal is "
        "told to send it again.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=64 * 1_048_576, description="Largest upload accepted (413 above)."
    )
    trans_interval_min: int = Field(
        default=1, ge=1, le=1440, description="`TransInterval` told to terminals: minutes between uploads."
    )
    realtime: bool = Field(
        default=True, description="`Realtime` told to terminals: upload each record at once."
    )
    offline_after_s: float = Field(
        default=120.0,
        gt=0,
        le=86400,
        description="A terminal not heard from for this long is reported offline (terminals call every "
        "`Delay`, 10 s).",
    )

    @model_validator(mode="after")
    def _check_host(self) -> Self:
        # Overrides the base's: a push server listens, it has no device host.
        ids = [t.id for t in self.terminals]
        serials = [t.serial for t in self.terminals]
        if len(set(ids)) != len(ids) or len(set(serials)) != len(serials):
            raise ValueError("terminal ids and serials must be unique")
        return self


__all__ = ["PushTerminal", "ZktecoConfig", "ZktecoPushConfig"]
