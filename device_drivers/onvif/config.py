"""Configuration of ONVIF cameras' events. A leaf: pydantic and device_drivers._io.config only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from device_drivers._io.config import NetworkDeviceConfig


class OnvifConfig(NetworkDeviceConfig):
    """An ONVIF camera whose own analytics (motion, tamper) the gateway subscribes to through a
    PullPoint subscription. ``port`` defaults to 80 (the camera's ONVIF HTTP port)."""

    kind: Literal["onvif"] = Field(description="Selects this driver.")
    topics: list[str] = Field(
        default_factory=list,
        description="Only these event topics become readings (`tns1:RuleEngine/CellMotionDetector/Motion`, "
        "`VideoSource/MotionAlarm`, ...; namespace prefixes are ignored). Empty: every topic the driver "
        "maps (motion and tamper).",
    )
    pull_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="How long one PullMessages waits on the camera for events."
    )
    subscription_s: float = Field(
        default=60.0,
        ge=10,
        le=3600,
        description="Termination time asked for the subscription; renewed at half of it.",
    )
    adjust_time: bool = Field(
        default=True,
        description="Sign WS-Security digests with the camera's clock (GetSystemDateAndTime), so a camera "
        "whose clock is off still accepts the login. The skew is logged and counted either way.",
    )
    max_clock_skew_s: float = Field(
        default=5.0, gt=0, description="A camera clock further off than this is logged and counted."
    )

    sim_motion_every_s: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Simulated camera only (demo traffic): its motion detector fires this often "
        "(`IsMotion` true, then false after `sim_motion_s`). None (default): no motion by itself.",
    )
    sim_motion_s: float = Field(
        default=3.0, gt=0, le=3600, description="Simulated camera: how long each motion lasts."
    )
    sim_tamper_every_s: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Simulated camera only: its tamper detector fires this often (`IsTamper` true, then "
        "false after `sim_motion_s`). None (default): never.",
    )

    @property
    def effective_port(self) -> int:
        return self.port or 80


__all__ = ["OnvifConfig"]
