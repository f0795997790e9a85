"""Logging set-up: journald-friendly under systemd, timestamped lines on a terminal."""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``: journald reads the ``<N>`` prefix as the syslog priority and
    adds its own timestamp, so we do not repeat one."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{record.name}: {super().format(record)}"


def setup_logging(level: str) -> None:
    """Configure the root logger once; calling it again (SIGHUP) only changes the level."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if getattr(root, "_edge_agent_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    under_journal = (
        bool(os.environ.get("JOURNAL_STREAM")) and os.environ.get("EDGE_AGENT_LOG_FORMAT") != "plain"
    )
    if under_journal:
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root._edge_agent_configured = True  # type: ignore[attr-defined]
