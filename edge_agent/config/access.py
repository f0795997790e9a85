"""Settings of gates, anti-passback and attendance points (leaf: pydantic and wire models only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sync.config import TimeWindow, Weekday

Direction = Literal["entry", "exit"]


class AntiPassbackConfig(BaseModel):
    """Anti-passback for one gate (DESIGN.md, local-first decisions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["off", "soft", "hard", "timed"] = Field(
        "off",
        description="off; soft: grant but flag a repeated direction; hard: deny entering twice without "
        "leaving (and the reverse); timed: deny the same direction again within window_s.",
    )
    area: str | None = Field(
        None,
        description="Gates sharing an area share the state (a perimeter with several gates); "
        "defaults to the gate id.",
    )
    window_s: float = Field(300.0, gt=0, description="For 'timed': how long a passage blocks a repeat.")


class SessionConfig(BaseModel):
    """One recurring timetable session (a lesson, a school day's registration)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Session id, e.g. '7A-math-mon-1'.")
    name: str = Field("", description="Display name.")
    weekdays: list[Weekday] = Field(description="Days the session takes place.")
    start: str = Field(description="HH:MM local start.")
    end: str = Field(description="HH:MM local end.")
    open_before_min: float = Field(15, ge=0, le=240, description="Arrivals this long before the start count.")
    late_after_min: float = Field(5, ge=0, description="Arrivals later than start + this are 'late'.")
    groups: list[str] = Field(
        default_factory=list, description="Class groups expected; empty means anyone with access."
    )
    close_after_min: float | None = Field(
        None,
        gt=0,
        le=1440,
        description="Close the roll-call (attendance.session_closed) this long after the start; "
        "default: at the end.",
    )

    @model_validator(mode="after")
    def _window(self) -> SessionConfig:
        TimeWindow(start=self.start, end=self.end)  # raises with a clear message
        if not self.weekdays:
            raise ValueError("a session needs at least one weekday")
        return self


class AttendancePointConfig(BaseModel):
    """A place where attendance is taken (a classroom reader, a camera)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sessions: list[SessionConfig] = Field(description="The timetable of this point.")

    @field_validator("sessions")
    @classmethod
    def _unique(cls, sessions: list[SessionConfig]) -> list[SessionConfig]:
        ids = [s.id for s in sessions]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"session ids must be unique within a point; used twice: {', '.join(dupes)}")
        return sessions


class GateReaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(description="Id of a card reader device (or an OSDP reader) in `devices`.")
    direction: Direction = Field("entry", description="Which way a person presenting a card here goes.")


class GateConfig(BaseModel):
    """A gate, door or classroom reader: its readers, what it opens, and its rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Gate id; access groups name it.")
    name: str = Field("", description="Display name.")
    readers: list[GateReaderConfig] = Field(min_length=1, description="Readers that feed this gate.")
    turnstile: str | None = Field(
        None,
        description="Id of the turnstile or door device it opens; none for a "
        "reader that only takes attendance.",
    )
    door: str | None = Field(
        None,
        description="Id of the door it opens through a Modbus I/O module's relay (an output's `door`); "
        "instead of `turnstile`.",
    )
    zone: str | None = Field(
        None,
        description="Fire-alarm zone of the gate: a Modbus `fire_alarm` input of this zone puts it into "
        "free passage while the alarm lasts.",
    )
    held_open_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A door contact open longer than this raises door_held_open (relay and Modbus doors).",
    )
    anti_passback: AntiPassbackConfig = Field(
        default_factory=AntiPassbackConfig,
        description="Anti-passback rules.",
    )
    passage_timeout_s: float = Field(10.0, gt=0, le=300, description="How long a granted passage may take.")
    attendance: AttendancePointConfig | None = Field(
        None, description="Take attendance here (method 'card') by this timetable."
    )

    @model_validator(mode="after")
    def _one_opener(self) -> GateConfig:
        if self.turnstile is not None and self.door is not None:
            raise ValueError(f"gate {self.id}: give `turnstile` or `door`, not both")
        return self
