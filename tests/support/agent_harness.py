"""A real gate for end-to-end tests: simulated card reader and turnstile speaking their bytes over
pty pairs, the real agent in this process (drivers, decisions, SQLite outbox, MQTT link, and the
local API when configured), and a real Mosquitto.

One place builds the gateway (:func:`build_gateway`) and one place builds the simulators
(:func:`gate_simulators`), so a change of either constructor is a change here only. The simulators
are imported from their own modules: tests are test equipment's users (STYLE.md 19), production
code is not.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from device_drivers import load_profile, resolve_profile
from device_drivers._io.sim import PtyEndpoint
from device_drivers.card.sim import CardReaderSimulator
from device_drivers.turnstile.sim import TurnstileSimulator
from edge_agent.clock import Clock
from edge_agent.config import ApiSettings, CommandSettings, load_config, parse_config
from edge_agent.gateway import Gateway
from edge_agent.sdnotify import Notifier
from tests.agent.roster_data import snapshot
from tests.support.broker import free_port, wait_for_port
from tests.support.wait import async_wait_until

if TYPE_CHECKING:
    from edge_agent.cameras import CameraWorker
    from edge_agent.faces import FaceService

__all__ = [
    "Gateway",
    "RunningGate",
    "build_gateway",
    "gate_config_text",
    "gate_simulators",
    "running_gate",
]

READER_PROFILE = "em4100_id12"
TURNSTILE_PROFILE = "turnstile_stx_xor"


def build_gateway(
    config: Any,
    *,
    data_dir: Path,
    config_path: Path | None = None,
    notifier: Notifier | None = None,
    clock: Clock | None = None,
) -> Gateway:
    """The one place tests construct the gateway."""
    return Gateway(config, data_dir=data_dir, config_path=config_path, notifier=notifier, clock=clock)


def gate_simulators(*, auto_pass: bool = True) -> tuple[CardReaderSimulator, TurnstileSimulator]:
    """A card reader (EM4100, ID-12 framing) and a turnstile (STX/XOR), each on its own pty pair."""
    reader = CardReaderSimulator(load_profile(resolve_profile(READER_PROFILE)), PtyEndpoint())
    turnstile = TurnstileSimulator(
        load_profile(resolve_profile(TURNSTILE_PROFILE)),
        PtyEndpoint(),
        passage_delay_s=0.1,
        auto_pass=auto_pass,
        passage_window_s=0.5,
    )
    return reader, turnstile


def gate_config_text(
    tmp_path: Path,
    mqtt_url: str,
    reader_url: str,
    turnstile_url: str,
    *,
    site: str,
    gateway: str,
    log_level: str = "info",
    protocol: str = "auto",
    username: str | None = None,
    agent_extra: str = "",
    extra_devices: str = "",
    commands: CommandSettings | Mapping[str, Any] | None = None,
    extra: str = "",
) -> str:
    """The YAML of one gate (``gate-1``: ``reader-in`` at the entry, ``turnstile-1``), roster
    version 1 seeded from ``tests/agent/roster_data.py``. ``agent_extra`` goes inside the
    ``agent:`` mapping (``", telemetry_interval_s: 0.5"``); ``extra`` is appended as top-level YAML.
    Without an ``api:`` section in ``extra`` the API is off: the default port is shared by tests
    running in parallel, and a second agent's API would fail to bind."""
    seed = tmp_path / "roster.json"
    seed.write_text(json.dumps(snapshot(1)))
    user = f", username: {username}" if username else ""
    if isinstance(commands, CommandSettings):
        commands_yaml = f"commands: {json.dumps(commands.model_dump(mode='json'))}\n"
    elif commands is not None:
        commands_yaml = f"commands: {json.dumps(dict(commands))}\n"
    else:
        commands_yaml = ""
    api_yaml = "" if re.search(r"^api:", extra, re.MULTILINE) else "api: {enabled: false}\n"
    return f"""
gateway: {{site: {site}, id: {gateway}, timezone: Asia/Shanghai}}
agent: {{data_dir: {tmp_path / "data"}, roster_seed: {seed}, shutdown_timeout_s: 3,
         log_level: {log_level}{agent_extra}}}
mqtt: {{url: "{mqtt_url}", protocol: "{protocol}", reconnect_min_s: 0.1, reconnect_max_s: 0.5{user}}}
devices:
  - {{kind: card_reader, id: reader-in, profile: {READER_PROFILE}, port: "{reader_url}", debounce_s: 0}}
  - {{kind: turnstile, id: turnstile-1, profile: {TURNSTILE_PROFILE}, port: "{turnstile_url}"}}
{extra_devices}gates:
  - id: gate-1
    readers: [{{device: reader-in, direction: entry}}]
    turnstile: turnstile-1
    passage_timeout_s: 1.5
{commands_yaml}{extra}{api_yaml}"""


class HasHeaders(Protocol):
    def header(self, role: str) -> dict[str, str]: ...


@dataclass
class RunningGate:
    """What a test holds while the gate runs."""

    agent: Gateway
    reader: CardReaderSimulator
    turnstile: TurnstileSimulator
    reader_url: str
    turnstile_url: str
    config_path: Path | None  # None when the agent was built from text
    api: ApiSettings | None = None

    @property
    def base_url(self) -> str:
        assert self.api is not None, "this gate was started without api="
        return f"http://127.0.0.1:{self.api.port}"

    @property
    def settings(self) -> ApiSettings:
        assert self.api is not None, "this gate was started without api="
        return self.api

    @property
    def processor(self) -> Any:
        """The agent's command processor (``commands.enabled`` must be true)."""
        processor = self.agent.commands
        assert processor is not None, "commands.enabled is false in this configuration"
        return processor

    def client(self, role: str | None = None, tokens: HasHeaders | None = None) -> httpx.AsyncClient:
        """An httpx client for the local API, with ``tokens``' bearer token for ``role``."""
        headers = tokens.header(role) if role and tokens else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=20)


async def _until_ready(task: asyncio.Task[int], what: str, predicate: Callable[[], object]) -> None:
    def ready() -> object:
        if task.done():
            # The agent stopped while we waited: say so now with its error, not after the timeout.
            err = task.exception() if not task.cancelled() else None
            outcome = repr(err) if err else f"exit {task.result()}"
            raise AssertionError(f"the agent stopped before {what} ({outcome})")
        return predicate()

    await async_wait_until(ready, 20, what=what)


@asynccontextmanager
async def running_gate(
    tmp_path: Path,
    mqtt_url: str,
    *,
    site: str = "gate-site",
    gateway: str = "gw-gate",
    auto_pass: bool = True,
    from_file: bool = False,
    api: Mapping[str, Any] | None = None,
    wait_connected: bool = True,
    **config: Any,
) -> AsyncIterator[RunningGate]:
    """Start simulators and the agent, wait until the gate is ready, stop both on exit.

    ``config`` goes to :func:`gate_config_text`. ``from_file`` writes ``gateway.yaml`` and gives the
    agent its path (what reload and push_config need); otherwise the agent is built from text.
    ``api`` (ApiSettings fields) serves the local API on a free port from the ``api:`` section.
    Ready means: gate-1 built, alerts and roster loaded, the link connected (unless
    ``wait_connected=False``), both simulated devices online, and the API listening.
    """
    reader, turnstile = gate_simulators(auto_pass=auto_pass)
    async with reader, turnstile:
        settings = ApiSettings.model_validate({"port": free_port(), **api}) if api is not None else None
        if settings is not None:
            # The agent serves the API itself, from the `api:` section, as in production.
            api_yaml = f"api: {json.dumps(settings.model_dump(mode='json'))}\n"
            config["extra"] = config.get("extra", "") + api_yaml
        text = gate_config_text(
            tmp_path, mqtt_url, reader.url, turnstile.url, site=site, gateway=gateway, **config
        )
        path: Path | None = None
        if from_file:
            path = tmp_path / "gateway.yaml"
            path.write_text(text)
            agent = build_gateway(load_config(path), data_dir=tmp_path / "data", config_path=path)
        else:
            agent = build_gateway(parse_config(text), data_dir=tmp_path / "data")
        task = asyncio.create_task(agent.run())
        try:
            await _until_ready(
                task,
                "gate-1, alerts and roster",
                lambda: (
                    "gate-1" in agent.gates
                    and agent.alert_book is not None
                    and agent.roster is not None
                    and agent.roster.version == 1
                ),
            )
            if wait_connected:
                await _until_ready(task, "the broker link", agent.link.connected.is_set)
            for device in ("reader-in", "turnstile-1"):
                online = lambda d=device: agent.devices.state.get(d, {}).get("online") is True  # noqa: E731
                await _until_ready(task, f"{device} online", online)
            if settings is not None:
                await asyncio.to_thread(wait_for_port, settings.port)
            yield RunningGate(agent, reader, turnstile, reader.url, turnstile.url, path, settings)
        finally:
            agent.request_stop("test")
            await asyncio.wait_for(task, 20)


def face_camera_worker(
    service: FaceService, camera_id: str, data_dir: Path, face: dict[str, Any] | None = None
) -> CameraWorker:
    """A face camera's worker on ``service``'s models, with its own attendance book in ``data_dir``,
    emitting nowhere, no roster person and no card: the one place tests build one (its constructor
    changes here only)."""
    from zoneinfo import ZoneInfo

    from edge_agent.attendance import AttendanceBook
    from edge_agent.cameras import CameraWorker
    from edge_agent.config import CameraSetup

    return CameraWorker(
        CameraSetup.model_validate({"device": {"kind": "camera_sim", "id": camera_id}, "face": face or {}}),
        models=service.models,
        person=lambda person_id: None,
        attendance=AttendanceBook(data_dir),
        emit=lambda event, attachment=None: None,
        source=lambda d: f"campus/s/g/{d}",
        timezone=ZoneInfo("UTC"),
        recent_card=lambda gate, person, window: False,
    )
