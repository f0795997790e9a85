"""`systemctl reload edge-agent` as systemd sees it: SIGHUP (the unit's ExecReload=), then the
agent's RELOADING=1 and, when the reload is over, READY=1 on a real notify socket.

systemd (Type=notify) keeps the unit in state "reloading" from RELOADING=1 until READY=1, so a
reload must end with READY=1 whether the new file was applied or refused.
tests/agent/test_agent_process.py covers READY/WATCHDOG/STOPPING; these cover the reload.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MosquittoBroker
from tests.support.agent_process import AgentProcess, write_config
from tests.support.notify import NotifySocket


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    with NotifySocket(tmp_path / "notify.sock") as sock:
        yield sock


def start(tmp_path: Path, broker: MosquittoBroker, notify_path: str) -> tuple[AgentProcess, Path]:
    config = write_config(tmp_path / "agent.yaml", site="reload-site", interval_s=0.2)
    agent = AgentProcess(config, tmp_path / "data", broker.url, env={"NOTIFY_SOCKET": notify_path})
    return agent, config


def test_reload_sends_reloading_then_ready_with_status(
    tmp_path: Path, mosquitto: MosquittoBroker, notify: NotifySocket
) -> None:
    agent, config = start(tmp_path, mosquitto, notify.path)
    try:
        notify.read_until("READY=1")
        config.write_text(config.read_text().replace("log_level: info", "log_level: debug"))
        agent.signal(signal.SIGHUP)
        after = notify.read_until("RELOADING=1")
        assert not any("READY=1" in m for m in after[:-1]), "READY before RELOADING"
        done = notify.read_until("READY=1")
        assert any("STATUS=broker" in m for m in done), done
        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        agent.kill()
    assert "configuration reloaded" in agent.output()


def test_refused_reload_still_ends_with_ready(
    tmp_path: Path, mosquitto: MosquittoBroker, notify: NotifySocket
) -> None:
    agent, config = start(tmp_path, mosquitto, notify.path)
    try:
        notify.read_until("READY=1")
        config.write_text("gateway: [this is not a mapping\n")
        agent.signal(signal.SIGHUP)
        notify.read_until("RELOADING=1")
        # The agent keeps running on the old configuration; it must tell systemd the reload is over.
        notify.read_until("READY=1", timeout=10)
    finally:
        agent.signal(signal.SIGTERM)
        agent.wait(30)
        agent.kill()
