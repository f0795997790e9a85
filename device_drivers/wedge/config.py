"""Configuration of USB keyboard-wedge card readers. A leaf: pydantic and the shared backoff config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from device_drivers._io.config import BackoffConfig, noise_log_interval


class KeyboardWedgeConfig(BaseModel):
    """A USB card reader that types card numbers as a keyboard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["keyboard_wedge"] = Field(description="Selects this driver.")
    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="Device id, unique on this gateway; used in events."
    )
    device: str = Field(description="Input device path, best a stable `/dev/input/by-id/...-event-kbd` link.")
    alphabet: Literal["decimal", "hex"] = Field(default="decimal", description="What the reader types.")
    min_length: int = Field(default=4, ge=1, description="Shorter input is not a card.")
    max_length: int = Field(default=32, ge=1, description="Longer input is not a card.")
    key_gap_ms: int = Field(
        default=100, gt=0, description="A longer pause between keys drops the input (readers type fast)."
    )
    grab: bool = Field(default=True, description="Take the device exclusively, so keys reach nothing else.")
    backoff: BackoffConfig = Field(
        default=BackoffConfig(), description="Delays between reopening the device."
    )
    noise_log_interval_s: float = noise_log_interval()


__all__ = ["KeyboardWedgeConfig"]
