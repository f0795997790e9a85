"""The real agent as a separate process, as systemd runs it (``edge-agent run``), on simulated
sources: for what only a process shows (signals, sd_notify, exit codes, kill -9).

Moved here from tests/agent/agent_process.py so tests outside tests/agent need not import it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.wait import WaitTimeout, wait_until


def write_config(
    path: Path,
    *,
    site: str = "t-site",
    gateway: str = "gw-1",
    interval_s: float = 0.01,
    devices: int = 1,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A configuration of ``devices`` simulated event sources; ``extra`` sections are merged in."""
    config: dict[str, Any] = {
        "gateway": {"site": site, "id": gateway},
        "agent": {"log_level": "info", "heartbeat_interval_s": 1.0, "shutdown_timeout_s": 5},
        "mqtt": {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "status_interval_s": 1.0},
        "outbox": {"synchronous": "full"},
        "simulated": [{"id": f"sim-{i}", "interval_s": interval_s} for i in range(devices)],
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def run_enroll(
    config: Path, person: str, *args: str | Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``edge-agent enroll --config C --person P ARGS...`` (photos and options) as an operator runs
    it, to completion; its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "enroll", "--config", str(config), "--person", person]
        + [str(a) for a in args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


class AgentProcess:
    """``python -m edge_agent.cli run`` with its output in ``agent-<data dir>.log``."""

    def __init__(
        self, config: Path, data_dir: Path, mqtt_url: str, env: dict[str, str] | None = None
    ) -> None:
        self.log_path = data_dir.parent / f"agent-{data_dir.name}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait() / kill()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "run",
                "--config",
                str(config),
                "--data-dir",
                str(data_dir),
                "--mqtt-url",
                mqtt_url,
            ],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, **(env or {})},
        )

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 20) -> None:
        def seen() -> bool:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent exited ({self.proc.returncode}) before {text!r}")
            return False

        try:
            wait_until(seen, timeout, 0.05, what=repr(text))
        except (WaitTimeout, AssertionError) as err:
            raise AssertionError(f"{err}; agent output:\n{self.output()[-3000:]}") from None
