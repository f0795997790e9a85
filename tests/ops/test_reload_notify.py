"""`systemctl reload edge-agent` as systemd sees it: SIGHUP (the unit's ExecReload=), then the
agent's RELOADING=1 and, when the reload is over, READY=1 on a real notify socket.

systemd (Type=notify) keeps the unit in state "reloading" from RELOADING=1 until READY=1, so a
reload must end with READY=1 whether the new file was applied or refused.
tests/agent/test_agent_process.py covers READY/WATCHDOG/STOPPING; these cover the reload.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MosquittoBroker
from tests.support.agent_process import AgentProcess, write_config


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    yield sock, path
    sock.close()


def read_until(sock: socket.socket, wanted: str, timeout: float = 20) -> list[str]:
    """Every message up to and including the first that contains ``wanted``."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if wanted in messages[-1]:
            return messages
    raise AssertionError(f"{wanted!r} never arrived; got {messages}")


def start(tmp_path: Path, broker: MosquittoBroker, notify_path: str) -> tuple[AgentProcess, Path]:
    config = write_config(tmp_path / "agent.yaml", site="reload-site", interval_s=0.2)
    agent = AgentProcess(config, tmp_path / "data", broker.url, env={"NOTIFY_SOCKET": notify_path})
    return agent, config


def test_reload_sends_reloading_then_ready_with_status(
    tmp_path: Path, mosquitto: MosquittoBroker, notify: tuple[socket.socket, str]
) -> None:
    sock, path = notify
    agent, config = start(tmp_path, mosquitto, path)
    try:
        read_until(sock, "READY=1")
        config.write_text(config.read_text().replace("log_level: info", "log_level: debug"))
        agent.signal(signal.SIGHUP)
        after = read_until(sock, "RELOADING=1")
        assert not any("READY=1" in m for m in after[:-1]), "READY before RELOADING"
        done = read_until(sock, "READY=1")
        assert any("STATUS=broker" in m for m in done), done
        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        agent.kill()
    assert "configuration reloaded" in agent.output()


def test_refused_reload_still_ends_with_ready(
    tmp_path: Path, mosquitto: MosquittoBroker, notify: tuple[socket.socket, str]
) -> None:
    sock, path = notify
    agent, config = start(tmp_path, mosquitto, path)
    try:
        read_until(sock, "READY=1")
        config.write_text("gateway: [this is not a mapping\n")
        agent.signal(signal.SIGHUP)
        read_until(sock, "RELOADING=1")
        # The agent keeps running on the old configuration; it must tell systemd the reload is over.
        read_until(sock, "READY=1", timeout=10)
    finally:
        agent.signal(signal.SIGTERM)
        agent.wait(30)
        agent.kill()
