"""Configuration of turnstiles and door controllers on a serial line. A leaf: pydantic and the
shared serial config only."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from device_drivers._io.config import SerialDeviceConfig


class TurnstileConfig(SerialDeviceConfig):
    """A turnstile, speed gate or door controller on a serial (RS-485/RS-232) line."""

    kind: Literal["turnstile"] = Field(description="Selects this driver.")
    address: int | None = Field(
        default=None, ge=0, le=255, description="RS-485 address; default: the profile's."
    )
    retries: int = Field(
        default=1, ge=0, le=5, description="Resends of a confirmed command the device did not acknowledge."
    )
    sim_passage_delay_s: float = Field(
        default=0.5, ge=0, description="With `simulated`: how long the simulated person takes to pass."
    )

    families: ClassVar[tuple[str, ...]] = ("turnstile",)


__all__ = ["TurnstileConfig"]
