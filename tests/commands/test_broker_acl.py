"""The first of the two authorisations: the broker ACL of docs/COMMANDS.md, taken from the page
itself, in a real Mosquitto with passwords, in front of a real agent."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.commands import CommandSettings
from tests.commands.harness import (
    GW,
    PREFIX,
    SITE,
    Centre,
    call,
    ed25519_entry,
    running_agent,
    until,
    wait_subscribed,
)
from tests.conftest import MosquittoBroker

DOC = Path(__file__).resolve().parents[2] / "docs" / "COMMANDS.md"
PASSWORDS = {"centre-cmd": "centre-pw", f"{SITE}.{GW}": "gateway-pw", "bi-consumer": "bi-pw"}


def documented_acl() -> str:
    """The ACL block of the 'Broker ACL' section, for our site and gateway."""
    section = DOC.read_text().split("## Broker ACL", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block is not None, "no ACL block in COMMANDS.md"
    return block.group(1).replace("north-campus", SITE).replace("gw-gate-1", GW)


class Listener:
    """A subscriber with its own broker account; keeps what it is allowed to receive."""

    def __init__(self, port: int, user: str, topic_filter: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic_filter, qos=1)
        assert subscribed.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def bodies(self, part: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p in self.messages if part in t]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def acl_broker(tmp_path: Path) -> Any:
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    acl = tmp_path / "acl"
    acl.write_text(
        documented_acl() + "\n# a consumer of events (BI): reads events, writes nothing\n"
        "user bi-consumer\ntopic read campus/v1/+/+/events/#\ntopic read bi/#\n"
    )
    broker = MosquittoBroker(tmp_path, f"password_file {passwd}\nacl_file {acl}", anonymous=False)
    broker.start()
    yield broker
    broker.stop()


def test_only_the_centre_can_command_and_replies_stay_in_the_reply_prefix(
    tmp_path: Path, acl_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("EDGE_AGENT_COMMAND_KEYS", json.dumps({"keys": [ed25519_entry("centre-ed", key)]}))
    monkeypatch.setenv("EDGE_AGENT_MQTT_PASSWORD", PASSWORDS[f"{SITE}.{GW}"])
    port = acl_broker.port
    centre = Centre(port, v5=True, ed25519=key, username="centre-cmd", password=PASSWORDS["centre-cmd"])
    centre311 = Centre(port, v5=False, ed25519=key, username="centre-cmd", password=PASSWORDS["centre-cmd"])
    # A consumer that holds a correctly signed command (a leaked one, say) but no write rights.
    bi = Centre(port, v5=False, ed25519=key, username="bi-consumer", password=PASSWORDS["bi-consumer"])
    bi_events = Listener(port, "bi-consumer", "#")

    async def scenario() -> None:
        async with running_agent(
            tmp_path,
            acl_broker.url,
            CommandSettings(enabled=True, response_topic_prefixes=["centre/replies/"]),
            username=f"{SITE}.{GW}",
        ) as gw:
            # The centre's MQTT 5 request is answered on its response topic under centre/replies/.
            await wait_subscribed(centre)
            received = gw.processor.stats.received
            # The consumer's publish is dropped by the broker: the gateway never sees it.
            await asyncio.to_thread(
                bi.publish,
                f"{PREFIX}/cmd/open",
                json.dumps(bi.make("open", {"gate": "gate-1", "direction": "entry"})).encode(),
            )
            barrier = await call(centre311, centre311.make("diagnostics"))
            assert barrier.topic == f"{PREFIX}/cmd/diagnostics/reply" and barrier.body["result"] == "ok"
            assert gw.processor.stats.received == received + 1
            assert gw.turnstile.commands == []
            # A response topic outside centre/replies/ (here one the consumer reads): the gateway
            # answers on .../cmd/diagnostics/reply instead, with the correlation data. Publishing
            # where its ACL denies could cost it its connection (Mosquitto closes it).
            connects = gw.agent.link.stats.connects if gw.agent.link else 0
            stolen = centre.make("diagnostics")
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = "bi/loot"
            props.CorrelationData = b"corr-loot"
            await asyncio.to_thread(
                lambda: centre.client.publish(
                    f"{PREFIX}/cmd/diagnostics", json.dumps(stolen).encode(), qos=1, properties=props
                ).wait_for_publish(10)
            )
            rerouted = await asyncio.to_thread(centre311.wait, lambda r: r.body["id"] == stolen["id"])
            assert rerouted.topic == f"{PREFIX}/cmd/diagnostics/reply" and rerouted.body["result"] == "ok"
            await until(
                lambda: any(
                    e["data"].get("request_id") == stolen["id"] for e in bi_events.bodies("/events/gateway")
                ),
                "its audit event",
            )
            assert bi_events.bodies("bi/loot") == []
            assert bi_events.bodies("/cmd/") == []  # nor can the consumer read commands or replies
            assert gw.agent.link is not None and gw.agent.link.stats.connects == connects

    try:
        asyncio.run(scenario())
    finally:
        for client in (centre, centre311, bi):
            client.close()
        bi_events.close()
    assert {
        e["data"]["action"] for e in bi_events.bodies("/events/gateway") if e["type"].endswith("audit.v1")
    } == {"diagnostics"}
