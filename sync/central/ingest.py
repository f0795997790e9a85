"""The reference central consumer: MQTT 5 shared subscription in, PostgreSQL out, ack after commit.

One network thread (paho's) receives messages into a queue; the calling thread takes them in
batches, classifies them, writes each batch in one transaction and only then acknowledges its
messages (QoS 1, ``manual_ack``). A consumer killed at any point has acknowledged only what is
committed; the broker keeps the rest in the consumer's persistent session and redelivers it when a
consumer with the same client id comes back, and the unique ``(source, id)`` makes that harmless.

Broker behaviour this relies on, checked against Mosquitto 2.0 (see tests/central): messages of a
shared subscription that a member received but did not acknowledge stay in *that member's* session
and are redelivered only to it when it reconnects; while it is away, the broker keeps queueing that
member's share into its session. So each consumer needs a stable, unique client id and must be
restarted promptly (systemd ``Restart=always``): until it is back, its share waits in the broker.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sync.central.classify import Classified, classify
from sync.central.config import IngestConfig
from sync.central.errors import CentralError
from sync.central.schema import apply_migrations
from sync.central.store import IngestStats, write_batch
from sync.mqtt.config import parse_broker_url

log = logging.getLogger(__name__)

PASSWORD_ENV = "EDGE_CENTRAL_MQTT_PASSWORD"


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool  # the broker's DUP flag: a redelivery of a message it had sent before
    session: int  # which MQTT connection delivered it: a mid is only meaningful on that connection


class IngestConsumer:
    """One ingest consumer. :meth:`run` blocks until :meth:`stop` (or a signal handler calling it)."""

    def __init__(self, config: IngestConfig, *, password: str | None = None) -> None:
        self.config = config
        self.stats = IngestStats()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._password = password if password is not None else os.environ.get(PASSWORD_ENV)
        self._queue: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._session = 0
        self._client = self._make_client()
        self._db: psycopg.Connection[tuple[Any, ...]] | None = None

    def _make_client(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.effective_client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        if self.config.username:
            client.username_pw_set(self.config.username, self._password)
        if parse_broker_url(self.config.mqtt_url).tls:
            client.tls_set()
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self._session += 1
        self.connected.set()
        log.info(
            "connected as %s (session present: %s); subscribing to %s and %s",
            self.config.effective_client_id,
            flags.session_present,
            self.config.shared_filter,
            self.config.status_filter,
        )
        # Every consumer also subscribes to status unshared: whether a shared subscription gets the
        # retained messages differs between brokers (Mosquitto 2.0 sends them), and a fresh consumer
        # must learn every gateway's current state. Writing a status twice is harmless.
        client.subscribe([(self.config.shared_filter, 1), (self.config.status_filter, 1)])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        failed = [c for c in codes if c.is_failure]
        if failed:
            log.error("subscription refused: %s", failed)
            return
        self.subscribed.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("broker connection lost (%s); paho reconnects", reason)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._queue.put(
            _Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup), self._session)
        )

    def stop(self) -> None:
        """Ask :meth:`run` to finish its current batch and return."""
        self._stopping.set()

    def _connect_db(self) -> psycopg.Connection[tuple[Any, ...]]:
        attempt = 0
        while True:
            try:
                conn = psycopg.connect(
                    self.config.database, autocommit=True, application_name="edge-central-ingest"
                )
                apply_migrations(conn)
                return conn
            except psycopg.OperationalError as err:
                if self._stopping.is_set():
                    raise CentralError(f"database unreachable: {err}", code="database_unreachable") from err
                delay = min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                log.warning("database unreachable (%s); retrying in %.1fs", err, delay)
                time.sleep(delay)

    def run(self) -> None:
        """Connect to the database (migrating it) and the broker, then ingest until :meth:`stop`."""
        self._db = self._connect_db()
        address = parse_broker_url(self.config.mqtt_url)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        self._client.connect_async(
            address.host, address.port, keepalive=self.config.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()
        next_stats = time.monotonic() + self.config.stats_interval_s
        try:
            while not self._stopping.is_set():
                batch = self._take_batch()
                if batch:
                    self._commit_and_ack(batch)
                if time.monotonic() >= next_stats:
                    log.info("ingest counters: %s", self.stats.as_dict())
                    next_stats = time.monotonic() + self.config.stats_interval_s
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            if self._db is not None:
                self._db.close()
            log.info("ingest stopped; counters: %s", self.stats.as_dict())

    def _take_batch(self) -> list[_Message]:
        """Everything already queued (up to ``batch_max``); linger ``batch_wait_ms`` only for a lone
        message. Under load the queue fills while the previous batch commits, so batches grow by
        themselves; a fixed gathering window would only add its length to every event's latency."""
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.config.batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if len(batch) == 1 and self.config.batch_wait_ms > 0:
            deadline = time.monotonic() + self.config.batch_wait_ms / 1000
            while len(batch) < self.config.batch_max:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
        return batch

    def _commit_and_ack(self, batch: list[_Message]) -> None:
        started = time.perf_counter()
        self.stats.received += len(batch)
        self.stats.redelivered += sum(1 for m in batch if m.dup)
        items: list[Classified] = [classify(m.topic, m.payload, self.config.topic_prefix) for m in batch]
        attempt = 0
        while True:
            assert self._db is not None
            try:
                result = write_batch(self._db, items)
                break
            except psycopg.OperationalError as err:
                # Connection lost, deadlock, serialisation failure: nothing of this batch is
                # committed or acknowledged; retry it on a fresh connection if need be.
                self.stats.batch_retries += 1
                log.warning("batch of %d not committed (%s); retrying", len(batch), err)
                if self._db.closed or self._db.broken:
                    self._db = self._connect_db()
                else:
                    time.sleep(min(5.0, 0.05 * 2**attempt))
                attempt += 1
        result.add_to(self.stats)
        log.debug(
            "batch of %d committed in %.1f ms (%d stored, %d duplicates)",
            len(batch),
            (time.perf_counter() - started) * 1000,
            result.stored,
            result.duplicates,
        )
        for code, n in result.dead_letters.items():
            log.warning("dead-lettered %d message(s): %s", n, code)
        session = self._session
        for m in batch:
            # A message from an earlier connection is redelivered by the broker on this one; its
            # old mid would acknowledge some other message.
            if m.qos > 0 and m.session == session:
                self._client.ack(m.mid, m.qos)


__all__ = ["PASSWORD_ENV", "IngestConsumer"]
