"""Logging set-up: journald's native protocol under systemd, timestamped lines on a terminal.

Under systemd each record goes to journald as its own entry with structured fields: the priority,
the logger, the code location, and the gateway's own ``DEVICE``, ``EVENT_ID``, ``GATE`` and
``PERSON`` when a log call passes them (``log.info(..., extra={"device": reader_id})``), so
``journalctl -u edge-agent DEVICE=reader-in`` shows one reader's story. Written by hand: the protocol
is a datagram of ``KEY=value`` lines, and the python-systemd binding needs libsystemd to build.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
JOURNAL_SOCKET = "/run/systemd/journal/socket"
# Record attributes (from ``extra=``) that become journal fields of the same name, upper-cased.
STRUCTURED_FIELDS = ("device", "event_id", "gate", "person", "camera")


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``: journald reads the ``<N>`` prefix from a stream as the syslog
    priority and adds its own timestamp, so we do not repeat one (fallback without the socket)."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{record.name}: {super().format(record)}"


def _field(key: str, value: str) -> bytes:
    data = value.encode("utf-8", "replace")
    if b"\n" in data:
        # Binary form: KEY, newline, little-endian 64-bit length, the bytes, newline.
        return key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key.encode() + b"=" + data + b"\n"


class JournalHandler(logging.Handler):
    """Sends each record to journald as one entry with structured fields."""

    def __init__(self, address: str = JOURNAL_SOCKET, identifier: str = "edge-agent") -> None:
        super().__init__()
        self.address = address
        self.identifier = identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            fields = [
                _field("MESSAGE", message),
                _field("PRIORITY", str(_PRIORITY.get(record.levelno, 6))),
                _field("SYSLOG_IDENTIFIER", self.identifier),
                _field("LOGGER", record.name),
                _field("CODE_FILE", record.pathname),
                _field("CODE_LINE", str(record.lineno)),
                _field("CODE_FUNC", record.funcName),
            ]
            for name in STRUCTURED_FIELDS:
                value = getattr(record, name, None)
                if value is not None:
                    fields.append(_field(name.upper(), str(value)))
            self.sock.sendto(b"".join(fields), self.address)
        except OSError:
            # journald restarting or a huge entry: fall back to stderr, which systemd also collects.
            sys.stderr.write(f"<{_PRIORITY.get(record.levelno, 6)}>{record.name}: {record.getMessage()}\n")
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


QUIET_LIBRARIES = ("httpx", "httpcore", "zeep", "pymodbus")
"""Loggers kept at WARNING whatever the agent's level: they log each request or frame at INFO/DEBUG."""


def setup_logging(level: str) -> None:
    """Configure the root logger once; calling it again (SIGHUP) only changes the level."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if getattr(root, "_edge_agent_configured", False):
        return
    handler: logging.Handler
    plain = os.environ.get("EDGE_AGENT_LOG_FORMAT") == "plain"
    journal_socket = os.environ.get("EDGE_AGENT_JOURNAL_SOCKET", JOURNAL_SOCKET)
    if os.environ.get("JOURNAL_STREAM") and not plain and os.path.exists(journal_socket):
        handler = JournalHandler(journal_socket)
    elif os.environ.get("JOURNAL_STREAM") and not plain:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    # Libraries that log every request at INFO (httpx: a line per ISAPI page, per ONVIF pull) would
    # drown the agent's own lines; their warnings still show.
    for chatty in QUIET_LIBRARIES:
        logging.getLogger(chatty).setLevel(logging.WARNING)
    root._edge_agent_configured = True  # type: ignore[attr-defined]
