"""Configuration of relay-driven doors. A leaf: pydantic only."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RelayDoorConfig(BaseModel):
    """A door strike, gate motor or turnstile driven by relay contacts on GPIO lines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["relay_door"] = Field(description="Selects this driver.")
    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="Device id, unique on this gateway; used in events."
    )
    chip: str = Field(default="/dev/gpiochip0", description="GPIO chip device.")
    line: int = Field(ge=0, description="GPIO line of the open (A / entry) contact.")
    exit_line: int | None = Field(
        default=None, ge=0, description="GPIO line of the open B (exit) contact; default: the same line."
    )
    active_low: bool = Field(default=False, description="The relay closes when the line is low.")
    pulse_ms: int = Field(default=500, gt=0, description="How long an open closes the contact.")
    simulated: bool = Field(default=False, description="Drive in-memory pins instead of GPIO (demo, tests).")


__all__ = ["RelayDoorConfig"]
