"""The MQTT link: drains the outbox to the broker, keeps the retained status, receives downlink.

Built directly on paho-mqtt rather than aiomqtt: the drain publishes tens of thousands of QoS 1
messages a second with a bounded in-flight window, and per-message futures cost too much there
(measured: an aiomqtt publish-per-task loop reached about 0.6 of a bare paho loop). The shape is
aiomqtt's all the same: one connection object per session, a network thread per connection,
callbacks handed to the event loop, capped jittered exponential reconnect.

Rules it keeps (DESIGN.md): a row is marked delivered only on PUBACK; a new alert goes out ahead of
any backlog; the retained ``status`` says ``online`` with backlog figures, the Last Will and a
clean shutdown say ``offline``; a broker that is down for days only means a longer backlog.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sync.envelope import format_time, utc_now
from sync.errors import SyncError
from sync.event_types import Lane
from sync.outbox import Outbox, PendingRow
from sync.topics import Topics

log = logging.getLogger(__name__)

# CONNACK codes that mean "these credentials will not do" in MQTT 3.1.1 (4, 5) and 5 (0x86, 0x87, 0x8C).
_AUTH_CODES = {4, 5, 0x86, 0x87, 0x8C}
# "Unacceptable protocol version" in 3.1.1, "Unsupported protocol version" in 5.
_PROTOCOL_CODES = {1, 0x84}


class TlsConfig(BaseModel):
    """TLS towards the broker; file paths, so keys can live in ``$CREDENTIALS_DIRECTORY``."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(
        None, description="CA bundle that signed the broker's certificate; system CAs if unset."
    )
    cert_file: str | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key_credential: str | None = Field(
        None, description="Name of the credential holding the client key (PEM), never the key itself."
    )
    insecure_skip_verify: bool = Field(False, description="Do not check the broker's host name. Tests only.")


class MqttConfig(BaseModel):
    """How the gateway reaches the central broker."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker URL, mqtt://host[:port] or mqtts://host[:port]; overridden by --mqtt-url or "
        "EDGE_AGENT_MQTT_URL.",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version; 'auto' tries 5 and falls back to 3.1.1 for an older broker."
    )
    client_id: str | None = Field(None, description="MQTT client id; defaults to '<site>-<gateway>'.")
    username: str | None = Field(None, description="Broker user name; the password comes from credentials.")
    password_credential: str = Field(
        "mqtt_password",
        description="Credential name of the broker password ($CREDENTIALS_DIRECTORY/<name> or "
        "EDGE_AGENT_MQTT_PASSWORD).",
    )
    tls: TlsConfig | None = Field(None, description="TLS settings; mqtts:// without this uses system CAs.")
    topic_prefix: str = Field("campus/v1", description="Prefix of every topic.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.")
    inflight_window: int = Field(
        100, ge=1, le=65535, description="Most QoS 1 publishes awaiting PUBACK at once."
    )
    reconnect_min_s: float = Field(0.5, gt=0, description="First reconnect delay.")
    reconnect_max_s: float = Field(60.0, gt=0, description="Reconnect delays never exceed this.")
    status_interval_s: float = Field(30.0, gt=0, description="How often the retained status is refreshed.")
    connect_timeout_s: float = Field(10.0, gt=0, description="How long to wait for CONNACK.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or any(c in value for c in "#+") or value.startswith("/") or value.endswith("/"):
            raise ValueError("topic_prefix must be a plain topic path without wildcards or outer slashes")
        return value


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]``; raises ValueError with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r} has no host")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as err:
        raise ValueError(f"broker URL {url!r} has a bad port") from err
    return BrokerAddress(parts.hostname, port, tls)


class BrokerRefused(SyncError):
    """The broker answered CONNACK with a refusal (bad credentials, not authorised, ...)."""


MessageHandler = Callable[[str, bytes, Properties | None], Awaitable[None]]


@dataclass
class LinkStats:
    """Counters for metrics; mutated only on the event loop thread."""

    connects: int = 0
    connect_failures: int = 0
    auth_failures: int = 0
    published: int = 0
    acked: int = 0
    refused_publishes: int = 0
    republished_after_reconnect: int = 0
    received: int = 0
    handler_errors: int = 0
    last_error: str = ""
    connected_since: float | None = None
    protocol: str = ""
    by_lane: dict[str, int] = field(default_factory=dict)


@dataclass
class _InFlight:
    seq: int
    remaining: int


class _Session:
    """One broker connection: a paho client driven by the event loop's own socket readiness.

    paho's socket work runs on the event loop thread (reader/writer callbacks, like aiomqtt), so
    PUBACKs arrive as plain synchronous callbacks: no locks, no cross-thread hand-off per message.
    Only the blocking TCP/TLS connect runs in a worker thread.
    """

    def __init__(self, link: MqttLink, protocol: MQTTProtocolVersion) -> None:
        self.link = link
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[tuple[int, str]] = self.loop.create_future()
        self.lost = asyncio.Event()
        self.acks_ready = asyncio.Event()
        self._sock: Any = None
        self._fd = -1
        self._misc: asyncio.Task[None] | None = None
        cfg = link.config
        # MQTT 5 has clean_start on connect instead of clean_session; paho refuses both at once.
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=link.client_id,
            protocol=protocol,
            reconnect_on_failure=False,
            clean_session=None if protocol == MQTTProtocolVersion.MQTTv5 else True,
        )
        self.client.max_inflight_messages_set(cfg.inflight_window)
        self.client.max_queued_messages_set(0)
        if cfg.username is not None:
            self.client.username_pw_set(cfg.username, link.password)
        if link.address.tls:
            tls = cfg.tls or TlsConfig()
            self.client.tls_set(
                ca_certs=tls.ca_file,
                certfile=tls.cert_file,
                keyfile=link.client_key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            self.client.tls_insecure_set(tls.insecure_skip_verify)
        self.client.will_set(link.topics.status, link.status_payload("offline", "connection_lost"), 1, True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    # paho callbacks: on the event loop thread once connected.

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        code = reason.value if isinstance(reason, ReasonCode) else int(reason)
        if not self.connack.done():
            self.connack.set_result((code, str(reason)))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.lost.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        code = reason.value if isinstance(reason, ReasonCode) else int(reason or 0)
        self.link._on_ack(mid, code)
        self.acks_ready.set()

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.link._on_message(msg.topic, bytes(msg.payload), getattr(msg, "properties", None))

    # socket plumbing

    def _readable(self) -> None:
        rc = self.client.loop_read()
        # TLS may hold decrypted bytes the selector cannot see.
        while (
            rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            and self._sock is not None
            and getattr(self._sock, "pending", None)
            and self._sock.pending()
        ):
            rc = self.client.loop_read()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._drop_socket()

    def _writable(self) -> None:
        rc = self.client.loop_write()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._drop_socket()
        elif not self.client.want_write() and self._sock is not None:
            self.loop.remove_writer(self._fd)

    def _register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._sock is not None:
            self.loop.add_writer(self._fd, self._writable)

    def _unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._sock is not None:
            self.loop.remove_writer(self._fd)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            # By file number: paho may already have closed the socket object (fileno -1).
            self.loop.remove_reader(self._fd)
            self.loop.remove_writer(self._fd)
            self._sock = None
        self.lost.set()

    async def _housekeeping(self) -> None:
        # Keep-alive pings and retries; paho's loop_misc expects a call about once a second.
        while not self.lost.is_set():
            await asyncio.sleep(1.0)
            if self.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._drop_socket()

    async def open(self) -> None:
        addr = self.link.address
        await asyncio.to_thread(self.client.connect, addr.host, addr.port, self.link.config.keepalive_s)
        self._sock = self.client.socket()
        if self._sock is None:
            raise OSError("connection closed during connect")
        self._fd = self._sock.fileno()
        self.client.on_socket_register_write = self._register_write
        self.client.on_socket_unregister_write = self._unregister_write
        self.loop.add_reader(self._fd, self._readable)
        if self.client.want_write():
            self.loop.add_writer(self._fd, self._writable)
        self._misc = asyncio.create_task(self._housekeeping(), name="mqtt-keepalive")

    async def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self.client.disconnect()
                self.client.loop_write()
        self._drop_socket()
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
        with contextlib.suppress(Exception):
            sock = self.client.socket()
            if sock is not None:
                sock.close()


class MqttLink:
    """Keeps a connection to the broker and drains the outbox through it.

    ``status_extra`` is called for each status message and adds agent-level fields (devices,
    roster version). Run :meth:`run` as a task; call :meth:`shutdown` to say ``offline`` and leave.
    """

    def __init__(
        self,
        config: MqttConfig,
        outbox: Outbox,
        *,
        site: str,
        gateway: str,
        version: str,
        password: str | None = None,
        client_key_file: str | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.address = parse_broker_url(config.url)
        self.topics = Topics(config.topic_prefix, site, gateway)
        self.site = site
        self.gateway = gateway
        self.version = version
        self.password = password
        self.client_key_file = client_key_file
        self.client_id = config.client_id or f"{site}-{gateway}"
        self.status_extra = status_extra
        self.stats = LinkStats()
        self.state: Literal["starting", "connecting", "connected", "disconnected", "refused", "stopped"] = (
            "starting"
        )
        self.connected = asyncio.Event()
        self._session: _Session | None = None
        self._handlers: list[tuple[str, MessageHandler]] = []
        self._inflight: dict[int, _InFlight] = {}
        self._inflight_rows = 0
        self._cursors = dict.fromkeys(Lane, 0)
        # One buffer per lane: a lower lane is always published first, and within a lane rows go
        # out in seq order however they were fetched.
        self._buffers: dict[Lane, collections.deque[PendingRow]] = {
            lane: collections.deque() for lane in Lane
        }
        self._prefer_v311 = config.protocol == "3.1.1"
        self._stopping = False
        self._wake = asyncio.Event()
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._acked: list[int] = []

    # -- public ------------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Call ``handler`` for each message on ``topic_filter``; resubscribed after every reconnect."""
        self._handlers.append((topic_filter, handler))
        if self._session is not None and self.connected.is_set():
            self._session.client.subscribe(topic_filter, qos=1)

    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> bool:
        """Publish something that is not an outbox event (replies, snapshots); False if offline."""
        if self._session is None or not self.connected.is_set():
            return False
        info = self._session.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def status_payload(self, state: str, reason: str) -> bytes:
        status: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "site": self.site,
            "gateway": self.gateway,
            "version": self.version,
            "at": format_time(utc_now()),
        }
        if state == "online":
            status["last_seq"] = self.outbox.last_seq
            status["backlog"] = {
                lane.name.lower(): {"pending": b.pending, "oldest_age_s": b.oldest_age_s}
                for lane, b in self.outbox.backlog().items()
            }
            status["mqtt_protocol"] = self.stats.protocol
            if self.status_extra is not None:
                status.update(self.status_extra())
        return orjson.dumps(status)

    async def run(self) -> None:
        """Connect, drain, reconnect with capped jittered backoff, until :meth:`shutdown`."""
        attempt = 0
        while not self._stopping:
            self.state = "connecting"
            protocol = MQTTProtocolVersion.MQTTv311 if self._prefer_v311 else MQTTProtocolVersion.MQTTv5
            session = _Session(self, protocol)
            try:
                await self._connect(session)
            except (OSError, BrokerRefused, TimeoutError, ssl.SSLError) as err:
                await session.close()
                self.stats.connect_failures += 1
                self.stats.last_error = str(err)
                if (
                    isinstance(err, BrokerRefused)
                    and err.code == "protocol_version"
                    and not self._prefer_v311
                    and self.config.protocol == "auto"
                ):
                    log.warning("broker does not speak MQTT 5; falling back to MQTT 3.1.1")
                    self._prefer_v311 = True
                    continue
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("broker %s unreachable (%s); retrying in %.1fs", self.config.url, err, delay)
                await self._sleep_unless_stopping(delay)
                continue
            attempt = 0
            try:
                await self._serve(session)
            finally:
                self.connected.clear()
                self._session = None
                await session.close()
                self.stats.connected_since = None
            if not self._stopping:
                self.state = "disconnected"
                log.warning("lost the broker connection; %d publishes were in flight", self._inflight_rows)
                await self._sleep_unless_stopping(self._backoff(0))
        self.state = "stopped"

    async def shutdown(self, drain_timeout_s: float = 5.0) -> None:
        """Publish what fits in ``drain_timeout_s``, say ``offline`` (retained), disconnect."""
        session = self._session
        if session is not None and self.connected.is_set():
            deadline = time.monotonic() + drain_timeout_s
            while self._inflight and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            info = session.client.publish(
                self.topics.status, self.status_payload("offline", "shutdown"), qos=1, retain=True
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(info.wait_for_publish, 2.0), 3.0)
        self._stopping = True
        self._wake.set()
        if session is not None:
            session.lost.set()

    # -- connection --------------------------------------------------------------------------

    async def _connect(self, session: _Session) -> None:
        await session.open()
        try:
            code, text = await asyncio.wait_for(
                asyncio.shield(session.connack), self.config.connect_timeout_s
            )
        except TimeoutError:
            if session.lost.is_set() and session.protocol == MQTTProtocolVersion.MQTTv5:
                # An MQTT 3.1.1-only broker may just drop a v5 CONNECT.
                raise BrokerRefused(
                    "connection closed before CONNACK to MQTT 5", code="protocol_version"
                ) from None
            raise TimeoutError(f"no CONNACK within {self.config.connect_timeout_s}s") from None
        if code != 0:
            if code in _PROTOCOL_CODES:
                raise BrokerRefused(f"broker refused the protocol version: {text}", code="protocol_version")
            if code in _AUTH_CODES:
                self.stats.auth_failures += 1
                self.state = "refused"
                log.error(
                    "broker %s refused our credentials (user %r): %s; check the %s credential",
                    self.config.url,
                    self.config.username,
                    text,
                    self.config.password_credential,
                )
                raise BrokerRefused(f"broker refused credentials: {text}", code="auth")
            raise BrokerRefused(f"broker refused the connection: {text} ({code})", code="refused")

    async def _serve(self, session: _Session) -> None:
        self._session = session
        self.stats.connects += 1
        self.stats.connected_since = time.time()
        self.stats.protocol = "5" if session.protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"
        self.state = "connected"
        log.info("connected to %s (MQTT %s)", self.config.url, self.stats.protocol)
        # Whatever was in flight on the last connection is published again, in order: duplicates
        # only of that window, each with its original id.
        self.stats.republished_after_reconnect += self._inflight_rows
        self._inflight.clear()
        self._inflight_rows = 0
        self._cursors = dict.fromkeys(Lane, 0)
        for buffer in self._buffers.values():
            buffer.clear()
        for topic_filter, _ in self._handlers:
            session.client.subscribe(topic_filter, qos=1)
        session.client.publish(
            self.topics.status, self.status_payload("online", "connected"), qos=1, retain=True
        )
        self.connected.set()
        tasks = [
            asyncio.create_task(self._drain(session), name="mqtt-drain"),
            asyncio.create_task(self._status_loop(session), name="mqtt-status"),
        ]
        lost = asyncio.create_task(session.lost.wait(), name="mqtt-lost")
        try:
            done, _ = await asyncio.wait([lost, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not lost and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [lost, *tasks]:
                task.cancel()
            await asyncio.gather(lost, *tasks, return_exceptions=True)

    async def _status_loop(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(self.config.status_interval_s)
            session.client.publish(
                self.topics.status, self.status_payload("online", "periodic"), qos=1, retain=True
            )

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": half the capped exponential delay is fixed, half random, so a fleet of
        # gateways that lost the same broker does not reconnect in lockstep.
        cap = min(self.config.reconnect_max_s, self.config.reconnect_min_s * float(2 ** min(attempt, 30)))
        return cap / 2 + random.uniform(0, cap / 2)

    async def _sleep_unless_stopping(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    # -- drain -------------------------------------------------------------------------------

    async def _drain(self, session: _Session) -> None:
        outbox = self.outbox
        window = self.config.inflight_window
        while True:
            session.acks_ready.clear()
            self._flush_acks()
            room = window - self._inflight_rows
            sent = self._fill(session, room) if room > 0 else 0
            if sent == 0:
                # Nothing to send or no room: wait for an ack or a commit. A short timeout covers
                # rows committed while we were between checking and waiting.
                outbox.committed.clear()
                waiters = [asyncio.ensure_future(session.acks_ready.wait())]
                if room > 0:
                    waiters.append(asyncio.ensure_future(outbox.committed.wait()))
                try:
                    await asyncio.wait(waiters, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
            else:
                # Let the network thread and other tasks run between bursts.
                await asyncio.sleep(0)

    def _fill(self, session: _Session, room: int) -> int:
        outbox = self.outbox
        if outbox.alert_committed.is_set():
            # New alerts jump whatever backlog of the other lanes is buffered.
            outbox.alert_committed.clear()
            self._fetch(Lane.ALERT, max(room, 1))
        sent = 0
        while sent < room:
            buffer = self._next_buffer()
            if buffer is None:
                break
            row = buffer.popleft()
            if not self._publish_row(session, row):
                buffer.appendleft(row)
                break
            sent += 1
        return sent

    def _next_buffer(self) -> collections.deque[PendingRow] | None:
        for lane in Lane:
            if self._buffers[lane]:
                return self._buffers[lane]
        for lane in Lane:
            if self._fetch(lane, 500):
                return self._buffers[lane]
        return None

    def _fetch(self, lane: Lane, limit: int) -> bool:
        rows = self.outbox.fetch_pending(lane, self._cursors[lane], limit)
        if rows:
            self._cursors[lane] = rows[-1].seq
            self._buffers[lane].extend(rows)
        return bool(rows)

    def _publish_row(self, session: _Session, row: PendingRow) -> bool:
        messages = [(topic, row.payload) for topic in self.topics.for_event(row.type, row.severity)]
        if row.attachment is not None:
            messages.append((self.topics.snapshot(row.event_id), row.attachment))
        mids = []
        for topic, payload in messages:
            info = session.client.publish(topic, payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # The connection is going away; the row stays pending and is sent again.
                return False
            mids.append(info.mid)
        tracker = _InFlight(row.seq, len(mids))
        for mid in mids:
            self._inflight[mid] = tracker
        self._inflight_rows += 1
        self.stats.published += 1
        return True

    def _on_ack(self, mid: int, code: int) -> None:
        tracker = self._inflight.pop(mid, None)
        if tracker is None or tracker.remaining < 0:
            return  # a status or reply publish, or a row already refused
        if code >= 0x80:
            # The broker refused this publish (e.g. its ACL). Keep the row pending: it is sent
            # again on the next connection, and never marked delivered.
            self.stats.refused_publishes += 1
            log.error("broker refused publish of seq %d (reason code %#x)", tracker.seq, code)
            tracker.remaining = -1
            self._inflight_rows -= 1
            return
        tracker.remaining -= 1
        if tracker.remaining == 0:
            self._acked.append(tracker.seq)
            self._inflight_rows -= 1

    def _flush_acks(self) -> None:
        # Marks go to the outbox writer in batches: one queue item per drain pass, not per PUBACK.
        if self._acked:
            self.stats.acked += len(self._acked)
            self.outbox.mark_delivered(self._acked)
            self._acked = []

    def _on_message(self, topic: str, payload: bytes, props: Properties | None) -> None:
        task = asyncio.ensure_future(self._dispatch(topic, payload, props))
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    async def _dispatch(self, topic: str, payload: bytes, props: Properties | None) -> None:
        self.stats.received += 1
        for topic_filter, handler in self._handlers:
            if paho.topic_matches_sub(topic_filter, topic):
                try:
                    await handler(topic, payload, props)
                except Exception:
                    self.stats.handler_errors += 1
                    log.exception("handler for %s failed on a message on %s", topic_filter, topic)


def response_properties(props: Properties | None) -> tuple[str | None, bytes | None]:
    """The MQTT 5 response topic and correlation data of a request, where it has them."""
    if props is None:
        return None, None
    return getattr(props, "ResponseTopic", None), getattr(props, "CorrelationData", None)


def reply_properties(correlation: bytes | None) -> Properties | None:
    if correlation is None:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = correlation
    return props


__all__ = [
    "BrokerAddress",
    "BrokerRefused",
    "LinkStats",
    "MqttConfig",
    "MqttLink",
    "TlsConfig",
    "parse_broker_url",
    "reply_properties",
    "response_properties",
]
