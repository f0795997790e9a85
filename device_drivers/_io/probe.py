"""What a device family's doctor probe reports: the doctor turns these into its own check lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One thing a probe checked on a real device: ``check`` is ``reachable``, ``authenticated``,
    ``clock`` (skew against the gateway), ``stream``...; ``detail`` says what was found."""

    check: str
    status: Literal["ok", "warn", "fail"]
    detail: str


__all__ = ["ProbeResult"]
