"""Real parts for command tests: an in-process agent with a simulated turnstile on a pty, a real
Mosquitto, and a "centre" that signs commands and publishes them with a real paho client."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
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

from edge_agent.commands import sign_command
from edge_agent.config import CommandSettings
from sync.envelope import format_time
from tests.support.agent_harness import RunningGate, gate_config_text, running_gate
from tests.support.wait import until, wait_until

__all__ = ["GW", "PREFIX", "SITE", "Centre", "Reply", "Running", "config_text", "running_agent", "until"]

SITE, GW = "cmd-site", "gw-cmd"
PREFIX = f"campus/v1/{SITE}/{GW}"
Running = RunningGate


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
    """This gateway's YAML (what a test writes back to ``gateway.yaml`` or pushes)."""
    return gate_config_text(
        tmp_path,
        url,
        reader_url,
        turnstile_url,
        site=SITE,
        gateway=GW,
        protocol=protocol,
        log_level=log_level,
        username=username,
        commands=commands,
    )


@asynccontextmanager
async def running_agent(
    tmp_path: Path,
    url: str,
    settings: CommandSettings,
    *,
    protocol: str = "auto",
    auto_pass: bool = False,
    username: str | None = None,
) -> AsyncIterator[RunningGate]:
    """The agent as configured with ``commands:``, from ``gateway.yaml`` (reload and push_config
    need the file): it builds the processor and subscribes it itself."""
    async with running_gate(
        tmp_path,
        url,
        site=SITE,
        gateway=GW,
        auto_pass=auto_pass,
        from_file=True,
        protocol=protocol,
        username=username,
        commands=settings,
    ) as gate:
        assert gate.agent.commands is not None, "commands.enabled is false in this configuration"
        yield gate


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

        def matching() -> Reply | None:
            with self._lock:
                return next((r for r in self.replies[start:] if pred(r)), None)

        try:
            return wait_until(matching, timeout, 0.01, what="a matching reply")
        except AssertionError:
            raise AssertionError(
                f"no matching reply in {timeout}s; got {[r.body for r in self.replies]}"
            ) from None

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
