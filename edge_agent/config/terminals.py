"""Configuration of what the agent does with a vendor terminal's records. A leaf: pydantic and the
other leaf config modules only.

The terminal itself (address, credentials, protocol) is a device in ``devices:``; this says which
attendance point its records count for, its timetable, and the gate its own access decisions are
reported under.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.config.access import AttendancePointConfig, Direction


class TerminalSetup(BaseModel):
    """A ZKTeco or Hikvision terminal's records: attendance point, timetable, gate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(
        description="Id of the terminal: a `zkteco` or `hikvision` device, or a terminal of a "
        "`zkteco_push` listener."
    )
    point: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Attendance point its records count for (events' `point`); default: the device id.",
    )
    attendance: AttendancePointConfig | None = Field(
        None,
        description="Timetable: a record inside a session window counts as present or late for it; "
        "without one (or outside every session) a record is still delivered, as `outside_session`.",
    )
    gate: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The gate the terminal's own access decisions are reported under; default: its id.",
    )
    direction: Direction = Field("entry", description="Which way a person verified here goes.")


__all__ = ["TerminalSetup"]
