"""Configuration of Wiegand readers wired to GPIO lines. A leaf: pydantic and the shared device
config only."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from device_drivers._io.config import noise_log_interval


class GpioWiegandConfig(BaseModel):
    """A Wiegand reader on two GPIO lines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["gpio_wiegand"] = Field(description="Selects this driver.")
    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="Device id, unique on this gateway; used in events."
    )
    chip: str = Field(default="/dev/gpiochip0", description="GPIO chip device.")
    d0_line: int = Field(ge=0, description="GPIO line wired to DATA0.")
    d1_line: int = Field(ge=0, description="GPIO line wired to DATA1.")
    wiegand_profile: str = Field(
        default="wiegand_serial_converter", description="Profile whose Wiegand layouts decode the frames."
    )
    frame_gap_ms: float = Field(default=25.0, gt=0, description="Silence that ends a frame.")
    noise_log_interval_s: float = noise_log_interval()


__all__ = ["GpioWiegandConfig"]
