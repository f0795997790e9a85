"""A real gate (simulated reader and turnstile on pty pairs, the real agent over SQLite files, the
session's Mosquitto) with the local API served by uvicorn in the agent's loop on a free port.

The gate itself is tests/support/agent_harness.py; this adds the API's tokens and its defaults."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.gateway import Gateway
from sync.envelope import Event
from sync.event_types import Severity
from tests.support.agent_harness import RunningGate, running_gate
from tests.support.wait import until

__all__ = [
    "FACE_CAMERA",
    "GW",
    "SITE",
    "ApiGate",
    "Tokens",
    "jpeg",
    "raise_test_alert",
    "running_api",
    "until",
]

SITE, GW = "api-site", "gw-api"
ApiGate = RunningGate


@dataclass(frozen=True)
class Tokens:
    viewer: str
    operator: str
    admin: str

    def header(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> Tokens:
    """Fresh tokens in the credential the API reads (``EDGE_AGENT_API_TOKENS``)."""
    t = Tokens(*(secrets.token_urlsafe(18) for _ in range(3)))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv(
        "EDGE_AGENT_API_TOKENS",
        "# role:token[:name]\n"
        f"viewer:{t.viewer}:guard-desk\noperator:{t.operator}:guard-1\nadmin:{t.admin}\n",
    )
    return t


FACE_CAMERA = """
cameras:
  - device: {kind: camera_sim, id: cam-7a, loop: true, analysis_fps: 2, width: 320, height: 180}
    face:
      point: room-7a
    security: {}
"""


@pytest.fixture
def face_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The template encryption key, so the agent starts its face service."""
    key = secrets.token_hex(32)
    monkeypatch.setenv("EDGE_AGENT_FACE_TEMPLATE_KEY", key)
    return key


# A reader whose port does not exist: the API must list it offline.
OFFLINE_READER = '  - {{kind: card_reader, id: reader-lab, profile: em4100_id12, port: "{path}"}}\n'


@asynccontextmanager
async def running_api(
    tmp_path: Path, broker_url: str, *, extra_config: str = "", **settings: object
) -> AsyncIterator[RunningGate]:
    """The API gate: ``settings`` are ApiSettings fields; the agent is built from text."""
    async with running_gate(
        tmp_path,
        broker_url,
        site=SITE,
        gateway=GW,
        api=settings,
        commands={"enabled": True},
        extra_devices=OFFLINE_READER.format(path=tmp_path / "no-such-tty"),
        extra=extra_config,
    ) as gate:
        yield gate


def jpeg(width: int = 320, height: int = 180) -> bytes:
    image = np.full((height, width, 3), 90, np.uint8)
    cv2.rectangle(image, (100, 40), (180, 160), (0, 0, 255), 3)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return bytes(buf)


def raise_test_alert(agent: Gateway, reason: str, attachment: bytes | None = None) -> Event:
    event = Event(
        "edu.campus.security.test_alert.v1",
        agent.source("cam-1"),
        {"device": "cam-1", "reason": reason},
        severity=Severity.WARNING,
    )
    agent.emit(event, attachment=attachment)
    return event
