"""The link's counters (for metrics and ``/status``); mutated only on the event loop thread."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LinkStats:
    connects: int = 0
    connect_failures: int = 0
    auth_failures: int = 0
    published: int = 0
    """Outbox rows handed to the broker (each may be several messages: topics, snapshot)."""
    acked: int = 0
    refused_publishes: int = 0
    republished_after_reconnect: int = 0
    window: int = 0
    """The connection's in-flight window: ``inflight_window``, or the broker's smaller MQTT 5
    Receive Maximum."""
    drain_throttled: bool = False
    """The drain is holding backlog rows back for its rate limit right now (alerts still go)."""
    drain_throttle_waits: int = 0
    """Times the drain waited for its rate limit."""
    drain_throttled_s: float = 0.0
    """Seconds the drain spent held by its rate limit."""
    received: int = 0
    unmatched: int = 0
    """Messages that matched no subscription's filter."""
    handler_errors: int = 0
    inbound_paused: int = 0
    """Times reading from the broker was paused because a subscription's queue was full."""
    subscribe_refused: int = 0
    subscribe_downgraded: int = 0
    publish_failures: int = 0
    """Awaited publishes that raised (not connected, refused, connection lost, no PUBACK in time)."""
    replies_sent: int = 0
    replies_retried: int = 0
    replies_refused: int = 0
    """Replies refused by :meth:`MqttLink.send_reply` because the reply queue was full."""
    replies_expired: dict[str, int] = field(default_factory=dict)
    """Replies given up, by reason: ``ttl``, ``refused`` (by the broker), ``shutdown``."""
    last_error: str = ""
    connected_since: float | None = None
    protocol: str = ""
    by_lane: dict[str, int] = field(default_factory=dict)


__all__ = ["LinkStats"]
