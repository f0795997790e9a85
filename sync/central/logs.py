"""Logging for the central commands: one stderr handler, timestamped on a terminal.

Under systemd (``JOURNAL_STREAM`` set) the timestamp is left to journald. The gateway's own logging
(journald's native protocol, structured fields) is the agent's business; central does not need it.
"""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str) -> None:
    """Configure the root logger; calling it again only changes the level."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if getattr(root, "_central_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root.handlers[:] = [handler]
    root._central_configured = True  # type: ignore[attr-defined]


__all__ = ["setup_logging"]
