"""Day one with faces configured and no usable template key: the agent runs its gates and cameras,
and its log line, ``edge-agent status`` and the systemd status line say exactly which credential
is wrong and how to make it."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MosquittoBroker
from tests.support.agent_process import AgentProcess, write_config
from tests.support.notify import NotifySocket
from tests.support.wait import wait_until

FACE_CAMERA = {"cameras": [{"device": {"kind": "camera_sim", "id": "cam-7a", "clip_seconds": 2}, "face": {}}]}


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (None, "credential 'face_template_key' is missing: the key that encrypts face templates"),
        ("not-a-key", "the 'face_template_key' credential is neither hex nor base64: the key that encrypts"),
    ],
)
def test_face_recognition_off_names_the_credential_and_how_to_make_it(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch, key: str | None, problem: str
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    if key is None:
        monkeypatch.delenv("EDGE_AGENT_FACE_TEMPLATE_KEY", raising=False)
    else:
        monkeypatch.setenv("EDGE_AGENT_FACE_TEMPLATE_KEY", key)
    config = write_config(tmp_path / "agent.yaml", extra=FACE_CAMERA)
    data = tmp_path / "data"
    notify = NotifySocket(tmp_path / "notify.sock")
    agent = AgentProcess(config, data, mosquitto.url, env={"NOTIFY_SOCKET": notify.path})
    try:
        agent.wait_for_output("face recognition is off: ", timeout=60)
        line = next(line for line in agent.output().splitlines() if "face recognition is off: " in line)
        assert problem in line, line
        for where in (
            "/etc/edge-agent/credentials/face_template_key",
            "$CREDENTIALS_DIRECTORY/face_template_key",
            "EDGE_AGENT_FACE_TEMPLATE_KEY",
            "openssl rand -hex 32 > /etc/edge-agent/credentials/face_template_key",
        ):
            assert where in line, line

        def status_with_faces() -> dict[str, Any] | None:
            status = json.loads((data / "status.json").read_text())
            return status if status.get("faces", {}).get("error") else None

        status = wait_until(
            status_with_faces, 30, 0.1, what="faces in status.json", ignore=(OSError, ValueError)
        )
        assert status is not None
        assert status["faces"] == {
            "enabled": False,
            "error": line.split("face recognition is off: ", 1)[1],
            "templates": 0,
            # The gallery cannot be read: no digest to prove deletions by (edge_agent.identity).
            "templates_digest": None,
            "persons_with_templates": None,
        }
        # The rest of the agent runs: its simulated source is up.
        assert status["devices"]["sim-0"]["running"] is True
        # systemctl status shows the notifier's STATUS= line: the problem is seen there too.
        notify.read_until("; face recognition off (edge-agent status says why)", timeout=30)
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
    finally:
        agent.kill()
        notify.close()
