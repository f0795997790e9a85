"""The small value types of sync that a setting may name: the weekday time windows schedules are
made of, and the alert severity.

A config leaf (standard library and pydantic only, LAYOUT.md invariant 3), so the agent's own config
leaves can use these without importing sync's runtime. The link's and the outbox's settings are the
leaves ``sync.mqtt.config`` and ``sync.outbox.config``.
"""

from __future__ import annotations

import enum
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Severity(enum.StrEnum):
    """Alert severities; they name the ``alerts/{severity}`` topic."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class TimeWindow(BaseModel):
    """A window of one day in local time: start inclusive, end exclusive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(description="HH:MM local time, inclusive.")
    end: str = Field(description="HH:MM local time, exclusive; 24:00 for midnight.")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not HH:MM")
        return value

    @model_validator(mode="after")
    def _order(self) -> TimeWindow:
        if self.start >= self.end:
            raise ValueError(f"window {self.start}-{self.end} is empty or crosses midnight; split it")
        return self


__all__ = ["WEEKDAYS", "Severity", "TimeWindow", "Weekday"]
