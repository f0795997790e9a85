"""Configuration of Hikvision access controllers and face terminals (ISAPI). A leaf: pydantic and
device_drivers._io.config only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from device_drivers._io.config import NetworkDeviceConfig

SIMULATED_USERNAME = "admin"
SIMULATED_PASSWORD = "simulated-isapi"
"""The login a simulated terminal (``simulated: true`` without a ``password_credential``) accepts."""


class HikvisionConfig(NetworkDeviceConfig):
    """A Hikvision access controller or face terminal reached over ISAPI (HTTP with digest auth)."""

    kind: Literal["hikvision"] = Field(description="Selects this driver.")
    scheme: Literal["http", "https"] = Field(
        default="http", description="`http` (port 80 by default) or `https` (port 443 by default)."
    )
    verify_tls: bool = Field(
        default=True,
        description="With `https`: check the terminal's certificate (turn off only for the factory "
        "self-signed one, on a segment you trust).",
    )
    attendance: bool = Field(
        default=False,
        description="Every granted verification is also an attendance record (terminals not set up "
        "for attendance send no `attendanceStatus`); with it off, only events that carry an "
        "`attendanceStatus` are.",
    )
    sync_roster: bool = Field(
        default=False,
        description="The gateway owns this terminal's users: it writes the roster's persons and cards "
        "to it (UserInfo/CardInfo), deletes everyone else, and reads its `employeeNoString` as the "
        "roster person id.",
    )
    heartbeat_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="The alert stream is given up (and reconnected) after this long without a byte; "
        "terminals send a heartbeat part every few seconds.",
    )
    auth_retry_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="After a refused login, wait at least this long before the next attempt: "
        "terminals lock the account after a few failed logins.",
    )
    max_part_bytes: int = Field(
        default=2_000_000,
        ge=4096,
        le=64_000_000,
        description="Largest part of the alert stream read (a picture); a larger one is skipped.",
    )
    catch_up_max_events: int = Field(
        default=100_000,
        ge=1,
        description="At most this many missed events are fetched per reconnect (AcsEvent search).",
    )
    clock_skew_warn_s: float = Field(
        default=30.0, gt=0, description="A terminal clock further off than this is a warning (doctor, log)."
    )
    user_sync_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="With `sync_roster`: the terminal's users are compared again this often even without "
        "a roster change (someone may have edited them at the terminal).",
    )

    sim_present: list[str] = Field(
        default_factory=list,
        description="Simulated terminal only (demo traffic): what is presented at it in turn, one every "
        "`sim_interval_s`, looping: `face:<employee no>` (a face the terminal matched to that user, or "
        "did not: no such user) or `card:<card no>`. The terminal decides itself, from the users and "
        "cards written to it. Empty (default): nothing happens at it by itself.",
    )
    sim_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="Simulated terminal: seconds between two `sim_present` items."
    )

    @field_validator("sim_present")
    @classmethod
    def _check_sim_present(cls, items: list[str]) -> list[str]:
        for item in items:
            method, sep, value = item.partition(":")
            if not sep or method not in ("face", "card") or not value or len(value) > 32:
                raise ValueError(f"sim_present: {item!r}: give `face:<employee no>` or `card:<card no>`")
        return items

    @property
    def default_port(self) -> int:
        """The port when none is configured: the scheme's."""
        return self.port or (443 if self.scheme == "https" else 80)


__all__ = ["SIMULATED_PASSWORD", "SIMULATED_USERNAME", "HikvisionConfig"]
