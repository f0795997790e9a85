"""The one root exception of the sync package, and the link's failures that callers handle.

Every error carries structured attributes beside its message: ``code`` (short, stable,
machine-readable; used as a metric label), and where they apply the MQTT ``topic`` and the broker's
``reason_code``. A leaf module: it imports nothing of the package.
"""

from __future__ import annotations


class SyncError(Exception):
    """Anything that went wrong in the outbox, the envelope, the contract or the MQTT link."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "sync_error",
        topic: str | None = None,
        reason_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.topic = topic
        self.reason_code = reason_code


class BrokerRefused(SyncError):
    """The broker refused the connection: ``code`` ``auth``, ``protocol_version``, ``refused`` (a
    CONNACK refusal, with its ``reason_code``), or ``protocol_dropped`` (it closed the connection
    before any CONNACK to an MQTT 5 CONNECT, as some 3.1.1-only brokers do)."""


class NotConnected(SyncError):
    """An awaited publish was asked for while the link has no broker connection."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"not connected to the broker; {topic} not published", code="not_connected", topic=topic
        )


class PublishFailed(SyncError):
    """An awaited publish did not get a PUBACK: ``code`` is ``publish_refused`` (the broker answered
    with a failure ``reason_code``), ``connection_lost`` or ``puback_timeout``."""


class ReplyQueueFull(SyncError):
    """:meth:`MqttLink.send_reply` refused a reply: its bounded queue is full (counted, logged)."""

    def __init__(self, topic: str, size: int) -> None:
        super().__init__(
            f"reply queue full ({size} waiting); reply to {topic} refused",
            code="reply_queue_full",
            topic=topic,
        )


__all__ = ["BrokerRefused", "NotConnected", "PublishFailed", "ReplyQueueFull", "SyncError"]
