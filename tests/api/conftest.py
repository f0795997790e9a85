"""A real gate (simulated reader and turnstile on pty pairs, the real agent over SQLite files, the
session's Mosquitto) with the local API served by uvicorn in the agent's loop on a free port."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from device_drivers.profile import load_profile, resolve_profile
from device_drivers.simulators import CardReaderSimulator, PtyEndpoint, TurnstileSimulator
from edge_agent.agent import Agent
from edge_agent.api import ApiSettings
from edge_agent.config import parse_config
from sync.envelope import Event
from sync.event_types import Severity
from tests.agent.roster_data import snapshot
from tests.conftest import free_port, wait_for_port

SITE, GW = "api-site", "gw-api"


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


@dataclass
class ApiGate:
    agent: Agent
    reader: CardReaderSimulator
    turnstile: TurnstileSimulator
    base_url: str
    settings: ApiSettings

    def client(self, role: str | None = None, tokens: Tokens | None = None) -> httpx.AsyncClient:
        headers = tokens.header(role) if role and tokens else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=20)


def config_text(tmp_path: Path, url: str, reader_url: str, turnstile_url: str, extra: str = "") -> str:
    seed = tmp_path / "roster.json"
    seed.write_text(json.dumps(snapshot(1)))
    return f"""
gateway: {{site: {SITE}, id: {GW}, timezone: Asia/Shanghai}}
agent: {{data_dir: {tmp_path / "data"}, roster_seed: {seed}, shutdown_timeout_s: 3}}
mqtt: {{url: "{url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5}}
commands: {{enabled: true}}
devices:
  - {{kind: card_reader, id: reader-in, profile: em4100_id12, port: "{reader_url}", debounce_s: 0}}
  - {{kind: turnstile, id: turnstile-1, profile: turnstile_stx_xor, port: "{turnstile_url}"}}
  - {{kind: card_reader, id: reader-lab, profile: em4100_id12, port: "{tmp_path / "no-such-tty"}"}}
gates:
  - id: gate-1
    readers: [{{device: reader-in, direction: entry}}]
    turnstile: turnstile-1
    passage_timeout_s: 1.5
{extra}"""


async def until(pred: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running_api(
    tmp_path: Path, broker_url: str, *, extra_config: str = "", **settings: object
) -> AsyncIterator[ApiGate]:
    reader = CardReaderSimulator(load_profile(resolve_profile("em4100_id12")), PtyEndpoint())
    turnstile = TurnstileSimulator(
        load_profile(resolve_profile("turnstile_stx_xor")),
        PtyEndpoint(),
        passage_delay_s=0.1,
        auto_pass=True,
        passage_window_s=0.5,
    )
    async with reader, turnstile:
        api = ApiSettings.model_validate({"port": free_port(), **settings})
        # The agent serves the API itself, from the `api:` section, as in production.
        api_yaml = f"api: {json.dumps(api.model_dump(mode='json'))}\n"
        config = parse_config(
            config_text(tmp_path, broker_url, reader.url, turnstile.url, extra_config + api_yaml)
        )
        agent = Agent(config, data_dir=tmp_path / "data")
        agent_task = asyncio.create_task(agent.run())
        await until(lambda: agent.alerts is not None and "gate-1" in agent.gates, "agent started")
        try:
            await asyncio.to_thread(wait_for_port, api.port)
            await until(lambda: agent.device_state.get("reader-in", {}).get("online") is True, "reader")
            yield ApiGate(agent, reader, turnstile, f"http://127.0.0.1:{api.port}", api)
        finally:
            agent.request_stop("test")
            await asyncio.wait_for(agent_task, 20)


def jpeg(width: int = 320, height: int = 180) -> bytes:
    image = np.full((height, width, 3), 90, np.uint8)
    cv2.rectangle(image, (100, 40), (180, 160), (0, 0, 255), 3)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return bytes(buf)


def raise_test_alert(agent: Agent, reason: str, attachment: bytes | None = None) -> Event:
    event = Event(
        "edu.campus.security.test_alert.v1",
        agent.source("cam-1"),
        {"device": "cam-1", "reason": reason},
        severity=Severity.WARNING,
    )
    agent.emit(event, attachment=attachment)
    return event
