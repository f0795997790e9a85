"""The MQTT link: drains the outbox, keeps the retained status, replies, and receives downlink.

Built directly on paho-mqtt rather than aiomqtt: the drain publishes tens of thousands of QoS 1
messages a second with a bounded in-flight window, and per-message futures cost too much there
(measured: an aiomqtt publish-per-task loop reached about 0.6 of a bare paho loop). The shape is
aiomqtt's all the same: one connection object per session (:class:`~sync.mqtt.session.Session`),
socket callbacks on the event loop, a reconnect backoff handed in by the owner.

What goes out (LAYOUT.md invariant 7), by kind:

* **events**: only through the outbox; :class:`~sync.mqtt.drain.Drain` marks a row delivered on PUBACK.
* **replies** (commands, roster): :meth:`MqttLink.send_reply` never blocks and never loses a reply
  silently. It queues (bounded; a full queue raises :class:`~sync.errors.ReplyQueueFull`); one task
  publishes the queue in order, each awaiting its PUBACK, retrying after a reconnect; a reply older
  than its ttl is given up with a log line, a counter and the ``on_reply_expired`` callback.
* **state** (telemetry): :meth:`MqttLink.publish` awaits the PUBACK and raises a
  :class:`~sync.errors.SyncError` when offline or refused; the caller decides (telemetry skips).
* **status**: retained, ``online`` on connect and periodically, ``offline`` as the Last Will and on
  :meth:`MqttLink.shutdown`.

What comes in (invariant 6): each :meth:`MqttLink.subscribe` gets its own bounded queue, consumed
by one task that awaits the handler before taking the next message, so a subscription's messages
are handled strictly in arrival order even when the handler awaits a thread. When a queue is full
the link stops reading from the broker until the handler catches up (counted, logged): TCP flow
control pushes back to the broker, which holds the messages. A handler slower than the keep-alive
interval for a whole queue ends in a reconnect (paho sees no PINGRESP); messages already queued are
still handled, in order. At every (re)connect the link awaits the SUBACK of each subscription and
checks the granted QoS before it says ``connected``.

The tasks (per-subscription consumers, the reply sender, and per connection the drain, the status
refresh and the keep-alive) all belong to :meth:`MqttLink.run`'s task groups; nothing is started per
message. Time comes from the injected ``monotonic`` (reply ages, the drain's rate limit), ``now``
(status stamps) and ``sleep`` (reconnect delays, the status refresh, the rate limit's pauses); only
the socket-level waits (CONNACK, SUBACK and PUBACK timeouts, paho's 1 s keep-alive tick) use the
event loop's own timers, because they measure the network, not the gateway's time.

After a loss, the first reconnect already waits a ``backoff`` delay: with the jittered backoff the
agent hands in (``reconnect_jitter``), a fleet that lost the broker together comes back spread
over the delay's ceiling instead of all at once. The backoff starts over only once a connection
has lived a keep-alive, so a broker that drops every connection at once sees the delays grow.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties

from sync.envelope import format_time, utc_now
from sync.errors import BrokerRefused, NotConnected, PublishFailed, ReplyQueueFull, SyncError
from sync.mqtt.backoff import ReconnectBackoff
from sync.mqtt.config import MqttConfig, parse_broker_url
from sync.mqtt.drain import Drain
from sync.mqtt.ratelimit import DrainLimit
from sync.mqtt.session import Session
from sync.mqtt.stats import LinkStats
from sync.outbox import Outbox
from sync.topics import Topics

log = logging.getLogger(__name__)

# CONNACK codes that mean "these credentials will not do" in MQTT 3.1.1 (4, 5) and 5 (0x86, 0x87, 0x8C).
_AUTH_CODES = {4, 5, 0x86, 0x87, 0x8C}
# "Unacceptable protocol version" in 3.1.1, "Unsupported protocol version" in 5.
_PROTOCOL_CODES = {1, 0x84}
# How often the reply sender looks at the ages of waiting replies while it cannot send them.
_REPLY_POLL_S = 0.05
# How long a handler busy with a message at shutdown may take to finish it.
_HANDLER_GRACE_S = 5.0

MessageHandler = Callable[[str, bytes, Properties | None], Awaitable[None]]
"""``handler(topic, payload, properties)``; properties are None under MQTT 3.1.1."""

ReplyExpired = Callable[[str, str], None]
"""``on_reply_expired(topic, reason)``; reason is ``ttl``, ``refused`` or ``shutdown``."""

LinkState = Literal["starting", "connecting", "connected", "disconnected", "refused", "stopped"]
SubscriptionState = Literal["pending", "subscribed", "downgraded", "refused"]


def _check_filter(topic_filter: str) -> None:
    """Refuse a filter the broker would refuse, at :meth:`MqttLink.subscribe` rather than at connect."""
    levels = topic_filter.split("/")
    if not topic_filter or "\x00" in topic_filter or len(topic_filter.encode()) > 65535:
        raise ValueError(f"invalid topic filter {topic_filter!r}")
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
            raise ValueError(f"invalid topic filter {topic_filter!r}: misplaced wildcard")


@dataclass(eq=False)
class Subscription:
    """One topic filter, its handler, its ordered queue and what the broker said about it."""

    topic_filter: str
    handler: MessageHandler
    qos: int = 1
    state: SubscriptionState = "pending"
    granted_qos: int | None = None
    handled: int = 0
    errors: int = 0
    queue: collections.deque[tuple[str, bytes, Properties | None]] = field(default_factory=collections.deque)
    queued_bytes: int = 0
    """Payload bytes in :attr:`queue`."""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self.queue)


@dataclass(eq=False)
class _Reply:
    topic: str
    payload: bytes
    properties: Properties | None
    qos: int
    queued_at: float
    expires_at: float
    sending: bool = False


class MqttLink:
    """Keeps a connection to the broker; see the module docstring for what goes through it.

    Run :meth:`run` as a task (it returns after :meth:`shutdown`). ``backoff`` spaces the reconnect
    attempts (``reset()`` after each successful connect). ``status_extra`` adds agent-level fields
    (devices, roster version) to each ``online`` status.
    """

    def __init__(
        self,
        config: MqttConfig,
        outbox: Outbox,
        *,
        site: str,
        gateway: str,
        version: str,
        backoff: ReconnectBackoff,
        password: str | None = None,
        client_key_file: str | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
        on_reply_expired: ReplyExpired | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.address = parse_broker_url(config.url)
        self.topics = Topics(config.topic_prefix, site, gateway)
        self.site = site
        self.gateway = gateway
        self.version = version
        self.backoff = backoff
        self.password = password
        self.client_key_file = client_key_file
        self.client_id = config.client_id or f"{site}-{gateway}"
        self.status_extra = status_extra
        self.on_reply_expired = on_reply_expired
        self._monotonic = monotonic
        self._now = now
        self._sleep = sleep
        self.stats = LinkStats()
        self.state: LinkState = "starting"
        self.connected = asyncio.Event()
        """Set while a session is up, subscribed (SUBACKs checked) and serving."""
        self.subscriptions: list[Subscription] = []
        self._session: Session | None = None
        self._drain = Drain(
            outbox,
            self.topics,
            self.stats,
            config.inflight_window,
            limit=DrainLimit(config.drain_rate_events_s, config.drain_rate_bytes_s, monotonic()),
            monotonic=monotonic,
            sleep=sleep,
        )
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._subacks: dict[int, asyncio.Future[Any]] = {}
        self._full: set[Subscription] = set()
        self._replies: collections.deque[_Reply] = collections.deque()
        self._reply_wake = asyncio.Event()
        self._prefer_v311 = config.protocol == "3.1.1"
        self._v311_probe = False
        self._stopping = False
        self._closing = False
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None

    # -- public: inbound ---------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> Subscription:
        """Hand each message on ``topic_filter`` to ``handler``, one after another, in arrival order.

        Call it before :meth:`run` (the usual case) or while running. The broker is asked at every
        (re)connect; :attr:`Subscription.state` says what it granted (``refused``: logged as an error
        and counted in ``stats.subscribe_refused``).
        """
        _check_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
        sub = Subscription(topic_filter, handler, qos)
        self.subscriptions.append(sub)
        if self._tg is not None:
            self._start_consumer(self._tg, sub)
            session = self._session
            if session is not None and self.connected.is_set():
                self._tg.create_task(
                    self._subscribe_later(session, sub), name=f"mqtt-subscribe {topic_filter}"
                )
        return sub

    # -- public: outbound --------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Publish something that is neither an event nor a reply (telemetry) and await the PUBACK.

        Raises :class:`~sync.errors.NotConnected` at once when offline, and
        :class:`~sync.errors.PublishFailed` when the broker refuses it (``code`` ``publish_refused``,
        with its ``reason_code``), the connection drops first (``connection_lost``) or no PUBACK
        comes within ``timeout_s`` (default ``connect_timeout_s``; ``puback_timeout``). QoS 0
        returns once paho took the message.
        """
        session = self._session
        if session is None or not self.connected.is_set() or session.lost.is_set():
            self.stats.publish_failures += 1
            raise NotConnected(topic)
        info = session.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            self.stats.publish_failures += 1
            raise NotConnected(topic)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.publish_failures += 1
            raise PublishFailed(
                f"paho refused the publish to {topic}: {paho.error_string(info.rc)}",
                code="publish_error",
                topic=topic,
            )
        if qos == 0:
            return
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[info.mid] = fut
        timeout = self.config.connect_timeout_s if timeout_s is None else timeout_s
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result when the
            # PUBACK lands in the same turn as a cancel, swallowing the cancel. The status loop then
            # slept its whole interval with the connection gone and the link stuck in "connected".
            async with asyncio.timeout(timeout):
                code = await asyncio.shield(fut)
        except TimeoutError:
            self.stats.publish_failures += 1
            raise PublishFailed(
                f"no PUBACK for {topic} within {timeout}s", code="puback_timeout", topic=topic
            ) from None
        except PublishFailed as err:
            self.stats.publish_failures += 1
            raise PublishFailed(str(err), code=err.code, topic=topic) from None
        finally:
            if self._waiters.get(info.mid) is fut:
                del self._waiters[info.mid]
        if code >= 0x80:
            self.stats.publish_failures += 1
            raise PublishFailed(
                f"broker refused the publish to {topic} (reason code {code:#x})",
                code="publish_refused",
                topic=topic,
                reason_code=code,
            )

    def send_reply(
        self,
        topic: str,
        payload: bytes,
        properties: Properties | None = None,
        ttl_s: float | None = None,
        *,
        qos: int = 1,
    ) -> None:
        """Queue a reply (command or roster, to ``topic``, often an MQTT 5 response topic); never blocks.

        Replies are published in the order queued, each awaiting its PUBACK, retried after a
        reconnect. One still unsent ``ttl_s`` seconds (default ``reply_ttl_s``) after it was queued
        is given up: logged, counted in ``stats.replies_expired['ttl']`` and reported to
        ``on_reply_expired(topic, 'ttl')``. Raises :class:`~sync.errors.ReplyQueueFull` (counted)
        when ``reply_queue_max`` replies are already waiting.
        """
        if len(self._replies) >= self.config.reply_queue_max:
            self.stats.replies_refused += 1
            log.error("reply queue full (%d waiting); refused a reply to %s", len(self._replies), topic)
            raise ReplyQueueFull(topic, len(self._replies))
        at = self._monotonic()
        ttl = self.config.reply_ttl_s if ttl_s is None else ttl_s
        self._replies.append(_Reply(topic, payload, properties, qos, at, at + ttl))
        self._reply_wake.set()

    @property
    def replies_waiting(self) -> int:
        return len(self._replies)

    def expire_replies(self) -> int:
        """Give up the waiting replies whose ttl has passed (the reply sender also does this on its
        own, every few tens of milliseconds while it cannot send); returns how many."""
        now = self._monotonic()
        expired = [r for r in self._replies if not r.sending and r.expires_at <= now]
        for reply in expired:
            self._replies.remove(reply)
            self._give_up(reply, "ttl", f"not delivered within {reply.expires_at - reply.queued_at:.1f}s")
        return len(expired)

    def status_payload(self, state: str, reason: str) -> bytes:
        status: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "site": self.site,
            "gateway": self.gateway,
            "version": self.version,
            "at": format_time(self._now()),
        }
        if state == "online":
            status["last_seq"] = self.outbox.last_seq
            status["backlog"] = {
                lane.name.lower(): {"pending": b.pending, "oldest_age_s": b.oldest_age_s}
                for lane, b in self.outbox.backlog().items()
            }
            status["mqtt_protocol"] = self.stats.protocol
            if self._drain.limit.enabled:
                status["drain"] = {
                    "throttled": self.stats.drain_throttled,
                    "rate_events_s": self.config.drain_rate_events_s or None,
                    "rate_bytes_s": self.config.drain_rate_bytes_s or None,
                }
            refused = [s.topic_filter for s in self.subscriptions if s.state == "refused"]
            if refused:
                status["subscriptions_refused"] = refused
            if self.status_extra is not None:
                status.update(self.status_extra())
        return orjson.dumps(status)

    # -- public: lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect after ``backoff.next_delay()``, until :meth:`shutdown`."""
        self._closing = False
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for sub in self.subscriptions:
                    self._start_consumer(tg, sub)
                sender = tg.create_task(self._reply_sender(), name="mqtt-replies")
                try:
                    await self._connection_loop()
                finally:
                    self._tg = None
                    sender.cancel()
                    await self._stop_consumers()
                    for sub in self.subscriptions:
                        if sub.queue:
                            log.warning(
                                "link stopped with %d message(s) on %s not handled",
                                sub.queued,
                                sub.topic_filter,
                            )
                    while self._replies:
                        self._give_up(self._replies.popleft(), "shutdown", "the link stopped")
        finally:
            self.state = "stopped"

    async def shutdown(self, drain_timeout_s: float = 5.0) -> None:
        """Publish what fits in ``drain_timeout_s`` (events in flight, waiting replies), say ``offline``
        (retained), disconnect. :meth:`run` then returns."""
        session = self._session
        if session is not None and self.connected.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout_s):
                    while (self._drain.busy or self._replies) and self.connected.is_set():
                        await asyncio.sleep(0.01)
            try:
                await self.publish(
                    self.topics.status,
                    self.status_payload("offline", "shutdown"),
                    retain=True,
                    timeout_s=2.0,
                )
            except SyncError as err:
                log.warning("could not publish the offline status: %s", err)
        self._stopping = True
        self._wake.set()
        if session is not None:
            session.lost.set()

    # -- connection --------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        while not self._stopping:
            self.state = "connecting"
            protocol = MQTTProtocolVersion.MQTTv311 if self._prefer_v311 else MQTTProtocolVersion.MQTTv5
            session = Session(
                self,
                self.config,
                self.address,
                protocol,
                client_id=self.client_id,
                password=self.password,
                client_key_file=self.client_key_file,
                will_topic=self.topics.status,
                will_payload=self.status_payload("offline", "connection_lost"),
            )
            try:
                await self._connect(session)
            except (OSError, BrokerRefused, TimeoutError, ssl.SSLError) as err:
                await session.close()
                self.stats.connect_failures += 1
                self.stats.last_error = str(err)
                if (
                    isinstance(err, BrokerRefused)
                    and err.code in ("protocol_version", "protocol_dropped")
                    and not self._prefer_v311
                    and self.config.protocol == "auto"
                ):
                    log.warning("broker does not speak MQTT 5 (%s); trying MQTT 3.1.1", err)
                    self._prefer_v311 = True
                    # A dropped CONNECT is only a guess (a proxy in front of a broker that is down
                    # drops it too): it holds only if 3.1.1 then connects at once.
                    self._v311_probe = err.code == "protocol_dropped"
                    continue
                if self._v311_probe:
                    self._v311_probe = False
                    self._prefer_v311 = False
                delay = self.backoff.next_delay()
                log.warning("broker %s unreachable (%s); retrying in %.1fs", self.config.url, err, delay)
                await self._sleep_unless_stopping(delay)
                continue
            self._v311_probe = False
            connected_at = self._monotonic()
            try:
                await self._serve(session)
            finally:
                self.connected.clear()
                self._session = None
                self._fail_waiters()
                await session.close()
                self.stats.connected_since = None
            if not self._stopping:
                self.state = "disconnected"
                # Start the backoff over only after a connection that lived a keep-alive: a broker
                # that accepts and drops at once (overloaded after an outage) must not see every
                # gateway of a district back after reconnect_min_s, again and again.
                if self._monotonic() - connected_at >= self.config.keepalive_s:
                    self.backoff.reset()
                delay = self.backoff.next_delay()
                log.warning(
                    "lost the broker connection (%d publishes in flight); reconnecting in %.1fs",
                    self._drain.inflight_rows,
                    delay,
                )
                await self._sleep_unless_stopping(delay)

    async def _connect(self, session: Session) -> None:
        await session.open()
        lost: asyncio.Future[Any] = asyncio.ensure_future(session.lost.wait())
        try:
            await asyncio.wait(
                [session.connack, lost],
                timeout=self.config.connect_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            lost.cancel()
        if not session.connack.done():
            if session.lost.is_set():
                if session.mqtt5:
                    # An MQTT 3.1.1-only broker may just drop a v5 CONNECT.
                    raise BrokerRefused("connection closed before CONNACK to MQTT 5", code="protocol_dropped")
                raise ConnectionError("connection closed before CONNACK")
            raise TimeoutError(f"no CONNACK within {self.config.connect_timeout_s}s")
        code, text = session.connack.result()
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
                raise BrokerRefused(f"broker refused credentials: {text}", code="auth", reason_code=code)
            raise BrokerRefused(
                f"broker refused the connection: {text} ({code})", code="refused", reason_code=code
            )

    async def _serve(self, session: Session) -> None:
        self._session = session
        self.stats.connects += 1
        self.stats.connected_since = self._now().timestamp()
        self.stats.protocol = "5" if session.mqtt5 else "3.1.1"
        log.info("connected to %s (MQTT %s)", self.config.url, self.stats.protocol)
        self._drain.new_session(session.window)
        try:
            await self._subscribe_all(session)
        except TimeoutError as err:
            self.stats.last_error = str(err)
            log.warning("%s; reconnecting", err)
            return
        if session.lost.is_set():
            return
        self.state = "connected"
        if self._full:
            session.pause_reading()
        self.connected.set()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._drain.run(session), name="mqtt-drain"),
                tg.create_task(self._status_loop(), name="mqtt-status"),
                tg.create_task(session.keepalive(), name="mqtt-keepalive"),
            ]
            await session.lost.wait()
            self.connected.clear()
            for task in tasks:
                task.cancel()

    async def _subscribe_all(self, session: Session) -> None:
        subs = list(self.subscriptions)
        if not subs:
            return
        async with asyncio.timeout(self.config.connect_timeout_s):
            await asyncio.gather(*(self._subscribe_one(session, sub) for sub in subs))

    async def _subscribe_later(self, session: Session, sub: Subscription) -> None:
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                await self._subscribe_one(session, sub)
        except TimeoutError:
            log.warning("no SUBACK for %s; dropping the connection to subscribe again", sub.topic_filter)
            session.lost.set()

    async def _subscribe_one(self, session: Session, sub: Subscription) -> None:
        rc, mid = session.client.subscribe(sub.topic_filter, qos=sub.qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            # The connection is going away; the next one subscribes again.
            await session.lost.wait()
            return
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._subacks[mid] = fut
        lost: asyncio.Future[Any] = asyncio.ensure_future(session.lost.wait())
        try:
            await asyncio.wait([fut, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            self._subacks.pop(mid, None)
        if not fut.done() or fut.cancelled():
            return
        codes: list[int] = fut.result()
        granted = codes[0] if codes else 0x80
        sub.granted_qos = granted if granted < 0x80 else None
        if granted >= 0x80:
            sub.state = "refused"
            self.stats.subscribe_refused += 1
            self.stats.last_error = f"subscription to {sub.topic_filter} refused ({granted:#x})"
            log.error(
                "broker refused the subscription to %s (reason code %#x); its messages will not arrive",
                sub.topic_filter,
                granted,
            )
        elif granted < sub.qos:
            sub.state = "downgraded"
            self.stats.subscribe_downgraded += 1
            log.warning(
                "broker granted QoS %d for %s (asked %d); messages may be lost",
                granted,
                sub.topic_filter,
                sub.qos,
            )
        else:
            sub.state = "subscribed"

    async def _status_loop(self) -> None:
        reason = "connected"
        while self.connected.is_set():
            try:
                await self.publish(self.topics.status, self.status_payload("online", reason), retain=True)
            except SyncError as err:
                log.warning("status not published: %s", err)
            reason = "periodic"
            await self._sleep(self.config.status_interval_s)

    async def _sleep_unless_stopping(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self._sleep(delay))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait([sleeper, woken], return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            woken.cancel()

    def _fail_waiters(self) -> None:
        for mid, fut in list(self._waiters.items()):
            if not fut.done():
                fut.set_exception(
                    PublishFailed("connection lost before PUBACK", code="connection_lost", topic=None)
                )
            # Retrieved here so a waiter that already gave up does not log "never retrieved".
            fut.exception()
            del self._waiters[mid]
        for fut_s in self._subacks.values():
            fut_s.cancel()
        self._subacks.clear()

    # -- session callbacks (event loop thread) -----------------------------------------------

    def _on_ack(self, mid: int, code: int) -> None:
        if self._drain.on_ack(mid, code):
            return
        fut = self._waiters.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(code)

    def _on_suback(self, mid: int, codes: list[int]) -> None:
        fut = self._subacks.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(codes)

    def _queue_full(self, sub: Subscription) -> bool:
        # By count, and by bytes: a burst of big messages (a roster snapshot in parts) is read from
        # the broker as the handler takes it, not all at once on the gates' event loop.
        return (
            len(sub.queue) >= self.config.inbound_queue_max
            or sub.queued_bytes >= self.config.inbound_queue_max_bytes
        )

    def _on_message(self, topic: str, payload: bytes, props: Properties | None) -> None:
        self.stats.received += 1
        matched = False
        for sub in self.subscriptions:
            if paho.topic_matches_sub(sub.topic_filter, topic):
                matched = True
                sub.queue.append((topic, payload, props))
                sub.queued_bytes += len(payload)
                sub.ready.set()
                if sub not in self._full and self._queue_full(sub):
                    self._full.add(sub)
                    self.stats.inbound_paused += 1
                    # Behind by count is news; pausing for bytes is routine flow control for big
                    # messages (every part of a large snapshot).
                    behind = len(sub.queue) >= self.config.inbound_queue_max
                    log.log(
                        logging.WARNING if behind else logging.DEBUG,
                        "handler of %s is %d messages (%d bytes) behind; pausing reads from the broker",
                        sub.topic_filter,
                        len(sub.queue),
                        sub.queued_bytes,
                    )
                    session = self._session
                    if session is not None and self.connected.is_set():
                        session.pause_reading()
        if not matched:
            self.stats.unmatched += 1
            log.debug("message on %s matches no subscription", topic)

    # -- inbound consumers -------------------------------------------------------------------

    def _start_consumer(self, tg: asyncio.TaskGroup, sub: Subscription) -> None:
        if sub.task is None or sub.task.done():
            sub.task = tg.create_task(self._consume(sub), name=f"mqtt-handler {sub.topic_filter}")

    async def _stop_consumers(self) -> None:
        # A handler in the middle of a message (its SQLite work in a thread) may finish it; none
        # starts another.
        self._closing = True
        tasks = [sub.task for sub in self.subscriptions if sub.task is not None and not sub.task.done()]
        for sub in self.subscriptions:
            sub.ready.set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=_HANDLER_GRACE_S)
            for task in late:
                log.warning(
                    "handler %s did not finish within %.0fs; cancelled", task.get_name(), _HANDLER_GRACE_S
                )
                task.cancel()

    async def _consume(self, sub: Subscription) -> None:
        while not self._closing:
            while not sub.queue and not self._closing:
                sub.ready.clear()
                await sub.ready.wait()
            if self._closing:
                return
            topic, payload, props = sub.queue.popleft()
            sub.queued_bytes -= len(payload)
            if sub in self._full and not self._queue_full(sub):
                self._full.discard(sub)
                session = self._session
                if not self._full and session is not None:
                    log.debug("handlers caught up; reading from the broker again")
                    session.resume_reading()
            try:
                await sub.handler(topic, payload, props)
            except Exception:
                sub.errors += 1
                self.stats.handler_errors += 1
                log.exception("handler for %s failed on a message on %s", sub.topic_filter, topic)
            else:
                sub.handled += 1

    # -- replies -----------------------------------------------------------------------------

    async def _reply_sender(self) -> None:
        while True:
            self.expire_replies()
            if not self._replies:
                self._reply_wake.clear()
                await self._reply_wake.wait()
                continue
            if not self.connected.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_REPLY_POLL_S):  # not wait_for: see publish()
                        await self.connected.wait()
                continue
            head = self._replies[0]
            head.sending = True
            try:
                await self.publish(head.topic, head.payload, qos=head.qos, properties=head.properties)
            except PublishFailed as err:
                head.sending = False
                if err.code == "publish_refused":
                    self._drop_reply(head)
                    self._give_up(head, "refused", str(err))
                    continue
                # Lost or unanswered: the same reply again, first, once connected.
                self.stats.replies_retried += 1
                log.info("reply to %s not acknowledged (%s); retrying", head.topic, err.code)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_REPLY_POLL_S):
                        await self._until_disconnected()
                continue
            except NotConnected:
                head.sending = False
                await asyncio.sleep(_REPLY_POLL_S)
                continue
            head.sending = False
            self._drop_reply(head)
            self.stats.replies_sent += 1

    async def _until_disconnected(self) -> None:
        while self.connected.is_set():
            await asyncio.sleep(_REPLY_POLL_S)

    def _drop_reply(self, reply: _Reply) -> None:
        if self._replies and self._replies[0] is reply:
            self._replies.popleft()
        else:
            with contextlib.suppress(ValueError):
                self._replies.remove(reply)

    def _give_up(self, reply: _Reply, reason: str, detail: str) -> None:
        self.stats.replies_expired[reason] = self.stats.replies_expired.get(reason, 0) + 1
        log.warning("reply to %s given up (%s): %s", reply.topic, reason, detail)
        if self.on_reply_expired is not None:
            try:
                self.on_reply_expired(reply.topic, reason)
            except Exception:
                log.exception("on_reply_expired failed for %s", reply.topic)


__all__ = ["LinkState", "LinkStats", "MessageHandler", "MqttLink", "ReplyExpired", "Subscription"]
