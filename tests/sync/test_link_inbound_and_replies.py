"""The link's inbound order, SUBACK checks, awaited publishes and the reply queue, against a real
Mosquitto. Time-driven parts (reply ttl) use an injected monotonic clock, never long sleeps."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sync import (
    MqttConfig,
    MqttLink,
    NotConnected,
    Outbox,
    OutboxConfig,
    PublishFailed,
    ReplyQueueFull,
    reply_properties,
)
from sync.contract import SCHEMA_DIR, validate
from tests.conftest import MosquittoBroker, free_port
from tests.support.backoff import QuickBackoff
from tests.support.proxy import ProxyThread

# Not the gateway of test_mqtt_link.py: our retained statuses must not reach its collectors.
SITE, GW = "test-site", "gw-inbound"
SOURCE = f"campus/{SITE}/{GW}/gateway"
CMD = f"campus/v1/{SITE}/{GW}/cmd"


class FakeMonotonic:
    """Monotonic time that moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


async def wait_until(
    pred: Callable[[], bool], timeout: float, what: str, link: MqttLink | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            where = f" (link {link.state}, last error {link.stats.last_error!r})" if link is not None else ""
            raise AssertionError(f"timed out waiting for {what}{where}")
        await asyncio.sleep(0.01)


def config(url: str, **kw: Any) -> MqttConfig:
    return MqttConfig(url=url, connect_timeout_s=3, **kw)


def run_link(
    tmp_path: Path,
    cfg: MqttConfig,
    scenario: Callable[[MqttLink], Awaitable[None]],
    *,
    setup: Callable[[MqttLink], None] | None = None,
    **link_kw: Any,
) -> None:
    async def main() -> None:
        async with Outbox(tmp_path / "data", OutboxConfig(), SOURCE) as outbox:
            link_kw.setdefault("backoff", QuickBackoff())
            link = MqttLink(cfg, outbox, site=SITE, gateway=GW, version="test", **link_kw)
            if setup is not None:
                setup(link)
            task = asyncio.create_task(link.run())
            try:
                await scenario(link)
            finally:
                await link.shutdown(1.0)
                await asyncio.wait_for(task, 10)

    asyncio.run(main())


def publish_all(port: int, topic: str, payloads: list[bytes]) -> None:
    """Publish back to back at QoS 1 from another client; returns once the broker acked them all."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


class DurableSubscriber:
    """An MQTT 5 subscriber that records correlation data; its session outlives a broker restart
    where the broker persists."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.messages: list[tuple[str, bytes, bytes | None]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="durable-sub", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: (
            None if f.session_present else c.subscribe(topic_filter, 1)
        )
        self.client.reconnect_delay_set(0.05, 0.2)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("subscription not acknowledged")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), corr))

    def snapshot(self) -> list[tuple[str, bytes, bytes | None]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- inbound order ------------------------------------------------------------------------------


@pytest.mark.parametrize("queue_max", [1000, 8], ids=["roomy-queue", "backpressure"])
def test_messages_are_handled_one_after_another_in_order(
    tmp_path: Path, mosquitto: MosquittoBroker, queue_max: int
) -> None:
    rng = random.Random(queue_max)
    seen: list[int] = []
    active = [0, 0]  # now, most at once

    async def handler(topic: str, payload: bytes, props: Any) -> None:
        active[0] += 1
        active[1] = max(active[1], active[0])
        # Like the roster handler: the SQLite work runs in a thread and is awaited.
        await asyncio.to_thread(time.sleep, rng.uniform(0, 0.003))
        seen.append(int(payload))
        active[0] -= 1

    async def scenario(link: MqttLink) -> None:
        await asyncio.wait_for(link.connected.wait(), 10)
        await asyncio.to_thread(
            publish_all, mosquitto.port, f"{CMD}/order", [str(i).encode() for i in range(200)]
        )
        await wait_until(lambda: len(seen) == 200, 30, "200 messages handled")
        assert seen == list(range(200))
        assert active[1] == 1, "a handler started before the previous one finished"
        if queue_max == 8:
            assert link.stats.inbound_paused >= 1, "a queue of 8 never filled: backpressure untested"
        assert link.subscriptions[0].handled == 200

    run_link(
        tmp_path,
        config(mosquitto.url, inbound_queue_max=queue_max),
        scenario,
        setup=lambda link: link.subscribe(f"{CMD}/#", handler),
    )


def test_order_holds_across_a_broker_restart(tmp_path: Path, private_mosquitto: MosquittoBroker) -> None:
    broker = private_mosquitto
    seen: list[int] = []
    gate = threading.Event()  # holds the handler on the first message until the broker restarted

    async def handler(topic: str, payload: bytes, props: Any) -> None:
        await asyncio.to_thread(gate.wait, 30)
        await asyncio.to_thread(time.sleep, random.uniform(0, 0.002))
        seen.append(int(payload))

    async def scenario(link: MqttLink) -> None:
        await asyncio.wait_for(link.connected.wait(), 10)
        await asyncio.to_thread(publish_all, broker.port, f"{CMD}/a", [str(i).encode() for i in range(100)])
        # All of the first hundred reached the link; most still wait in its queue.
        await wait_until(lambda: link.stats.received >= 100, 20, "first hundred received")
        assert seen == []
        await asyncio.to_thread(broker.restart)
        await wait_until(lambda: link.stats.connects >= 2 and link.connected.is_set(), 20, "reconnect", link)
        gate.set()
        assert link.subscriptions[0].state == "subscribed"
        await asyncio.to_thread(
            publish_all, broker.port, f"{CMD}/b", [str(i).encode() for i in range(100, 200)]
        )
        await wait_until(lambda: len(seen) == 200, 30, "all 200 handled")
        # Those queued before the restart were handled, then the new ones, all in order.
        assert seen == list(range(200))

    run_link(tmp_path, config(broker.url), scenario, setup=lambda link: link.subscribe(f"{CMD}/#", handler))


def test_a_failing_handler_is_counted_and_the_next_message_still_handled(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    seen: list[bytes] = []

    async def handler(topic: str, payload: bytes, props: Any) -> None:
        if payload == b"bad":
            raise ValueError("bad message")
        seen.append(payload)

    async def scenario(link: MqttLink) -> None:
        await asyncio.wait_for(link.connected.wait(), 10)
        await asyncio.to_thread(publish_all, mosquitto.port, f"{CMD}/x", [b"1", b"bad", b"2"])
        await wait_until(lambda: len(seen) == 2, 10, "the good messages handled")
        assert seen == [b"1", b"2"]
        assert link.stats.handler_errors == 1 and link.subscriptions[0].errors == 1

    run_link(
        tmp_path, config(mosquitto.url), scenario, setup=lambda link: link.subscribe(f"{CMD}/#", handler)
    )


def test_shutdown_lets_the_message_in_hand_finish(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    started: list[bytes] = []
    done: list[bytes] = []

    async def handler(topic: str, payload: bytes, props: Any) -> None:
        started.append(payload)
        await asyncio.to_thread(time.sleep, 0.3)
        done.append(payload)

    async def scenario(link: MqttLink) -> None:
        await asyncio.wait_for(link.connected.wait(), 10)
        payloads = [str(i).encode() for i in range(20)]
        await asyncio.to_thread(publish_all, mosquitto.port, f"{CMD}/slow", payloads)
        await wait_until(lambda: bool(started), 10, "the handler started")
        # run_link shuts the link down now, with a message in hand and more queued.

    run_link(
        tmp_path, config(mosquitto.url), scenario, setup=lambda link: link.subscribe(f"{CMD}/#", handler)
    )
    assert done and done == started, "a handler was cut off in the middle of a message"
    assert len(done) < 20, "everything was handled before the shutdown: the test proves nothing"


# -- subscribe ----------------------------------------------------------------------------------


def test_connected_means_subscribed(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    got: list[bytes] = []

    async def handler(topic: str, payload: bytes, props: Any) -> None:
        got.append(payload)

    async def scenario(link: MqttLink) -> None:
        await asyncio.wait_for(link.connected.wait(), 10)
        # The SUBACK came before ``connected``: a message published right now arrives.
        sub = link.subscriptions[0]
        assert (sub.state, sub.granted_qos) == ("subscribed", 1)
        await asyncio.to_thread(publish_all, mosquitto.port, f"{CMD}/now", [b"first"])
        await wait_until(lambda: got == [b"first"], 10, "the first message")
        # A subscription added while connected is subscribed too (its SUBACK awaited).
        late = link.subscribe(f"campus/v1/{SITE}/late/#", handler)
        await wait_until(lambda: late.state == "subscribed", 10, "late subscription")
        await asyncio.to_thread(publish_all, mosquitto.port, f"campus/v1/{SITE}/late/x", [b"late"])
        await wait_until(lambda: got == [b"first", b"late"], 10, "the late message")

    run_link(
        tmp_path, config(mosquitto.url), scenario, setup=lambda link: link.subscribe(f"{CMD}/#", handler)
    )


async def read_packet(reader: asyncio.StreamReader) -> tuple[bytes, int, bytes]:
    """One MQTT control packet: (raw bytes, first byte, body after the remaining length)."""
    first = await reader.readexactly(1)
    raw, length, shift = b"", 0, 0
    while True:
        byte = await reader.readexactly(1)
        raw += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    body = await reader.readexactly(length)
    return first + raw + body, first[0], body


async def suback_refusing_proxy(upstream_port: int, marker: bytes) -> asyncio.Server:
    """Relays MQTT to Mosquitto, answering a SUBSCRIBE whose filter contains ``marker`` with reason
    code 0x87 (not authorised): Mosquitto 2.0 grants ACL-denied subscriptions and stays silent."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        refused: set[bytes] = set()

        async def upstream() -> None:
            while True:
                packet, kind, body = await read_packet(reader)
                if kind & 0xF0 == 0x80 and marker in body:
                    refused.add(body[:2])
                up_w.write(packet)
                await up_w.drain()

        async def downstream() -> None:
            while True:
                packet, kind, body = await read_packet(up_r)
                if kind == 0x90 and body[:2] in refused:
                    packet = packet[:-1] + b"\x87"  # one filter per SUBSCRIBE: the last byte
                writer.write(packet)
                await writer.drain()

        try:
            await asyncio.gather(upstream(), downstream())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            up_w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_refused_subscription_and_publish_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite campus/v1/{SITE}/#\n")
    broker = MosquittoBroker(tmp_path, extra_conf=f"acl_file {acl}")
    broker.start()

    async def handler(topic: str, payload: bytes, props: Any) -> None:
        pass

    async def main() -> None:
        proxy = await suback_refusing_proxy(broker.port, b"forbidden")
        port = proxy.sockets[0].getsockname()[1]
        async with Outbox(tmp_path / "data", OutboxConfig(), SOURCE) as outbox:
            link = MqttLink(
                config(f"mqtt://127.0.0.1:{port}"),
                outbox,
                site=SITE,
                gateway=GW,
                version="test",
                backoff=QuickBackoff(),
            )
            allowed = link.subscribe(f"{CMD}/#", handler)
            denied = link.subscribe("forbidden/#", handler)
            task = asyncio.create_task(link.run())
            try:
                await asyncio.wait_for(link.connected.wait(), 10)
                assert (allowed.state, allowed.granted_qos) == ("subscribed", 1)
                assert (denied.state, denied.granted_qos) == ("refused", None)
                assert link.stats.subscribe_refused == 1
                status = orjson.loads(link.status_payload("online", "periodic"))
                validate(status, SCHEMA_DIR / "status.json")
                assert status["subscriptions_refused"] == ["forbidden/#"]
                assert any(
                    "refused the subscription to forbidden/#" in r.getMessage() for r in caplog.records
                )
                # Still connected and serving: an awaited publish returns after its PUBACK ...
                await link.publish(f"campus/v1/{SITE}/{GW}/telemetry", b"{}")
                # ... and one the broker refuses (its ACL) raises with the reason code.
                with pytest.raises(PublishFailed) as err:
                    await link.publish("forbidden/x", b"{}")
                assert err.value.code == "publish_refused" and err.value.reason_code == 0x87
                assert err.value.topic == "forbidden/x"
            finally:
                await link.shutdown(1.0)
                await asyncio.wait_for(task, 10)
        proxy.close()

    try:
        asyncio.run(main())
    finally:
        broker.stop()


# -- awaited publish ----------------------------------------------------------------------------


def test_a_bad_filter_is_refused_at_subscribe(tmp_path: Path) -> None:
    async def handler(topic: str, payload: bytes, props: Any) -> None:
        pass

    async def scenario(link: MqttLink) -> None:
        for bad in ["a/#/b", "a/b+", "", "a/#x"]:
            with pytest.raises(ValueError):
                link.subscribe(bad, handler)
        assert [s.topic_filter for s in link.subscriptions] == ["a/+/b/#"]

    run_link(
        tmp_path,
        config(f"mqtt://127.0.0.1:{free_port()}"),
        scenario,
        setup=lambda link: link.subscribe("a/+/b/#", handler),
    )


def test_awaited_publish_raises_when_offline(tmp_path: Path) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"

    async def scenario(link: MqttLink) -> None:
        with pytest.raises(NotConnected) as err:
            await link.publish(link.topics.telemetry, b"{}")
        assert err.value.code == "not_connected" and err.value.topic == link.topics.telemetry
        assert link.stats.publish_failures == 1

    run_link(tmp_path, config(url), scenario)


def test_reconnects_are_spaced_by_the_backoff_it_is_handed(tmp_path: Path) -> None:
    port = free_port()
    broker = MosquittoBroker(tmp_path)
    broker.port = port
    backoff = QuickBackoff(0.05)

    async def scenario(link: MqttLink) -> None:
        await wait_until(lambda: link.stats.connect_failures >= 3, 10, "failed attempts")
        assert backoff.delays >= 3 and backoff.resets == 0
        await asyncio.to_thread(broker.start)
        await asyncio.wait_for(link.connected.wait(), 10)
        assert backoff.resets == 0, "connecting alone does not start the backoff over"

    try:
        run_link(tmp_path / "run", config(f"mqtt://127.0.0.1:{port}"), scenario, backoff=backoff)
    finally:
        broker.stop()


def test_the_backoff_starts_over_only_after_a_connection_that_lived_a_keepalive(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """A broker that accepts and drops at once (overloaded after an outage) must see the delays
    grow; a connection that lived a keep-alive was healthy, and the next loss starts over."""
    backoff = QuickBackoff(0.05)
    skipped = [0.0]  # the link's clock runs with real time, plus what the test skips ahead

    async def drop(link: MqttLink) -> None:
        # A reset that lands before the proxy holds the new connection misses it (seen under load:
        # the link stayed connected): reset until the link has seen the loss.
        start, deadline = link.stats.connects, time.monotonic() + 20
        while link.connected.is_set() and link.stats.connects == start:
            assert time.monotonic() < deadline, "the proxy never dropped the link"
            proxy.reset()
            await asyncio.sleep(0.2)

    async def scenario(link: MqttLink) -> None:
        await asyncio.wait_for(link.connected.wait(), 10)
        await drop(link)  # dropped at once: no reset, the next delay grows
        await wait_until(
            lambda: link.stats.connects >= 2 and link.connected.is_set(), 30, "reconnected", link
        )
        assert backoff.resets == 0 and backoff.delays == 1
        skipped[0] += link.config.keepalive_s  # this connection lived a keep-alive
        await drop(link)
        await wait_until(
            lambda: link.stats.connects >= 3 and link.connected.is_set(), 30, "reconnected", link
        )
        assert backoff.resets == 1 and backoff.delays == 2

    with ProxyThread(mosquitto.port) as proxy:
        run_link(
            tmp_path,
            # A short keep-alive: should a reset go unseen on a loaded machine, the loss is still
            # found within the waits above (2 x keepalive + 1 s).
            config(proxy.url, keepalive_s=5),
            scenario,
            backoff=backoff,
            monotonic=lambda: time.monotonic() + skipped[0],
        )


# -- replies ------------------------------------------------------------------------------------


class BrokerGate:
    """A TCP relay in front of the broker that can play "broker down": it cuts every connection and
    refuses new ones until :meth:`up`. The broker itself keeps running (and keeps its port), so the
    subscriber on the other side stays subscribed and a restart cannot lose the port to another
    process on a busy machine."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.is_up = True
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def down(self) -> None:
        self.is_up = False
        for writer in list(self._writers):
            writer.transport.abort()

    def up(self) -> None:
        self.is_up = True

    async def close(self) -> None:
        self.down()
        if self._server is not None:
            self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_up:
            writer.transport.abort()
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.update((writer, up_w))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except ConnectionError:
                pass
            finally:
                w.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        finally:
            self._writers.difference_update((writer, up_w))


def test_reply_sent_while_the_broker_is_down_arrives_after_it_is_back(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    reply_topic = f"campus/v1/{SITE}/{GW}/cmd/reply/open-door"
    sub = DurableSubscriber(mosquitto.port, f"campus/v1/{SITE}/{GW}/cmd/reply/#")

    async def main() -> None:
        gate = BrokerGate(mosquitto.port)
        await gate.start()
        async with Outbox(tmp_path / "data", OutboxConfig(), SOURCE) as outbox:
            link = MqttLink(
                config(f"mqtt://127.0.0.1:{gate.port}"),
                outbox,
                site=SITE,
                gateway=GW,
                version="test",
                backoff=QuickBackoff(),
            )
            task = asyncio.create_task(link.run())
            try:
                await asyncio.wait_for(link.connected.wait(), 10)
                gate.down()
                await wait_until(lambda: not link.connected.is_set(), 10, "the link notices", link)
                link.send_reply(reply_topic, b"r1", reply_properties(b"corr-1"))
                link.send_reply(reply_topic, b"r2", reply_properties(b"corr-2"))
                assert link.replies_waiting == 2
                await wait_until(lambda: link.stats.connect_failures >= 2, 10, "failed reconnects", link)
                assert link.replies_waiting == 2  # nothing lost or given up while down
                gate.up()
                await wait_until(lambda: link.replies_waiting == 0, 20, "replies sent once back", link)
                assert link.stats.replies_sent == 2 and not link.stats.replies_expired
                await wait_until(lambda: len(sub.snapshot()) >= 2, 20, "replies at the subscriber")
                assert sub.snapshot() == [(reply_topic, b"r1", b"corr-1"), (reply_topic, b"r2", b"corr-2")]
            finally:
                await link.shutdown(1.0)
                await asyncio.wait_for(task, 10)
                await gate.close()

    try:
        asyncio.run(main())
    finally:
        sub.close()


def test_reply_older_than_its_ttl_expires_with_the_callback(tmp_path: Path) -> None:
    port = free_port()
    broker = MosquittoBroker(tmp_path)
    broker.port = port
    clock = FakeMonotonic()
    expired: list[tuple[str, str]] = []
    reply_short = f"campus/v1/{SITE}/{GW}/cmd/reply/short"
    reply_long = f"campus/v1/{SITE}/{GW}/cmd/reply/long"

    async def scenario(link: MqttLink) -> None:
        # The broker is not there yet.
        link.send_reply(reply_short, b"short", ttl_s=5)
        link.send_reply(reply_long, b"long", ttl_s=60)
        clock.advance(4.9)
        await asyncio.sleep(0.1)
        assert expired == [] and link.replies_waiting == 2
        clock.advance(0.2)
        await wait_until(lambda: bool(expired), 5, "the short reply expired")
        assert expired == [(reply_short, "ttl")]
        assert link.stats.replies_expired == {"ttl": 1} and link.replies_waiting == 1
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: link.replies_waiting == 0, 20, "the long reply sent", link)
        assert link.stats.replies_sent == 1 and expired == [(reply_short, "ttl")]

    try:
        run_link(
            tmp_path / "run",
            config(f"mqtt://127.0.0.1:{port}"),
            scenario,
            monotonic=clock,
            on_reply_expired=lambda topic, reason: expired.append((topic, reason)),
        )
    finally:
        broker.stop()


def test_full_reply_queue_refuses_and_shutdown_reports_what_is_left(tmp_path: Path) -> None:
    expired: list[tuple[str, str]] = []

    async def scenario(link: MqttLink) -> None:
        link.send_reply("a/reply", b"1")
        link.send_reply("a/reply", b"2")
        with pytest.raises(ReplyQueueFull) as err:
            link.send_reply("a/reply", b"3")
        assert err.value.code == "reply_queue_full" and link.stats.replies_refused == 1

    run_link(
        tmp_path,
        config(f"mqtt://127.0.0.1:{free_port()}", reply_queue_max=2),
        scenario,
        on_reply_expired=lambda topic, reason: expired.append((topic, reason)),
    )
    assert expired == [("a/reply", "shutdown"), ("a/reply", "shutdown")]
