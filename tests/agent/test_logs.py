"""Logs under systemd: journald's native protocol on a real datagram socket, with structured fields."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.logs import JournalHandler
from tests.support.agent_process import write_config


def parse_entry(data: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            data = rest
        else:  # binary form: KEY\n<u64 length><bytes>\n
            (size,) = struct.unpack("<Q", rest[:8])
            fields[line.decode()] = rest[8 : 8 + size].decode()
            data = rest[8 + size + 1 :]
    return fields


@pytest.fixture
def journal(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.sock"))
    sock.settimeout(10)
    return sock


def test_records_carry_priority_code_location_and_gateway_fields(
    tmp_path: Path, journal: socket.socket
) -> None:
    handler = JournalHandler(str(tmp_path / "journal.sock"))
    logger = logging.getLogger("edge_agent.test_journal")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.warning(
            "gate %s: denied %s",
            "gate-1",
            "00DEADBEEF",
            extra={"device": "reader-in", "gate": "gate-1", "event_id": "01K3ZV5Q8M"},
        )
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("handling failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    first = parse_entry(journal.recv(65536))
    assert first["MESSAGE"] == "gate gate-1: denied 00DEADBEEF"
    assert (first["PRIORITY"], first["SYSLOG_IDENTIFIER"], first["LOGGER"]) == (
        "4",
        "edge-agent",
        "edge_agent.test_journal",
    )
    assert (first["DEVICE"], first["GATE"], first["EVENT_ID"]) == ("reader-in", "gate-1", "01K3ZV5Q8M")
    assert first["CODE_FILE"].endswith("test_logs.py") and int(first["CODE_LINE"]) > 0
    second = parse_entry(journal.recv(65536))
    # A traceback has newlines: sent in the binary form, whole.
    assert second["PRIORITY"] == "3" and "ValueError: boom" in second["MESSAGE"]


def test_the_agent_logs_to_journald_under_systemd(tmp_path: Path, journal: socket.socket) -> None:
    config = write_config(tmp_path / "agent.yaml", site="journal-site", interval_s=1.0)
    env = {
        **os.environ,
        "JOURNAL_STREAM": "8:1234",
        "EDGE_AGENT_JOURNAL_SOCKET": str(tmp_path / "journal.sock"),
    }
    env.pop("EDGE_AGENT_LOG_FORMAT", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "run",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            "--mqtt-url",
            "mqtt://127.0.0.1:1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        entries: list[dict[str, str]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("running" in e.get("MESSAGE", "") for e in entries):
            entries.append(parse_entry(journal.recv(65536)))
        running = next(e for e in entries if "running" in e.get("MESSAGE", ""))
        assert running["SYSLOG_IDENTIFIER"] == "edge-agent" and running["LOGGER"] == "edge_agent.gateway"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    # Nothing went to stderr: journald got every entry through its socket.
    assert proc.stderr is not None and proc.stderr.read() == b""
