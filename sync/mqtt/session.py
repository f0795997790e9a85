"""One broker connection: a paho client driven by the event loop's own socket readiness.

paho's socket work runs on the event loop thread (reader/writer callbacks, like aiomqtt), so
PUBACKs, SUBACKs and messages arrive as plain synchronous callbacks: no locks, no cross-thread
hand-off per message. Only the blocking TCP/TLS connect runs in a worker thread. Reading can be
paused (:meth:`Session.pause_reading`): that is the inbound backpressure, TCP flow control pushes
back to the broker, which keeps the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sync.mqtt.config import BrokerAddress, MqttConfig, TlsConfig


class SessionListener(Protocol):
    """What a session reports to its link (all on the event loop thread)."""

    def _on_ack(self, mid: int, code: int) -> None: ...

    def _on_suback(self, mid: int, codes: list[int]) -> None: ...

    def _on_message(self, topic: str, payload: bytes, props: Properties | None) -> None: ...


def _code(reason: Any) -> int:
    return reason.value if isinstance(reason, ReasonCode) else int(reason or 0)


class Session:
    def __init__(
        self,
        listener: SessionListener,
        config: MqttConfig,
        address: BrokerAddress,
        protocol: MQTTProtocolVersion,
        *,
        client_id: str,
        password: str | None,
        client_key_file: str | None,
        will_topic: str,
        will_payload: bytes,
    ) -> None:
        self.listener = listener
        self.config = config
        self.address = address
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[tuple[int, str]] = self.loop.create_future()
        self.lost = asyncio.Event()
        self.acks_ready = asyncio.Event()
        self.reading = True
        self._sock: Any = None
        self._fd = -1
        # MQTT 5 has clean_start on connect instead of clean_session; paho refuses both at once.
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            reconnect_on_failure=False,
            clean_session=None if protocol == MQTTProtocolVersion.MQTTv5 else config.session_expiry_s == 0,
        )
        self.window = config.inflight_window
        """Most unacknowledged QoS 1 publishes on this connection: ours, or the broker's Receive
        Maximum if that is smaller."""
        self.client.max_inflight_messages_set(config.inflight_window)
        self.client.max_queued_messages_set(0)
        if config.username is not None:
            self.client.username_pw_set(config.username, password)
        if address.tls:
            tls = config.tls or TlsConfig()
            self.client.tls_set(
                ca_certs=tls.ca_file,
                certfile=tls.cert_file,
                keyfile=client_key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            self.client.tls_insecure_set(tls.insecure_skip_verify)
        self.client.will_set(will_topic, will_payload, 1, True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    @property
    def mqtt5(self) -> bool:
        return self.protocol == MQTTProtocolVersion.MQTTv5

    # paho callbacks: on the event loop thread once connected.

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        # MQTT 5: the broker may accept fewer unacknowledged QoS 1 publishes than our window (a
        # cluster that acknowledges only once a message is replicated); paho does not apply it
        # itself, and a broker may drop a client that exceeds it.
        receive_maximum = getattr(props, "ReceiveMaximum", None)
        if isinstance(receive_maximum, int) and 0 < receive_maximum < self.window:
            self.window = receive_maximum
            # paho's setter refuses a change on an open connection; its limit is a plain counter
            # checked at each publish (paho 2.2), so lowering it before the first one is safe.
            # Publishes beyond it wait in paho's queue, so replies and status keep within it too.
            self.client._max_inflight_messages = receive_maximum
        if not self.connack.done():
            self.connack.set_result((_code(reason), str(reason)))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.lost.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.listener._on_ack(mid, _code(reason))
        self.acks_ready.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self.listener._on_suback(mid, [_code(r) for r in reasons])

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.listener._on_message(msg.topic, bytes(msg.payload), getattr(msg, "properties", None))

    # socket plumbing

    def _readable(self) -> None:
        rc = self.client.loop_read()
        # TLS may hold decrypted bytes the selector cannot see.
        while (
            rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            and self.reading
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

    def pause_reading(self) -> None:
        """Stop reading from the broker (a subscription queue is full)."""
        if self.reading:
            self.reading = False
            if self._sock is not None:
                self.loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            if self._sock is not None:
                self.loop.add_reader(self._fd, self._readable)
                # Bytes TLS already decrypted while we were paused would not wake the selector.
                self.loop.call_soon(self._readable_if_open)

    def _readable_if_open(self) -> None:
        if self._sock is not None and self.reading:
            self._readable()

    async def keepalive(self) -> None:
        """Keep-alive pings and retries; paho's loop_misc expects a call about once a second."""
        while not self.lost.is_set():
            await asyncio.sleep(1.0)
            if self.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._drop_socket()

    async def open(self) -> None:
        # A persistent session (clean_start off, with an expiry) lets the broker keep what is
        # published to this gateway while the link is down, so a burst of roster deltas survives a
        # reconnect in its middle; each Session is a new paho client, so paho's "first connect
        # only" default would always start clean.
        persistent = self.config.session_expiry_s > 0
        kwargs: dict[str, Any] = {}
        if self.mqtt5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.config.session_expiry_s
            kwargs = {"clean_start": not persistent, "properties": props}
        await asyncio.to_thread(
            functools.partial(
                self.client.connect, self.address.host, self.address.port, self.config.keepalive_s, **kwargs
            )
        )
        self._sock = self.client.socket()
        if self._sock is None:
            raise OSError("connection closed during connect")
        self._fd = self._sock.fileno()
        self.client.on_socket_register_write = self._register_write
        self.client.on_socket_unregister_write = self._unregister_write
        self.loop.add_reader(self._fd, self._readable)
        if self.client.want_write():
            self.loop.add_writer(self._fd, self._writable)

    async def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self.client.disconnect()
                self.client.loop_write()
        self._drop_socket()
        with contextlib.suppress(Exception):
            sock = self.client.socket()
            if sock is not None:
                sock.close()


__all__ = ["Session", "SessionListener"]
