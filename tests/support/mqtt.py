"""A real MQTT subscriber for tests: collects what the broker delivers, thread-safely."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.wait import WaitTimeout, wait_until


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return orjson.loads(self.payload)


class Collector:
    """Subscribes to ``topic_filter`` at QoS 1 and keeps every message in arrival order."""

    def __init__(self, url: str, topic_filter: str = "#", client_id: str | None = None) -> None:
        parts = urlsplit(url)
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or "", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=1)
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("subscription not acknowledged")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def snapshot(self, topic_part: str = "") -> list[Received]:
        with self._lock:
            return [m for m in self.messages if topic_part in m.topic]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0) -> list[Received]:
        """The messages so far, once ``predicate`` holds for them."""
        current: list[Received] = []

        def holds() -> bool:
            nonlocal current
            with self._lock:
                current = list(self.messages)
            return predicate(current)

        try:
            wait_until(holds, timeout, what="the expected messages")
        except WaitTimeout:
            raise AssertionError(f"timed out after {timeout}s; {len(current)} messages received") from None
        return current

    def events(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.snapshot("/events/")]

    def close(self) -> None:
        stop_network_thread(self.client)
        self.client.disconnect()


def stop_network_thread(client: mqtt.Client) -> None:
    """``client.loop_stop()``, minus a race in paho: its network thread clears ``Client._thread`` as
    it ends, and ``loop_stop`` can read it between its check and its ``join`` (AttributeError on
    None, seen under CI load). The thread has ended then, which is all a caller waits for."""
    with contextlib.suppress(AttributeError):
        client.loop_stop()
