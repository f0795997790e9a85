"""Debian's Chromium for the console tests (installed by .ci/setup; never `playwright install`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """The browser's path; fails the test (never skips) when it is not installed."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the console tests (apt-get install chromium)")
    return CHROMIUM


__all__ = ["CHROMIUM_ARGS", "chromium_path"]
