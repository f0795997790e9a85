"""Firmware profiles are data: one YAML file per device model/firmware, beside this module."""

from __future__ import annotations

from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent


def profile_paths() -> list[Path]:
    """Every profile file shipped with the gateway, sorted by name."""
    return sorted(PROFILE_DIR.glob("*.yaml"))


__all__ = ["PROFILE_DIR", "profile_paths"]
