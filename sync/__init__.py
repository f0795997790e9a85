"""sync: the gateway's contract with the centre and the way there.

The public surface for the agent (LAYOUT.md invariant 4: the agent imports only from here):

* the envelope and the event catalogue: :class:`Event`, :class:`Severity`, :class:`Lane`,
  :func:`make_source`, :func:`format_time`, :func:`utc_now`;
* the outbox (``sync.outbox``): :class:`Outbox`, :class:`OutboxConfig`, :class:`OutboxError`;
* the rules of every SQLite store (``sync.storage``): durability (:data:`STORES`,
  :func:`synchronous_of`), integrity-checked opening with corrupt files moved aside
  (:func:`open_store`, :class:`StoreRecovery`, :class:`StorageError`) and the migration runner
  (:data:`Migration`, :func:`apply_migrations`);
* the MQTT link (``sync.mqtt``): :class:`MqttLink`, :class:`MqttConfig`, :class:`TlsConfig`,
  :func:`parse_broker_url`, the MQTT 5 reply helpers, the :class:`ReconnectBackoff` it is handed;
* the roster wire models (``sync.messages``), with :func:`split_snapshot` for a centre sending a big
  snapshot in parts;
* the errors, all under :class:`SyncError`.

``sync.central`` (the reference consumer in PostgreSQL) is not part of it: it is not gateway runtime.
"""

from __future__ import annotations

from sync.envelope import EnvelopeError, Event, format_time, make_source, parse_event, utc_now
from sync.errors import BrokerRefused, NotConnected, PublishFailed, ReplyQueueFull, SyncError
from sync.event_types import EVENT_TYPES, EventType, Lane, Severity
from sync.messages import (
    WEEKDAYS,
    AccessGroup,
    BlockedCredential,
    Credential,
    FaceTemplate,
    Person,
    RosterContent,
    RosterDeletes,
    RosterDelta,
    RosterReply,
    RosterSnapshot,
    Schedule,
    SnapshotPart,
    TimeWindow,
    Weekday,
    split_snapshot,
    templates_digest,
)
from sync.mqtt import (
    LinkStats,
    MessageHandler,
    MqttConfig,
    MqttLink,
    ReconnectBackoff,
    Subscription,
    TlsConfig,
    parse_broker_url,
    reply_properties,
    response_properties,
)
from sync.outbox import Committed, Outbox, OutboxClosed, OutboxConfig, OutboxError, events_about
from sync.signing import (
    MAX_SIGNATURE_BYTES,
    NonceCache,
    RosterSignature,
    SignatureRefused,
    TrustedKey,
    TrustedKeysError,
    canonical_json,
    is_signed,
    open_roster_message,
    parse_trusted_keys,
    sign_bytes,
    sign_roster_message,
    verify_roster_message,
)
from sync.storage import (
    STORES,
    DamagedRows,
    Migration,
    StorageError,
    StoreRecovery,
    apply_migrations,
    check_integrity,
    move_aside,
    open_store,
    synchronous_of,
    text_or_bytes,
)
from sync.topics import Topics

__all__ = [
    "EVENT_TYPES",
    "MAX_SIGNATURE_BYTES",
    "STORES",
    "WEEKDAYS",
    "AccessGroup",
    "BlockedCredential",
    "BrokerRefused",
    "Committed",
    "Credential",
    "DamagedRows",
    "EnvelopeError",
    "Event",
    "EventType",
    "FaceTemplate",
    "Lane",
    "LinkStats",
    "MessageHandler",
    "Migration",
    "MqttConfig",
    "MqttLink",
    "NonceCache",
    "NotConnected",
    "Outbox",
    "OutboxClosed",
    "OutboxConfig",
    "OutboxError",
    "Person",
    "PublishFailed",
    "ReconnectBackoff",
    "ReplyQueueFull",
    "RosterContent",
    "RosterDeletes",
    "RosterDelta",
    "RosterReply",
    "RosterSignature",
    "RosterSnapshot",
    "Schedule",
    "Severity",
    "SignatureRefused",
    "SnapshotPart",
    "StorageError",
    "StoreRecovery",
    "Subscription",
    "SyncError",
    "TimeWindow",
    "TlsConfig",
    "Topics",
    "TrustedKey",
    "TrustedKeysError",
    "Weekday",
    "apply_migrations",
    "canonical_json",
    "check_integrity",
    "events_about",
    "format_time",
    "is_signed",
    "make_source",
    "move_aside",
    "open_roster_message",
    "open_store",
    "parse_broker_url",
    "parse_event",
    "parse_trusted_keys",
    "reply_properties",
    "response_properties",
    "sign_bytes",
    "sign_roster_message",
    "split_snapshot",
    "synchronous_of",
    "templates_digest",
    "text_or_bytes",
    "utc_now",
    "verify_roster_message",
]
