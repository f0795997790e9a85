"""Configuration of OSDP v2 buses and their readers. A leaf: pydantic and the shared device config
only."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_drivers._io.config import BackoffConfig, noise_log_interval


class OsdpReaderConfig(BaseModel):
    """One OSDP reader (PD) on the bus."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Device id of this reader; used in events.")
    address: int = Field(ge=0, le=126, description="The reader's OSDP address.")
    scbk_secret: str | None = Field(
        default=None,
        description="Name of the secret holding this reader's secure channel base key (32 hex digits): a "
        "file in $CREDENTIALS_DIRECTORY or an environment variable. Required with the secure channel.",
    )


class OsdpBusConfig(BaseModel):
    """An RS-485 line with OSDP v2 readers, driven by this gateway as control panel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["osdp"] = Field(description="Selects this driver.")
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Id of the bus (readers have their own ids).")
    port: str | None = Field(default=None, description="pyserial port URL of the RS-485 adapter.")
    baudrate: int = Field(default=9600, gt=0, description="Line speed (OSDP: 9600 to 115200).")
    readers: list[OsdpReaderConfig] = Field(min_length=1, description="The readers on this bus.")
    secure_channel: bool = Field(
        default=True, description="Require the OSDP secure channel (turn off only for legacy readers)."
    )
    wiegand_profile: str = Field(
        default="wiegand_serial_converter",
        description="Profile whose Wiegand layouts decode raw card data (id or YAML path).",
    )
    led_s: float = Field(default=1.0, gt=0, description="How long the grant/deny LED colour shows.")
    simulated: bool = Field(default=False, description="Run libosdp reader simulators on a pty (demo).")
    backoff: BackoffConfig = Field(
        default=BackoffConfig(),
        description="Delays between reopening the port and between retries of a silent reader.",
    )
    handshake_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Time a reader's handshake (probe, capabilities, secure channel) gets before the reader "
        "is tried again; retries of a silent reader are never closer together than this.",
    )
    noise_log_interval_s: float = noise_log_interval()

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.port is None and not self.simulated:
            raise ValueError("give a port, or set simulated: true")
        if len({r.address for r in self.readers}) != len(self.readers):
            raise ValueError("two readers with the same address")
        if len({r.id for r in self.readers}) != len(self.readers):
            raise ValueError("two readers with the same id")
        if self.secure_channel and not self.simulated:
            missing = [r.id for r in self.readers if r.scbk_secret is None]
            if missing:
                raise ValueError(f"secure channel needs scbk_secret for {missing}")
        return self


__all__ = ["OsdpBusConfig", "OsdpReaderConfig"]
