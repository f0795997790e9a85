"""Real parts for command tests: an in-process agent with a simulated turnstile on a pty, a real
Mosquitto, and a "centre" that signs commands and publishes them with a real paho client."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_drivers.profile import load_profile, resolve_profile
from device_drivers.simulators import CardReaderSimulator, PtyEndpoint, TurnstileSimulator
from edge_agent.agent import Agent
from edge_agent.commands import CommandProcessor, CommandSettings, sign_command
from edge_agent.config import load_config
from sync.envelope import format_time
from tests.agent.roster_data import snapshot

SITE, GW = "cmd-site", "gw-cmd"
PREFIX = f"campus/v1/{SITE}/{GW}"


def config_text(
    tmp_path: Path,
    url: str,
    reader_url: str,
    turnstile_url: str,
    *,
    protocol: str = "auto",
    log_level: str = "info",
    username: str | None = None,
    commands: CommandSettings | None = None,
) -> str:
    seed = tmp_path / "roster.json"
    seed.write_text(json.dumps(snapshot(1)))
    user = f", username: {username}" if username else ""
    return f"""
gateway: {{site: {SITE}, id: {GW}, timezone: Asia/Shanghai}}
agent: {{data_dir: {tmp_path / "data"}, roster_seed: {seed}, shutdown_timeout_s: 3, log_level: {log_level}}}
mqtt: {{url: "{url}", protocol: "{protocol}", reconnect_min_s: 0.1, reconnect_max_s: 0.5{user}}}
devices:
  - {{kind: card_reader, id: reader-in, profile: em4100_id12, port: "{reader_url}", debounce_s: 0}}
  - {{kind: turnstile, id: turnstile-1, profile: turnstile_stx_xor, port: "{turnstile_url}"}}
gates:
  - id: gate-1
    readers: [{{device: reader-in, direction: entry}}]
    turnstile: turnstile-1
    passage_timeout_s: 1.5
""" + (f"commands: {json.dumps(commands.model_dump(mode='json'))}\n" if commands is not None else "")


@dataclass
class Running:
    agent: Agent
    processor: CommandProcessor
    turnstile: TurnstileSimulator
    config_path: Path
    reader_url: str
    turnstile_url: str


async def until(pred: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running_agent(
    tmp_path: Path,
    url: str,
    settings: CommandSettings,
    *,
    protocol: str = "auto",
    auto_pass: bool = False,
    username: str | None = None,
) -> AsyncIterator[Running]:
    """The agent as configured with ``commands:``: it builds the processor and subscribes it itself."""
    reader = CardReaderSimulator(load_profile(resolve_profile("em4100_id12")), PtyEndpoint())
    turnstile = TurnstileSimulator(
        load_profile(resolve_profile("turnstile_stx_xor")),
        PtyEndpoint(),
        passage_delay_s=0.1,
        auto_pass=auto_pass,
        passage_window_s=0.5,
    )
    async with reader, turnstile:
        path = tmp_path / "gateway.yaml"
        path.write_text(
            config_text(
                tmp_path,
                url,
                reader.url,
                turnstile.url,
                protocol=protocol,
                username=username,
                commands=settings,
            )
        )
        agent = Agent(load_config(path), data_dir=tmp_path / "data", config_path=path)
        task = asyncio.create_task(agent.run())
        try:
            await until(lambda: agent.link is not None and agent.link.connected.is_set(), "agent connected")
            await until(lambda: "gate-1" in agent.gates, "gates built")
            await until(
                lambda: agent.device_state.get("turnstile-1", {}).get("online") is True, "turnstile online"
            )
            processor = agent.commands
            assert processor is not None, "commands.enabled is false in this configuration"
            yield Running(agent, processor, turnstile, path, reader.url, turnstile.url)
        finally:
            agent.request_stop("test")
            await asyncio.wait_for(task, 20)


def now_utc() -> datetime:
    return datetime.now(UTC)


def envelope(
    name: str,
    args: dict[str, Any] | None = None,
    *,
    key_id: str,
    issued: datetime | None = None,
    valid_s: float = 30,
    request_id: str | None = None,
) -> dict[str, Any]:
    issued = issued or now_utc()
    return {
        "id": request_id or f"req-{uuid.uuid4().hex[:12]}",
        "name": name,
        "args": args or {},
        "issued_at": format_time(issued),
        "expires_at": format_time(issued + timedelta(seconds=valid_s)),
        "nonce": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
        "key_id": key_id,
    }


@dataclass
class Reply:
    topic: str
    body: dict[str, Any]
    correlation: bytes | None


class Centre:
    """The central platform's command client: a real paho client, MQTT 5 or 3.1.1.

    MQTT 5: each request carries a response topic and correlation data, and replies are matched
    on the correlation data. 3.1.1: replies come on ``.../cmd/+/reply`` and are matched on ``id``.
    """

    def __init__(
        self,
        port: int,
        *,
        v5: bool,
        ed25519: Ed25519PrivateKey | None = None,
        hmac_secret: bytes | None = None,
        key_id: str = "centre-ed",
        username: str | None = None,
        password: str | None = None,
        response_topic: str | None = None,
    ) -> None:
        self.v5 = v5
        self.ed25519 = ed25519
        self.hmac_secret = hmac_secret
        self.key_id = key_id
        self.replies: list[Reply] = []
        self.response_topic = response_topic or f"centre/replies/{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(self.response_topic if v5 else f"{PREFIX}/cmd/+/reply", qos=1)
        if not self._subscribed.wait(10):
            raise TimeoutError("centre subscription not acknowledged")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        with self._lock:
            self.replies.append(Reply(msg.topic, orjson.loads(msg.payload), correlation))

    def sign(self, body: dict[str, Any], topic: str | None = None) -> dict[str, Any]:
        return sign_command(
            topic or f"{PREFIX}/cmd/{body['name']}",
            body,
            ed25519_private_key=self.ed25519,
            hmac_secret=self.hmac_secret,
        )

    @staticmethod
    def sign_with(key: Ed25519PrivateKey, body: dict[str, Any], topic: str) -> dict[str, Any]:
        """Signed by some other Ed25519 key (a forger's, or a second trusted one)."""
        return sign_command(topic, body, ed25519_private_key=key)

    def make(self, name: str, args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return self.sign(envelope(name, args, key_id=self.key_id, **kw))

    def publish(self, topic: str, payload: bytes, correlation: bytes | None = None) -> None:
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = self.response_topic
            props.CorrelationData = correlation or uuid.uuid4().bytes
        self.client.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)

    def wait(self, pred: Callable[[Reply], bool], timeout: float = 10, start: int = 0) -> Reply:
        """The first reply from index ``start`` on that matches."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for reply in self.replies[start:]:
                    if pred(reply):
                        return reply
            time.sleep(0.01)
        raise AssertionError(f"no matching reply in {timeout}s; got {[r.body for r in self.replies]}")

    def request(
        self,
        body: dict[str, Any] | bytes,
        *,
        name: str | None = None,
        topic: str | None = None,
        timeout: float = 10,
    ) -> Reply:
        """Publish a command (a dict is sent as JSON) and wait for its reply."""
        if isinstance(body, dict):
            name = name or str(body.get("name"))
            payload = json.dumps(body).encode()
            request_id = body.get("id")
        else:
            payload, request_id = body, None
        assert name is not None
        topic = topic or f"{PREFIX}/cmd/{name}"
        correlation = uuid.uuid4().bytes
        with self._lock:
            start = len(self.replies)  # 3.1.1: a replayed request has the id of an earlier reply
        self.publish(topic, payload, correlation)
        if self.v5:
            return self.wait(lambda r: r.correlation == correlation, timeout, start)
        return self.wait(lambda r: r.topic == f"{topic}/reply" and r.body["id"] == request_id, timeout, start)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def call(centre: Centre, body: dict[str, Any] | bytes, **kw: Any) -> Reply:
    return await asyncio.to_thread(centre.request, body, **kw)


async def wait_subscribed(centre: Centre) -> None:
    """The processor subscribes once the link is up; probe with diagnostics until it answers."""
    for _ in range(50):
        try:
            await asyncio.to_thread(centre.request, centre.make("diagnostics"), timeout=0.5)
            return
        except AssertionError:
            continue
    raise AssertionError("the gateway never answered a diagnostics probe")


def ed25519_entry(key_id: str, key: Ed25519PrivateKey, commands: list[str] | None = None) -> dict[str, Any]:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    entry: dict[str, Any] = {
        "id": key_id,
        "algorithm": "ed25519",
        "public_key": base64.b64encode(raw).decode(),
    }
    if commands is not None:
        entry["commands"] = commands
    return entry


def hmac_entry(key_id: str, secret: bytes) -> dict[str, Any]:
    return {"id": key_id, "algorithm": "hmac-sha256", "secret": base64.b64encode(secret).decode()}
