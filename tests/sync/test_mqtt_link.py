"""The MQTT link against a real Mosquitto: delivery, order, reconnects, auth, TLS, protocol fallback."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sync import EVENT_TYPES, Event, Lane, MqttConfig, MqttLink, Outbox, OutboxConfig, Severity, TlsConfig
from sync.contract import SCHEMA_DIR, validate, validate_event
from tests.conftest import MosquittoBroker, free_port
from tests.mqtt_helpers import Collector
from tests.support.backoff import QuickBackoff

SITE, GW = "test-site", "gw-1"
SOURCE = f"campus/{SITE}/{GW}/gateway"


def heartbeat(i: int, gw: str = GW) -> Event:
    return Event(
        "edu.campus.device.heartbeat.v1",
        f"campus/{SITE}/{gw}/r1",
        {"device": "r1", "kind": "sim", "uptime_s": float(i), "counter": i},
    )


def lifecycle(i: int, gw: str = GW) -> Event:
    return Event(
        "edu.campus.gateway.started.v1",
        f"campus/{SITE}/{gw}/gateway",
        {"version": "t", "hostname": "h", "outbox_backlog": i, "previous_shutdown": "clean"},
    )


def alert(i: int, gw: str = GW) -> Event:
    return Event(
        "edu.campus.security.test_alert.v1",
        f"campus/{SITE}/{gw}/cam1",
        {"device": "cam1", "reason": f"test {i}"},
        severity=Severity.CRITICAL,
    )


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def with_link(
    tmp_path: Path,
    config: MqttConfig,
    scenario: Callable[[Outbox, MqttLink], Awaitable[None]],
    password: str | None = None,
    key_file: str | None = None,
) -> None:
    async def main() -> None:
        async with Outbox(tmp_path / "data", OutboxConfig(), SOURCE) as outbox:
            link = MqttLink(
                config,
                outbox,
                site=SITE,
                gateway=GW,
                version="test",
                backoff=QuickBackoff(),
                password=password,
                client_key_file=key_file,
            )
            task = asyncio.create_task(link.run())
            try:
                await scenario(outbox, link)
            finally:
                await link.shutdown(1.0)
                await asyncio.wait_for(task, 10)

    asyncio.run(main())


def fast(url: str, **kw: Any) -> MqttConfig:
    return MqttConfig(url=url, reconnect_min_s=0.1, reconnect_max_s=0.5, connect_timeout_s=3, **kw)


def test_drain_publishes_every_event_valid_with_status(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario(outbox: Outbox, link: MqttLink) -> None:
        await asyncio.gather(*[outbox.append_nowait(heartbeat(i)) for i in range(500)])
        await outbox.append(lifecycle(1))
        await outbox.append(alert(1))
        await wait_until(lambda: outbox.pending_total == 0, 30, "drain")

    with_link(tmp_path, fast(mosquitto.url), scenario)
    msgs = collector.wait_for(
        lambda m: (
            sum("/events/" in x.topic for x in m) >= 502
            and any(x.topic.endswith("/status") and x.json()["state"] == "offline" for x in m)
        )
    )
    collector.close()
    events = [m.json() for m in msgs if "/events/" in m.topic]
    for event in events:
        validate_event(event)
        area = EVENT_TYPES[event["type"]].area
        assert event["source"].startswith(f"campus/{SITE}/{GW}/")
    topics_of = {m.topic for m in msgs}
    assert f"campus/v1/{SITE}/{GW}/events/device" in topics_of
    assert f"campus/v1/{SITE}/{GW}/events/security" in topics_of
    assert f"campus/v1/{SITE}/{GW}/alerts/critical" in topics_of
    assert area
    statuses = [m.json() for m in msgs if m.topic.endswith("/status")]
    for status in statuses:
        validate(status, SCHEMA_DIR / "status.json")
    assert statuses[0]["state"] == "online"
    assert statuses[-1]["state"] == "offline" and statuses[-1]["reason"] == "shutdown"
    assert sorted(e["seq"] for e in events) == list(range(1, 503))


def test_new_alert_jumps_a_backlog(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/events/#")
    window = 50
    at_alert: dict[str, int] = {}

    async def main() -> None:
        async with Outbox(tmp_path / "data", OutboxConfig(), SOURCE) as outbox:
            # A backlog of days, committed before the link comes up.
            await asyncio.gather(*[outbox.append_nowait(heartbeat(i)) for i in range(20_000)])
            link = MqttLink(
                fast(mosquitto.url, inflight_window=window),
                outbox,
                site=SITE,
                gateway=GW,
                version="t",
                backoff=QuickBackoff(),
            )
            task = asyncio.create_task(link.run())
            try:
                await wait_until(lambda: link.stats.acked >= 1000, 30, "backlog draining")
                await outbox.append(alert(1))
                # Rows already handed to the broker when the alert became durable; the rest is backlog.
                at_alert["published"] = link.stats.published
                await wait_until(lambda: outbox.pending_total == 0, 60, "drain")
            finally:
                await link.shutdown(1.0)
                await asyncio.wait_for(task, 10)

    asyncio.run(main())
    backlog = 20_000 - at_alert["published"]
    assert backlog > 5_000, "the backlog was nearly gone when the alert came; the test proves nothing"
    msgs = collector.wait_for(lambda m: len(m) >= 20_001)
    collector.close()
    types = [m.json()["type"] for m in msgs]
    telemetry_after = len(types) - types.index("edu.campus.security.test_alert.v1") - 1
    # Published ahead of the backlog: all that was not yet handed to the broker when it was committed,
    # less at most one fill of the in-flight window, still came after it.
    assert telemetry_after >= backlog - window, (telemetry_after, backlog)


def test_broker_restart_mid_stream_loses_nothing_and_keeps_lane_order(tmp_path: Path) -> None:
    # The broker's own redelivery to the subscriber is bounded too (the harness's default is no limit):
    # what it had in flight to the subscriber when it stopped comes again after the restart.
    broker = MosquittoBroker(
        tmp_path,
        extra_conf=f"persistence true\npersistence_location {tmp_path}/\nmax_inflight_messages 20\n",
    )
    broker.start()
    # A persistent subscriber session, so the broker keeps what arrives while it is down.
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    received: list[tuple[str, bytes]] = []
    sub = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="restart-sub", clean_session=False, protocol=mqtt.MQTTv311
    )
    sub.on_message = lambda c, u, m: received.append((m.topic, bytes(m.payload)))
    sub.on_connect = lambda c, *a: c.subscribe(f"campus/v1/{SITE}/{GW}/events/#", qos=1)
    sub.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # paho's hint says int; it takes seconds
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    time.sleep(0.3)
    total = 20_000

    async def scenario(outbox: Outbox, link: MqttLink) -> None:
        # A mixed stream in all three lanes, produced while the link drains.
        for i in range(total):
            ev = alert(i) if i % 50 == 0 else lifecycle(i) if i % 7 == 0 else heartbeat(i)
            outbox.append_nowait(ev)
            if i % 1000 == 999:
                await asyncio.sleep(0.01)
            if i == 8000:
                await wait_until(lambda: link.stats.acked > 3000, 30, "first part delivered")
                broker.stop()
                # Down until the link has noticed (a fault, not a guessed wait), then back.
                await wait_until(lambda: not link.connected.is_set(), 30, "the link saw the broker go")
                broker.start()
        await wait_until(lambda: outbox.pending_total == 0 and link.connected.is_set(), 120, "full drain")
        assert link.stats.connects >= 2
        reconnects.append(link.stats.connects - 1)

    reconnects: list[int] = []
    try:
        with_link(tmp_path, fast(broker.url, inflight_window=100), scenario)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len({orjson.loads(p)["seq"] for _, p in received}) < total:
            time.sleep(0.1)
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
    events = [orjson.loads(p) for _, p in received]
    seqs = [e["seq"] for e in events]
    assert set(seqs) == set(range(1, total + 1)), (
        f"missing {sorted(set(range(1, total + 1)) - set(seqs))[:10]}"
    )
    # A duplicate always carries the same id as the original.
    ids: dict[int, str] = {}
    for e in events:
        assert ids.setdefault(e["seq"], e["id"]) == e["id"]
    duplicates = len(seqs) - len(set(seqs))
    # Only the in-flight window (per lane) can be sent twice per reconnect of the link, and the
    # broker's 20 in flight to the subscriber once after its restart.
    assert duplicates <= 3 * 100 * 2 * reconnects[0] + 20, (duplicates, reconnects)
    # Per-lane order holds: first occurrences per lane are increasing.
    for lane in Lane:
        first_seen: list[int] = []
        seen: set[int] = set()
        for e in events:
            if EVENT_TYPES[e["type"]].lane == lane and e["seq"] not in seen:
                seen.add(e["seq"])
                first_seen.append(e["seq"])
        assert first_seen == sorted(first_seen), f"lane {lane.name} out of order"


def test_unreachable_broker_buffers_then_delivers(tmp_path: Path) -> None:
    port = free_port()
    broker = MosquittoBroker(tmp_path)
    broker.port = port
    url = f"mqtt://127.0.0.1:{port}"

    async def scenario(outbox: Outbox, link: MqttLink) -> None:
        await asyncio.gather(*[outbox.append_nowait(heartbeat(i)) for i in range(300)])
        await wait_until(lambda: link.stats.connect_failures >= 3, 20, "connection attempts")
        assert link.state in ("connecting", "disconnected")
        assert outbox.pending_total == 300
        broker.start()
        try:
            await wait_until(lambda: outbox.pending_total == 0, 30, "delivery after the broker came up")
        finally:
            await link.shutdown(1.0)
            broker.stop()

    with_link(tmp_path, fast(url), scenario)


def _password_broker(tmp_path: Path) -> MosquittoBroker:
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "gateway", "right-password"], check=True)
    broker = MosquittoBroker(tmp_path, extra_conf=f"password_file {pwfile}", anonymous=False)
    broker.start()
    return broker


def test_wrong_password_is_a_clear_error_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = _password_broker(tmp_path)
    try:

        async def wrong(outbox: Outbox, link: MqttLink) -> None:
            await outbox.append(heartbeat(1))
            await wait_until(lambda: link.stats.auth_failures >= 2, 20, "auth retries")
            assert link.state in ("refused", "connecting")
            assert outbox.pending_total == 1

        with_link(tmp_path / "a", fast(broker.url, username="gateway"), wrong, password="wrong")
        assert any("refused our credentials" in r.getMessage() for r in caplog.records)

        async def right(outbox: Outbox, link: MqttLink) -> None:
            await outbox.append(heartbeat(1))
            await wait_until(lambda: outbox.pending_total == 0, 20, "delivery with the right password")

        with_link(tmp_path / "b", fast(broker.url, username="gateway"), right, password="right-password")
    finally:
        broker.stop()


def test_mqtt_311_and_fallback_from_5(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    async def deliver(outbox: Outbox, link: MqttLink) -> None:
        await outbox.append(heartbeat(1))
        await wait_until(lambda: outbox.pending_total == 0, 20, "delivery")
        assert link.stats.protocol == "3.1.1"

    with_link(tmp_path / "forced", fast(mosquitto.url, protocol="3.1.1"), deliver)

    # An MQTT 3.1.1-only broker: a proxy in front of Mosquitto that answers a v5 CONNECT the way
    # such a broker does (CONNACK, return code 1 "unacceptable protocol version") and relays 3.1.1.
    async def old_broker_proxy(port_holder: list[int], refused: list[int]) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.read(4096)
            # fixed header (1) + remaining length (1..4) + "\x00\x04MQTT" + protocol level
            i = 1
            while head[i] & 0x80:
                i += 1
            level = head[i + 1 + 6]
            if level == 5:
                refused.append(1)
                writer.write(b"\x20\x02\x00\x01")
                await writer.drain()
                writer.close()
                return
            up_r, up_w = await asyncio.open_connection("127.0.0.1", mosquitto.port)
            up_w.write(head)

            async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                try:
                    while data := await r.read(65536):
                        w.write(data)
                        await w.drain()
                except (ConnectionError, asyncio.CancelledError):
                    pass
                finally:
                    w.close()

            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_holder.append(server.sockets[0].getsockname()[1])
        return server

    async def main() -> None:
        port: list[int] = []
        refused: list[int] = []
        server = await old_broker_proxy(port, refused)
        async with Outbox(tmp_path / "auto", OutboxConfig(), SOURCE) as outbox:
            link = MqttLink(
                fast(f"mqtt://127.0.0.1:{port[0]}"),
                outbox,
                site=SITE,
                gateway=GW,
                version="t",
                backoff=QuickBackoff(),
            )
            task = asyncio.create_task(link.run())
            await outbox.append(heartbeat(1))
            await wait_until(lambda: outbox.pending_total == 0, 20, "delivery through the 3.1.1 broker")
            assert refused, "the v5 attempt never reached the old broker"
            assert link.stats.protocol == "3.1.1"
            await link.shutdown(1.0)
            await task
        server.close()

    asyncio.run(main())


def _make_tls(tmp_path: Path) -> dict[str, Path]:
    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def write_key(k: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return path

    now = dt.datetime.now(dt.UTC)
    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test campus CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, san: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        k = key()
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if san:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return b.sign(ca_key, hashes.SHA256()), k

    server, server_key = leaf("localhost", True)
    client, client_key = leaf("gw-1", False)
    out = {"ca": tmp_path / "ca.pem", "server": tmp_path / "server.pem", "client": tmp_path / "client.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["server"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    out["client"].write_bytes(client.public_bytes(serialization.Encoding.PEM))
    out["server_key"] = write_key(server_key, tmp_path / "server.key")
    out["client_key"] = write_key(client_key, tmp_path / "client.key")
    return out


def test_mutual_tls(tmp_path: Path) -> None:
    pki = _make_tls(tmp_path)
    broker = MosquittoBroker(
        tmp_path,
        listener_conf=f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server_key']}\n"
        "require_certificate true",
    )
    broker.start()
    port = broker.port
    url = f"mqtts://localhost:{port}"
    try:

        async def deliver(outbox: Outbox, link: MqttLink) -> None:
            await outbox.append(heartbeat(1))
            await wait_until(lambda: outbox.pending_total == 0, 20, "delivery over TLS")

        tls = TlsConfig(ca_file=str(pki["ca"]), cert_file=str(pki["client"]), key_credential="client_key")
        with_link(tmp_path / "ok", fast(url, tls=tls), deliver, key_file=str(pki["client_key"]))

        async def no_client_cert(outbox: Outbox, link: MqttLink) -> None:
            await outbox.append(heartbeat(1))
            await wait_until(lambda: link.stats.connect_failures >= 2, 20, "refused handshakes")
            assert outbox.pending_total == 1

        with_link(tmp_path / "nocert", fast(url, tls=TlsConfig(ca_file=str(pki["ca"]))), no_client_cert)
    finally:
        broker.stop()


def test_alert_snapshot_is_published_beside_its_event(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    import cv2
    import numpy as np

    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    assert ok
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    event = alert(7)

    async def scenario(outbox: Outbox, link: MqttLink) -> None:
        outbox.submit(event, attachment=jpeg.tobytes())
        await outbox.flush()
        await wait_until(lambda: outbox.pending_total == 0, 20, "event and snapshot acknowledged")

    with_link(tmp_path, fast(mosquitto.url), scenario)
    msgs = collector.wait_for(lambda m: any("/snapshots/" in x.topic for x in m))
    collector.close()
    snap = next(m for m in msgs if "/snapshots/" in m.topic)
    assert snap.topic == f"campus/v1/{SITE}/{GW}/snapshots/{event.id}"
    assert snap.payload == jpeg.tobytes()
    assert any(m.topic.endswith("/alerts/critical") and m.json()["id"] == event.id for m in msgs)


def test_drain_limit_paces_events_and_bytes_and_lets_a_big_row_through() -> None:
    from sync.mqtt.ratelimit import DrainLimit

    off = DrainLimit(None, 0, now=0.0)
    assert not off.enabled and off.acquire(10**9, 0.0) == 0.0
    limit = DrainLimit(100, 10_000, now=0.0)
    # One second of burst, then one event per 1/100 s.
    assert all(limit.acquire(50, 0.0) == 0.0 for _ in range(100))
    assert limit.acquire(50, 0.0) == pytest.approx(0.01)
    assert limit.acquire(50, 0.01) == 0.0
    # Bytes bind too: 10,000 B/s, and a row larger than the whole bucket waits for a full bucket,
    # then goes (into debt) rather than never.
    limit = DrainLimit(None, 10_000, now=0.0)
    assert limit.acquire(25_000, 0.0) == 0.0
    assert limit.acquire(1_000, 0.0) == pytest.approx(1.6)
    assert limit.acquire(1_000, 1.6) == 0.0


def test_window_follows_the_brokers_receive_maximum(tmp_path: Path) -> None:
    # A broker that takes fewer unacknowledged publishes than our window says so in its MQTT 5
    # CONNACK; the link keeps to it (paho does not on its own) and still delivers everything.
    with MosquittoBroker(tmp_path, extra_conf="max_inflight_messages 20") as broker:

        async def scenario(outbox: Outbox, link: MqttLink) -> None:
            await asyncio.gather(*[outbox.append_nowait(heartbeat(i)) for i in range(500)])
            await wait_until(lambda: outbox.pending_total == 0, 30, "drain")
            assert link.stats.window == 20
            assert link.stats.connects == 1

        with_link(tmp_path, fast(broker.url, inflight_window=100), scenario)


def test_a_publish_cancelled_as_its_puback_lands_stays_cancelled(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The PUBACK and the cancel in the same loop turn: the cancel wins.

    When the connection drops, the link cancels its status loop, which is usually waiting for the
    PUBACK of its last status. On Python 3.11, ``asyncio.wait_for`` returns the result instead when
    the future completed in the same turn; the status loop then slept its 30 s interval with the
    connection gone, and the link stayed "connected" with its connected event cleared.
    """

    async def scenario(outbox: Outbox, link: MqttLink) -> None:
        await asyncio.wait_for(link.connected.wait(), 10)
        # The status published at connect has its PUBACK first, so that ours is the only waiter.
        await wait_until(lambda: not link._waiters, 5, "the connect status's PUBACK")
        task = asyncio.create_task(link.publish(f"campus/v1/{SITE}/{GW}/telemetry/race", b"x"))
        await asyncio.sleep(0)  # the publish runs up to its wait for the PUBACK
        [fut] = link._waiters.values()
        # The PUBACK and the cancel in the same turn (the broker's own PUBACK comes later and finds
        # the waiter done).
        fut.set_result(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with_link(tmp_path, fast(mosquitto.url), scenario)
