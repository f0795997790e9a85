"""The centre's master-data publisher: versions, the delta between them, signing, publishing, and
whether each gateway has caught up.

A checked export (:mod:`sync.central.roster_export`) becomes the site's next roster version when
it differs from the last one published: the version is stored whole in ``roster_versions`` (so
the next delta is computed from what the gateways were sent), then the delta from the previous
version is signed and published on ``roster/delta`` and the whole snapshot on ``roster/snapshot``
(one retained message when it fits the broker's message size, else in signed parts). A version is
stored before it is sent and its number is never reused: if sending fails, ``roster resend``
sends the stored version again, and a gateway that holds something else answers
``resync_needed`` and takes the snapshot.

Convergence is read from the gateways themselves: their retained ``status`` (``roster_version``)
and their answers on ``roster/reply``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from paho.mqtt.enums import CallbackAPIVersion

from sync.central.errors import CentralError
from sync.central.schema import apply_migrations
from sync.messages.roster import (
    RosterContent,
    RosterDeletes,
    RosterDelta,
    RosterSnapshot,
    split_snapshot,
)
from sync.mqtt.config import parse_broker_url
from sync.signing import MAX_SIGNATURE_BYTES, sign_roster_message
from sync.topics import Topics

log = logging.getLogger(__name__)

# -- the delta ---------------------------------------------------------------------------------------


@dataclass
class Changes:
    """What one version changes, in the words of a school office; stored with the version."""

    joiners: list[str] = field(default_factory=list)
    leavers: list[str] = field(default_factory=list)
    transfers: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    """(person, old class, new class)."""
    updated: list[str] = field(default_factory=list)
    """Persons changed otherwise (name, validity, access groups, consent, ...)."""
    new_cards: list[tuple[str, str]] = field(default_factory=list)
    """(card, person): a card added, or given to another person."""
    lost_cards: list[tuple[str, str]] = field(default_factory=list)
    """(card, person): a card taken off a person who stays."""
    changed_cards: list[tuple[str, str]] = field(default_factory=list)
    """(card, person): same owner, other validity or format."""
    access_groups: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    blocklist: list[str] = field(default_factory=list)
    removed_definitions: list[str] = field(default_factory=list)
    """Access groups, schedules and blocked cards taken out, as ``kind:id``."""

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in self.__dataclass_fields__)

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in self.__dataclass_fields__}

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def lines(self, limit: int = 50) -> list[str]:
        """Human-readable lines: the counts, then up to ``limit`` changes of each kind."""
        counted = ", ".join(f"{k} {v}" for k, v in self.counts().items() if v)
        out = [f"changes: {counted or 'none'}"]

        def some(title: str, items: Sequence[Any], show: Callable[[Any], str]) -> None:
            for item in items[:limit]:
                out.append(f"  {title} {show(item)}")
            if len(items) > limit:
                out.append(f"  ... and {len(items) - limit} more {title}")

        some("joiner", self.joiners, str)
        some("leaver", self.leavers, str)
        some(
            "transfer", self.transfers, lambda t: f"{t[0]}: {t[1] or '(no class)'} -> {t[2] or '(no class)'}"
        )
        some("updated", self.updated, str)
        some("new card", self.new_cards, lambda c: f"{c[0]} ({c[1]})")
        some("lost card", self.lost_cards, lambda c: f"{c[0]} ({c[1]})")
        some("changed card", self.changed_cards, lambda c: f"{c[0]} ({c[1]})")
        some("access group", self.access_groups, str)
        some("schedule", self.schedules, str)
        some("blocked card", self.blocklist, str)
        some("removed", self.removed_definitions, str)
        return out


def diff(old: RosterContent | None, new: RosterContent) -> tuple[RosterContent, RosterDeletes, Changes]:
    """The upserts and deletes that turn ``old`` into ``new`` (face templates are not the export's:
    they are left out), and the same as :class:`Changes`."""
    old = old or RosterContent()
    changes = Changes()
    old_persons = {p.id: p for p in old.persons}
    new_persons = {p.id: p for p in new.persons}
    upsert_persons = []
    for pid, person in new_persons.items():
        before = old_persons.get(pid)
        if before is None:
            changes.joiners.append(pid)
        elif before != person:
            if before.group != person.group:
                changes.transfers.append((pid, before.group, person.group))
            else:
                changes.updated.append(pid)
        else:
            continue
        upsert_persons.append(person)
    changes.leavers = [pid for pid in old_persons if pid not in new_persons]
    leaving = set(changes.leavers)

    old_cards = {c.credential: c for c in old.credentials}
    new_cards = {c.credential: c for c in new.credentials}
    upsert_cards = []
    for number, card in new_cards.items():
        had = old_cards.get(number)
        if had is None or had.person_id != card.person_id:
            changes.new_cards.append((number, card.person_id))
        elif had != card:
            changes.changed_cards.append((number, card.person_id))
        else:
            continue
        upsert_cards.append(card)
    # A leaver's cards go with the person; list only the cards taken off people who stay.
    delete_cards = [n for n, c in old_cards.items() if n not in new_cards and c.person_id not in leaving]
    changes.lost_cards = [(n, old_cards[n].person_id) for n in delete_cards]

    def section(name: str, key: str) -> tuple[list[Any], list[str]]:
        before = {getattr(x, key): x for x in getattr(old, name)}
        after = {getattr(x, key): x for x in getattr(new, name)}
        upserts = [x for k, x in after.items() if before.get(k) != x]
        deletes = [k for k in before if k not in after]
        return upserts, deletes

    groups, groups_gone = section("access_groups", "id")
    schedules, schedules_gone = section("schedules", "id")
    blocked, unblocked = section("blocklist", "credential")
    changes.access_groups = [g.id for g in groups]
    changes.schedules = [s.id for s in schedules]
    changes.blocklist = [b.credential for b in blocked]
    changes.removed_definitions = (
        [f"access_group:{g}" for g in groups_gone]
        + [f"schedule:{s}" for s in schedules_gone]
        + [f"blocked_card:{b}" for b in unblocked]
    )
    upsert = RosterContent(
        persons=upsert_persons,
        credentials=upsert_cards,
        access_groups=groups,
        schedules=schedules,
        blocklist=blocked,
    )
    deletes = RosterDeletes(
        persons=changes.leavers,
        credentials=delete_cards,
        access_groups=groups_gone,
        schedules=schedules_gone,
        blocklist=unblocked,
    )
    return upsert, deletes, changes


# -- the versions in the central database ------------------------------------------------------------


@dataclass(frozen=True)
class StoredVersion:
    site: str
    version: int
    content: RosterContent
    created_at: datetime
    created_by: str
    published_at: datetime | None


@dataclass
class Plan:
    """The next version of a site: what it would publish. ``delta`` is None for a site's first
    version (there is nothing to step from) and ``version`` is None when nothing changed."""

    site: str
    previous: StoredVersion | None
    content: RosterContent
    changes: Changes
    version: int | None
    delta: RosterDelta | None

    def lines(self, limit: int = 50) -> list[str]:
        held = f"version {self.previous.version}" if self.previous else "no version yet"
        if self.version is None:
            return [f"site {self.site}: {held}; the export changes nothing, nothing to publish"]
        head = f"site {self.site}: {held} -> version {self.version}"
        return [
            head,
            f"  {len(self.content.persons)} persons, {len(self.content.credentials)} cards, "
            f"{len(self.content.access_groups)} access groups",
            *self.changes.lines(limit),
        ]


def connect_database(dsn: str, *, migrate: bool = True) -> psycopg.Connection[tuple[Any, ...]]:
    """The central database, migrated unless ``migrate`` is false (a dry run changes nothing, not
    even the schema); a clear error when it cannot be reached."""
    try:
        conn = psycopg.connect(
            dsn, autocommit=True, connect_timeout=10, application_name="edge-central-roster"
        )
    except psycopg.OperationalError as err:
        raise CentralError(
            f"central database unreachable: {str(err).strip()}", code="database_unreachable"
        ) from err
    if migrate:
        try:
            apply_migrations(conn)
        except CentralError:
            conn.close()
            raise
    return conn


def latest_version(conn: psycopg.Connection[tuple[Any, ...]], site: str) -> StoredVersion | None:
    """The site's last stored version; None when it has none (or the schema is not created yet)."""
    if conn.execute("SELECT to_regclass('roster_versions')").fetchone() == (None,):
        return None
    row = conn.execute(
        "SELECT version, content, created_at, created_by, published_at FROM roster_versions "
        "WHERE site = %s ORDER BY version DESC LIMIT 1",
        (site,),
    ).fetchone()
    if row is None:
        return None
    return StoredVersion(site, int(row[0]), RosterContent.model_validate(row[1]), row[2], row[3], row[4])


def plan(conn: psycopg.Connection[tuple[Any, ...]], site: str, content: RosterContent) -> Plan:
    """What publishing ``content`` for ``site`` would do; changes nothing."""
    previous = latest_version(conn, site)
    upsert, deletes, changes = diff(previous.content if previous else None, content)
    if previous is not None and changes.empty:
        return Plan(site, previous, content, changes, None, None)
    version = previous.version + 1 if previous else 1
    delta = None
    if previous is not None:
        delta = RosterDelta(
            kind="delta", from_version=previous.version, version=version, upsert=upsert, delete=deletes
        )
    return Plan(site, previous, content, changes, version, delta)


def store_version(
    conn: psycopg.Connection[tuple[Any, ...]], planned: Plan, *, source: str, created_by: str
) -> None:
    """Record the planned version; raises :class:`CentralError` if another publisher stored this
    version number first (the plan is then stale: run again)."""
    assert planned.version is not None
    body = planned.content.model_dump_json(exclude_defaults=True)
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO roster_versions (site, version, content, content_sha256, changes, source, "
                "created_by) VALUES (%s, %s, %s::jsonb, %s, %s::jsonb, %s, %s)",
                (
                    planned.site,
                    planned.version,
                    body,
                    hashlib.sha256(body.encode()).hexdigest(),
                    orjson.dumps(planned.changes.as_json()).decode(),
                    source,
                    created_by,
                ),
            )
    except psycopg.errors.UniqueViolation as err:
        raise CentralError(
            f"site {planned.site}: version {planned.version} was stored by another publisher meanwhile; "
            "run again to publish on top of it",
            code="version_conflict",
        ) from err


def mark_published(conn: psycopg.Connection[tuple[Any, ...]], site: str, version: int) -> None:
    conn.execute(
        "UPDATE roster_versions SET published_at = now() WHERE site = %s AND version = %s", (site, version)
    )


def known_gateways(conn: psycopg.Connection[tuple[Any, ...]], site: str) -> list[GatewayState]:
    """Gateways of ``site`` the ingest has stored a status of, as that status says."""
    rows = conn.execute(
        "SELECT name, state, roster_version FROM gateway_status WHERE site = %s", (site,)
    ).fetchall()
    return [
        GatewayState(
            str(name),
            online=state == "online",
            status_version=None if v is None else int(v),
            from_database=True,
        )
        for name, state, v in rows
    ]


# -- signing and messages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private_key: Ed25519PrivateKey
    valid_for_s: float

    def sign(self, topic: str, body: bytes) -> bytes:
        return sign_roster_message(
            topic,
            body,
            key_id=self.key_id,
            ed25519_private_key=self.private_key,
            valid_for_s=self.valid_for_s,
        )


def load_signing_key(path: Path, key_id: str, valid_for_s: float) -> SigningKey:
    """The centre's Ed25519 private key from a PEM file (PKCS#8, unencrypted)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CentralError(f"cannot read the key file {path}: {err.strerror or err}", code="bad_key") from err
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise CentralError(
            f"key file {path} is not an unencrypted PEM private key: {err}", code="bad_key"
        ) from err
    if not isinstance(key, Ed25519PrivateKey):
        raise CentralError(
            f"key file {path} holds a {type(key).__name__}, not an Ed25519 key", code="bad_key"
        )
    return SigningKey(key_id, key, valid_for_s)


@dataclass(frozen=True)
class Messages:
    """The signed messages of one version, in publishing order: (topic, payload, retain)."""

    items: list[tuple[str, bytes, bool]]

    @property
    def snapshot_parts(self) -> int:
        return sum(1 for t, _, _ in self.items if t.endswith("/snapshot"))


def build_messages(
    topics: Topics,
    version: int,
    content: RosterContent,
    delta: RosterDelta | None,
    key: SigningKey,
    *,
    max_message_bytes: int,
) -> Messages:
    """The delta (if any) then the snapshot: retained in one message when it fits, else in parts.

    Of the parts only the last is retained (a broker keeps one retained message per topic): it
    replaces any older retained snapshot, which would hand a stale roster to a gateway that
    connects later. Such a gateway gets that lone part, answers ``resync_needed``, and a gateway
    at this version ignores it."""
    items: list[tuple[str, bytes, bool]] = []
    if delta is not None:
        topic = topics.roster("delta")
        items.append((topic, key.sign(topic, delta.model_dump_json(exclude_defaults=True).encode()), False))
    topic = topics.roster("snapshot")
    snapshot = RosterSnapshot(kind="snapshot", version=version, **_sections(content))
    whole = snapshot.model_dump_json(exclude_defaults=True).encode()
    if len(whole) + MAX_SIGNATURE_BYTES <= max_message_bytes:
        items.append((topic, key.sign(topic, whole), True))
    else:
        part_id = f"v{version}-{secrets.token_hex(6)}"
        parts = split_snapshot(
            snapshot, part_id=part_id, max_part_bytes=max_message_bytes - MAX_SIGNATURE_BYTES
        )
        for index, part in enumerate(parts):
            items.append((topic, key.sign(topic, part), index == len(parts) - 1))
    return Messages(items)


def _sections(content: RosterContent) -> dict[str, Any]:
    return {name: getattr(content, name) for name in RosterContent.model_fields}


# -- the broker --------------------------------------------------------------------------------------


@dataclass
class GatewayState:
    """What one gateway of the site last said: its retained status and its latest roster answer."""

    name: str
    online: bool | None = None
    status_version: int | None = None
    reply: dict[str, Any] | None = None
    reply_at: float = 0.0
    from_database: bool = False

    def holds(self) -> int | None:
        versions = [v for v in (self.status_version, self.reply_version()) if v is not None]
        return max(versions) if versions else None

    def reply_version(self) -> int | None:
        if self.reply is None or self.reply.get("result") not in ("applied", "ignored"):
            return None
        return int(self.reply.get("version", 0))

    def caught_up(self, version: int) -> bool:
        held = self.holds()
        return held is not None and held >= version

    def describe(self, version: int) -> str:
        held = self.holds()
        holds = f"holds version {held}" if held is not None else "version unknown"
        if self.caught_up(version):
            return f"{self.name}: caught up ({holds})"
        why = ""
        if self.reply is not None and self.reply.get("result") in ("rejected", "resync_needed"):
            why = f"; answered {self.reply['result']}: {self.reply.get('reason') or '-'}"
        state = "offline" if self.online is False else "behind"
        if self.from_database:
            state += ", as the central database last saw it (no status on the broker)"
        return f"{self.name}: {state} ({holds}){why}"


class BrokerSession:
    """One MQTT 5 connection of the publisher: publishes QoS 1 awaiting each PUBACK, and watches the
    site's gateways (retained status, roster replies) from before the first publish."""

    def __init__(
        self, url: str, topics: Topics, *, username: str | None = None, password: str | None = None
    ) -> None:
        self.url = url
        self.topics = topics
        self.gateways: dict[str, GatewayState] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._acks: dict[int, Any] = {}
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"central-roster-{topics.site}-{secrets.token_hex(4)}",
            protocol=paho.MQTTv5,
        )
        if username:
            self._client.username_pw_set(username, password)
        if parse_broker_url(url).tls:
            self._client.tls_set()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_disconnect = self._on_disconnect

    def __enter__(self) -> BrokerSession:
        address = parse_broker_url(self.url)
        try:
            self._client.connect(address.host, address.port, keepalive=30)
        except (OSError, ValueError) as err:
            raise CentralError(f"broker {self.url} unreachable: {err}", code="broker_unreachable") from err
        self._client.loop_start()
        if not self._connected.wait(15):
            self._client.loop_stop()
            why = self._refused or "no answer to CONNECT within 15 s"
            raise CentralError(f"broker {self.url} refused the connection: {why}", code="broker_refused")
        status = self.topics.status  # topics of gateway "+": every gateway of the site
        replies = self.topics.roster_reply
        self._client.subscribe([(status, 1), (replies, 1)])
        if not self._subscribed.wait(15):
            raise CentralError(f"broker {self.url} did not confirm the subscriptions", code="broker_refused")
        time.sleep(0.5)  # the retained statuses follow the SUBACK
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            return
        self._connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        with self._changed:
            self._changed.notify_all()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        if not any(c.is_failure for c in codes):
            self._subscribed.set()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._changed:
            self._acks[mid] = reason
            self._changed.notify_all()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        base = self.topics.prefix.count("/") + 2  # prefix segments, then site
        if len(parts) <= base:
            return
        name = parts[base]
        try:
            data = orjson.loads(msg.payload) if msg.payload else None
        except orjson.JSONDecodeError:
            log.warning("unreadable message on %s ignored", msg.topic)
            return
        if not isinstance(data, dict):
            return
        with self._changed:
            state = self.gateways.setdefault(name, GatewayState(name))
            state.from_database = False
            if msg.topic.endswith("/status"):
                state.online = data.get("state") == "online"
                version = data.get("roster_version")
                if isinstance(version, int):
                    state.status_version = version
            else:
                state.reply = data
                state.reply_at = time.monotonic()
            self._changed.notify_all()

    def publish(self, items: Iterable[tuple[str, bytes, bool]], *, timeout_s: float = 60) -> int:
        """Publish in order at QoS 1, each awaiting its PUBACK; raises :class:`CentralError` when the
        broker refuses one or the connection goes. Returns the bytes sent."""
        sent = 0
        for topic, payload, retain in items:
            info = self._client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise CentralError(
                    f"publish on {topic} failed: {paho.error_string(info.rc)}", code="publish_failed"
                )
            deadline = time.monotonic() + timeout_s
            with self._changed:
                while info.mid not in self._acks:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._connected.is_set():
                        raise CentralError(
                            f"no PUBACK for {topic} ({'connection lost' if left > 0 else 'timed out'})",
                            code="publish_failed",
                        )
                    self._changed.wait(min(left, 0.5))
                reason = self._acks.pop(info.mid)
            if getattr(reason, "is_failure", False):
                raise CentralError(f"broker refused the message on {topic}: {reason}", code="publish_refused")
            sent += len(payload)
        return sent

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
            return True

    def add_known(self, gateways: Iterable[GatewayState]) -> None:
        """Gateways known from elsewhere (the ingest's table); what the broker says wins."""
        with self._lock:
            for gateway in gateways:
                self.gateways.setdefault(gateway.name, gateway)

    def states(self) -> dict[str, GatewayState]:
        with self._lock:
            return dict(self.gateways)


# -- the whole run -----------------------------------------------------------------------------------


@dataclass
class PublishOptions:
    site: str
    mqtt_url: str
    database: str
    key: SigningKey
    topic_prefix: str = "campus/v1"
    created_by: str = "edge-central"
    source: str = ""
    max_message_bytes: int = 512 * 1024
    wait_s: float = 0.0
    username: str | None = None
    password: str | None = None


@dataclass
class Convergence:
    version: int
    gateways: list[GatewayState]

    @property
    def all_caught_up(self) -> bool:
        return all(g.caught_up(self.version) for g in self.gateways)

    def lines(self) -> list[str]:
        if not self.gateways:
            return ["no gateway of this site is known yet (no status on the broker or in the database)"]
        done = sum(1 for g in self.gateways if g.caught_up(self.version))
        head = f"gateways at version {self.version} or later: {done} of {len(self.gateways)}"
        return [head, *("  " + g.describe(self.version) for g in self.gateways)]


def site_topics(prefix: str, site: str) -> Topics:
    """Topic names for the whole site: gateway ``+`` makes status and reply topics filters."""
    return Topics(prefix, site, "+")


def send_version(
    session: BrokerSession,
    conn: psycopg.Connection[tuple[Any, ...]],
    options: PublishOptions,
    version: int,
    content: RosterContent,
    delta: RosterDelta | None,
) -> Messages:
    messages = build_messages(
        session.topics, version, content, delta, options.key, max_message_bytes=options.max_message_bytes
    )
    session.publish(messages.items)
    mark_published(conn, options.site, version)
    return messages


def converge(
    session: BrokerSession,
    conn: psycopg.Connection[tuple[Any, ...]],
    options: PublishOptions,
    version: int,
    content: RosterContent,
    *,
    on_resend: Callable[[list[str]], None] | None = None,
) -> Convergence:
    """Wait up to ``options.wait_s`` for every known gateway to hold ``version``. A gateway that
    answers ``resync_needed`` (it held another version than the delta's) gets the snapshot again,
    at most every few seconds."""
    session.add_known(known_gateways(conn, options.site))
    deadline = time.monotonic() + options.wait_s
    resent_at = 0.0
    answered: set[str] = set()
    while True:
        states = session.states()
        if all(g.caught_up(version) for g in states.values()) or time.monotonic() >= deadline:
            break
        asking = [
            n
            for n, g in states.items()
            if g.reply is not None
            and g.reply.get("result") == "resync_needed"
            and g.reply.get("requested_version") in (version, None)
            and n not in answered
            # The snapshot sent right after the delta usually answers it; resend only if it did not.
            and time.monotonic() - g.reply_at > 3
        ]
        if asking and time.monotonic() - resent_at > 2:
            resent_at = time.monotonic()
            answered.update(asking)
            if on_resend is not None:
                on_resend(asking)
            session.publish(
                build_messages(
                    session.topics,
                    version,
                    content,
                    None,
                    options.key,
                    max_message_bytes=options.max_message_bytes,
                ).items
            )
        session.wait(lambda: False, min(0.2, max(0.0, deadline - time.monotonic())))
    return Convergence(version, [session.states()[n] for n in sorted(session.states())])


__all__ = [
    "BrokerSession",
    "Changes",
    "Convergence",
    "GatewayState",
    "Messages",
    "Plan",
    "PublishOptions",
    "SigningKey",
    "StoredVersion",
    "build_messages",
    "connect_database",
    "converge",
    "diff",
    "known_gateways",
    "latest_version",
    "load_signing_key",
    "plan",
    "send_version",
    "site_topics",
    "store_version",
]
