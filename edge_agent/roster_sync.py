"""Roster sync: master data from the centre, applied strictly one message after another.

The link hands this component the messages of ``campus/v1/{site}/roster/#`` in arrival order and
waits for each to be handled before the next (a delta N+1 must never be applied before delta N).
Parsing and applying run in a worker thread, and a message larger than
:data:`~edge_agent.roster.ISOLATED_PARSE_BYTES` is parsed in a child process, so the gates keep
deciding meanwhile; a message over ``agent.roster_max_message_bytes`` is refused unread. Every
message gets a reply (applied, ignored or rejected) through the link's reply queue, which delivers
it when the link is up — also when it was down at the time — or expires it with a logged, counted
reason. A snapshot sent in parts is staged part by part and gets one reply, for its last part (or
the first it refuses); see :meth:`RosterSync._take_part`.

Every message must be signed by a key the gateway trusts (:class:`RosterSignatures`, docs/INTEGRATORS.md
"Signed master data"): an unsigned, forged, expired or replayed one is refused (``rejected``, the
reason's code first), counted, logged at a bounded rate and audited, and the roster stays as it was.

The component also keeps ``roster.db.last-good``: a copy after applied versions (a burst of deltas
is copied once, :data:`LAST_GOOD_SETTLE_S` after it), and one at stop if a version is not copied
yet. After a start that found ``roster.db`` (or ``faces.db``) corrupt, it asks the centre for the
snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from paho.mqtt.properties import Properties

from edge_agent.clock import Clock
from edge_agent.errors import ConfigError
from edge_agent.roster import (
    ISOLATED_PARSE_BYTES,
    ApplyResult,
    Encoded,
    IsolatedParser,
    Roster,
    RosterError,
    SnapshotStaging,
    collector_paused,
    parse_roster_message,
)
from edge_agent.secrets import read_credential
from edge_agent.services import Counters, Emitter
from sync import (
    Event,
    MqttLink,
    NonceCache,
    ReplyQueueFull,
    RosterDelta,
    RosterReply,
    RosterSignature,
    RosterSnapshot,
    SignatureRefused,
    SyncError,
    TrustedKey,
    is_signed,
    parse_trusted_keys,
    reply_properties,
    response_properties,
    verify_roster_message,
)

log = logging.getLogger(__name__)

REPLY_TTL_S = 3600.0
"""How long a roster reply waits for the link: the centre resends after a resync anyway."""
RESYNC_TTL_S = 7 * 86400.0
"""How long a resync request after a recovery waits for the link: until the centre hears it, the
gateway decides from the restored (or an empty) roster, so it outlives any ordinary outage."""
LAST_GOOD_SETTLE_S = 1.0
"""After an applied version, how long to wait for more before copying the roster (one copy of a
30 MB roster per burst of deltas, not one per delta: SD cards wear)."""
REJECT_LOG_INTERVAL_S = 60.0
"""At most one log line per this many seconds for refused roster messages (each is counted)."""
NONCE_FILE = "roster_nonces.json"
NONCE_CACHE_SIZE = 100_000
"""Most roster nonces remembered at once (each until its signature expires): a thousand deltas a
day for a 30-day max age fit three times over; when full, new messages are refused, not evicted."""
AUDIT_TYPE = "edu.campus.gateway.audit.v1"


class RosterSignatureError(RosterError):
    """A roster message refused for its signature (or its absence, or a replay): audited.

    The reply's reason starts with the code (``bad_signature: ...``), so the centre can tell the
    refusals apart without parsing prose."""

    def __init__(self, code: str, message: str, *, kind: str | None, key_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}", result="rejected", code=code)
        self.kind = kind
        self.key_id = key_id
        """The signing key when the signature verified (a replay, an expired one); else None."""


class RosterKeysError(ConfigError):
    """The roster keys credential cannot be used (not JSON, a bad key, a key meant for commands)."""


def parse_roster_keys(text: str) -> dict[str, TrustedKey]:
    """The roster keys credential (the command keys' format); raises :class:`RosterKeysError`."""
    try:
        keys = parse_trusted_keys(text, "roster keys")
    except SyncError as err:
        raise RosterKeysError(str(err), code=err.code) from err
    limited = sorted(key.id for key in keys.values() if key.commands is not None)
    if limited:
        # A key limited to some commands was meant for commands; master data grants more.
        raise RosterKeysError(
            f"key(s) {', '.join(limited)} list 'commands': a roster key signs all master data, "
            "list it without 'commands'",
            code="bad_key",
        )
    return keys


class RosterSignatures:
    """The gateway's side of signed master data: the trusted keys (re-read by :meth:`reload_keys`
    on SIGHUP, so keys rotate without a gap), the validity rules and the nonces already taken.

    Called from the roster worker thread one message at a time (the roster sync's order), so the
    nonce cache needs no lock.
    """

    def __init__(
        self,
        *,
        keys_credential: str,
        required: bool,
        max_age_s: float,
        clock_skew_s: float,
        nonce_path: Path | None,
        now: Callable[[], datetime],
        nonce_file_expected: bool = False,
    ) -> None:
        self.keys_credential = keys_credential
        self.required = required
        self.max_age_s = max_age_s
        self.clock_skew_s = clock_skew_s
        self.now = now
        self.keys: dict[str, TrustedKey] = {}
        self.keys_error = ""
        self.refused = 0
        self.unsigned_taken = 0
        self.nonces = NonceCache(
            NONCE_CACHE_SIZE,
            nonce_path,
            wall=lambda: now().timestamp(),
            expect_file=nonce_file_expected,
            what="roster messages",
            # Not refused like commands: a retained snapshot would be refused until re-published.
            after_loss="a roster message taken before can be taken again until its signature expires; "
            "the version rules keep it from changing anything (a delta applies only to the version it "
            "follows, a snapshot only when newer)",
        )
        self.reload_keys()
        if not required:
            log.warning(
                "agent.roster_signatures is 'optional': roster messages are taken unsigned, so anyone "
                "who may publish on the roster topics can change who may pass a gate. Use it in a lab only."
            )

    def reload_keys(self) -> bool:
        """(Re-)read the keys credential. On an error the keys in use are kept; False."""
        name = self.keys_credential
        try:
            text = read_credential(name)
            if text is None:
                raise SyncError(f"credential {name!r} is not set", code="roster_keys_missing")
            keys = parse_roster_keys(text)
        except (SyncError, ConfigError) as err:
            self.keys_error = str(err)
            level = logging.ERROR if self.required or self.keys else logging.INFO
            log.log(
                level,
                "roster keys not loaded (%s); keeping %d key(s) in use%s",
                err,
                len(self.keys),
                ""
                if self.keys or not self.required
                else ": every roster message is refused (`edge-agent doctor` says what to put where)",
            )
            return False
        self.keys, self.keys_error = keys, ""
        log.info("roster keys loaded: %s", ", ".join(sorted(keys)) or "none")
        return True

    def verify(self, topic: str, payload: bytes) -> RosterSignature | None:
        """The verified signature of ``payload`` (None: unsigned, taken as signatures are optional);
        raises :class:`RosterSignatureError`. The signed message is parsed as it came."""
        kind = _kind_of(topic)
        if not is_signed(payload) and not self.required:
            self.unsigned_taken += 1
            return None
        if not self.keys:
            # With signatures optional, a signed message is still verified: it cannot be without keys.
            why = self.keys_error or f"credential {self.keys_credential!r} lists no key"
            raise RosterSignatureError(
                "roster_keys_missing",
                f"no roster keys are loaded ({why}), so no roster message can be verified",
                kind=kind,
            )
        try:
            return verify_roster_message(
                topic,
                payload,
                self.keys,
                now=self.now(),
                max_age_s=self.max_age_s,
                clock_skew_s=self.clock_skew_s,
            )
        except SignatureRefused as err:
            raise RosterSignatureError(err.code, str(err), kind=kind, key_id=err.key_id) from err

    def check_fresh(self, signature: RosterSignature | None, kind: str) -> None:
        """Refuse a message whose nonce was taken before (``replayed``), or that the full nonce
        cache could not remember (``nonce_cache_full``)."""
        if signature is None:
            return
        code = self.nonces.seen(signature.key_id, signature.nonce, self.now().timestamp())
        if code == "replayed":
            raise RosterSignatureError(
                "replayed",
                f"nonce {signature.nonce} of key {signature.key_id!r} was taken before",
                kind=kind,
                key_id=signature.key_id,
            )
        if code is not None:
            raise RosterSignatureError(
                code, "too many live roster nonces; retry later", kind=kind, key_id=signature.key_id
            )

    def remember(self, signatures: list[RosterSignature]) -> None:
        """Keep the nonces of messages just taken until they expire (saved, so a restart keeps them)."""
        now = self.now().timestamp()
        for signature in signatures:
            # A full cache refuses a nonce only here, after the message was taken: it then stays
            # open to replay until it expires, which the version rules still make harmless.
            if (
                self.nonces.check_and_add(
                    signature.key_id, signature.nonce, signature.remember_until(self.clock_skew_s), now
                )
                == "nonce_cache_full"
            ):
                log.warning("roster nonce %s not remembered: the nonce cache is full", signature.nonce)
        if signatures:
            self.nonces.save()

    def status(self) -> dict[str, Any]:
        """For the gateway's status: whether signatures are required, the keys, why none load."""
        out: dict[str, Any] = {
            "required": self.required,
            "keys": sorted(self.keys),
            "refused": self.refused,
        }
        if self.keys_error:
            out["keys_error"] = self.keys_error
        if not self.required:
            out["unsigned_taken"] = self.unsigned_taken
        return out


def _kind_of(topic: str) -> Literal["snapshot", "delta"] | None:
    named = topic.rsplit("/", 1)[-1]
    return "snapshot" if named == "snapshot" else "delta" if named == "delta" else None


class RosterSync:
    """Applies what arrives on the roster topics, in order, and keeps the last-known-good copy.

    A component: ``start()`` subscribes :meth:`on_message` to ``link.topics.roster_filter``,
    ``run()`` copies applied versions to ``roster.db.last-good``, ``stop()`` copies one not yet
    copied.
    """

    def __init__(
        self,
        roster: Roster,
        link: MqttLink,
        emitter: Emitter,
        counters: Counters,
        gateway: str,
        *,
        clock: Clock,
        max_message_bytes: int,
        signatures: RosterSignatures,
        part_timeout_s: float = 300.0,
        refill_faces: bool = False,
    ) -> None:
        self.roster = roster
        self.signatures = signatures
        self.link = link
        self.emitter = emitter
        self.counters = counters
        self.gateway = gateway
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.part_timeout_s = part_timeout_s
        self._handling = asyncio.Lock()
        """Held while a message is handled, so the part timeout never drops a staging in use."""
        self._staged_at = 0.0
        self._parser = IsolatedParser()
        self._to_copy = asyncio.Event()
        self._reject_logged_at: float | None = None
        self._rejects_unlogged = 0
        self._staging: SnapshotStaging | None = None
        self._ended: tuple[str, bool] | None = None
        """The last snapshot in parts that ended: its part id, and whether it ended complete."""
        self._staged_signatures: list[RosterSignature] = []
        """The signatures of the parts staged so far: their nonces are taken with the whole."""
        self._refill_faces = refill_faces
        """faces.db was found corrupt: the face templates are gone, and only a snapshot brings them
        (the roster does not keep them), so one at the version held is taken once more."""

    # -- component ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.link.subscribe(self.link.topics.roster_filter, self.on_message)
        held = self.roster.version
        if held > 0 and await asyncio.to_thread(self.roster.last_good_version) != held:
            self._to_copy.set()  # first start with a roster (seed, upgrade), or a copy that lags

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._keep_last_good(), name="roster-last-good")
            tasks.create_task(self._expire_parts(), name="roster-part-timeout")

    async def _keep_last_good(self) -> None:
        while True:
            await self._to_copy.wait()
            await self.clock.sleep(LAST_GOOD_SETTLE_S)
            self._to_copy.clear()
            await self._save_last_good()

    async def _expire_parts(self) -> None:
        """Drop a snapshot in parts whose next part does not come (the centre crashed mid-way, or
        a part was lost): its staged entries would hold their memory until the next roster message."""
        while True:
            await self.clock.sleep(max(0.1, self.part_timeout_s / 10))
            async with self._handling:
                staging = self._staging
                if staging is None or self.clock.monotonic() - self._staged_at < self.part_timeout_s:
                    continue
                got = f"after {staging.next_index} of {staging.count} parts"
                self._abandon(
                    f"no next part for {self.part_timeout_s:.0f} s", counter="roster_snapshot_part_timeout"
                )
                await asyncio.to_thread(self._parser.close)
                self._send_resync(f"snapshot {staging.part_id!r} (version {staging.version}) timed out {got}")

    async def stop(self) -> None:
        await asyncio.to_thread(self._parser.close)  # up between the parts of a snapshot
        if self._to_copy.is_set():
            self._to_copy.clear()
            await self._save_last_good()

    async def _save_last_good(self) -> None:
        try:
            await asyncio.to_thread(self.roster.save_last_good)
        except (OSError, sqlite3.Error) as err:
            # The gate keeps deciding from memory and roster.db; only the fallback copy is stale.
            self.counters.count("roster_last_good_failed")
            log.error("the roster's last-known-good copy was not updated: %s", err)
            self._to_copy.set()

    # -- recovery ------------------------------------------------------------------------------

    def request_resync(self) -> dict[str, object] | None:
        """After a start that found ``roster.db`` (or ``faces.db``) corrupt: ask the centre for its
        snapshot; returns the roster's ``storage_recovered`` payload to report (None when the roster
        was not recovered).

        The request is the roster reply the centre already acts on, ``resync_needed``, sent
        unprompted (``requested_version`` null) on ``roster/reply`` (docs/INTEGRATORS.md).
        """
        recovery = self.roster.recovery
        held = self.roster.version
        if recovery is None:
            if self._refill_faces and held > 0:
                self._send_resync(f"faces.db was corrupt and the face templates of version {held} are gone")
            return None
        if recovery.restored_version is None:
            reason = f"roster.db was corrupt and {recovery.last_good_error}; the roster is empty"
        else:
            reason = f"roster.db was corrupt; version {held} was restored from the last-known-good copy"
        return recovery.event_data(resync_requested=self._send_resync(reason))

    def _send_resync(self, reason: str) -> bool:
        reply = RosterReply(
            gateway=self.gateway,
            result="resync_needed",
            version=self.roster.version,
            requested_version=None,
            reason=f"{reason}: please resend the current snapshot",
        )
        try:
            self.link.send_reply(
                self.link.topics.roster_reply, reply.model_dump_json().encode(), ttl_s=RESYNC_TTL_S
            )
        except ReplyQueueFull:
            log.error("the roster resync request could not be queued; the centre learns it from the status")
            return False
        return True

    # -- messages ------------------------------------------------------------------------------

    async def on_message(self, topic: str, payload: bytes, props: Properties | None) -> None:
        async with self._handling:
            await self._handle(topic, payload, props)
            if self._staging is not None:
                self._staged_at = self.clock.monotonic()

    async def _handle(self, topic: str, payload: bytes, props: Properties | None) -> None:
        roster = self.roster
        requested: int | None = None
        kind = "unknown"
        try:
            result = await self._take(topic, payload)
            if result is None:
                return  # a part taken in (or one sent twice): the snapshot's answer comes with its last
        except RosterError as err:
            kind, requested = err.kind or kind, err.requested_version
            self.counters.count(f"roster_{err.code}")
            self._log_refused(topic, err)
            if isinstance(err, RosterSignatureError):
                self._audit_refusal(topic, err)
            reply = RosterReply(
                gateway=self.gateway,
                result=err.result,
                version=roster.version,
                requested_version=requested,
                reason=str(err),
            )
            self.emitter.emit(
                Event(
                    "edu.campus.gateway.roster_rejected.v1",
                    self.emitter.source("gateway"),
                    {
                        "kind": kind,
                        "held_version": roster.version,
                        "requested_version": requested,
                        "result": err.result,
                        "reason": str(err),
                    },
                )
            )
        else:
            self._to_copy.set()
            reply = RosterReply(
                gateway=self.gateway,
                result="applied",
                version=result.version,
                requested_version=result.version,
            )
            self.emitter.emit(
                Event(
                    "edu.campus.gateway.roster_applied.v1",
                    self.emitter.source("gateway"),
                    {
                        "kind": result.kind,
                        "from_version": result.from_version,
                        "version": result.version,
                        "persons": result.persons,
                        "credentials": result.credentials,
                    },
                )
            )
        response_topic, correlation = response_properties(props)
        self.link.send_reply(
            response_topic or self.link.topics.roster_reply,
            reply.model_dump_json().encode(),
            properties=reply_properties(correlation),
            ttl_s=REPLY_TTL_S,
        )

    def _audit_refusal(self, topic: str, err: RosterSignatureError) -> None:
        self.signatures.refused += 1
        audit: dict[str, Any] = {
            "actor": err.key_id or "unknown",
            "role": "centre" if err.key_id else "unknown",
            "via": "mqtt",
            "action": f"roster_{err.kind or 'message'}",
            "target": topic,
            "result": "refused",
            # Bounded: a refusal's text must not bloat the outbox.
            "reason": str(err)[:300],
        }
        self.emitter.emit(Event(AUDIT_TYPE, self.emitter.source("gateway"), audit))

    async def _take(self, topic: str, payload: bytes) -> ApplyResult | None:
        try:
            return await self._take_message(topic, payload)
        except RosterSignatureError:
            raise  # not taken at all: a snapshot being staged goes on as if it never came
        except RosterError as err:
            if err.requested_version is None and self._staging is not None and topic.endswith("/snapshot"):
                # Unreadable, or too big to read, on the snapshot topic: a part of the snapshot
                # being staged, as far as anyone can tell. This is its answer; the rest is dropped.
                self._end(self._staging.part_id, complete=False)
            raise

    async def _take_message(self, topic: str, payload: bytes) -> ApplyResult | None:
        if len(payload) > self.max_message_bytes:
            err = RosterError(
                f"roster message of {len(payload):,} bytes is over the limit of "
                f"{self.max_message_bytes:,} bytes (agent.roster_max_message_bytes); not read",
                result="rejected",
                code="too_large",
            )
            named = topic.rsplit("/", 1)[-1]
            err.kind = named if named in ("snapshot", "delta") else None
            raise err
        try:
            return await asyncio.to_thread(self._apply, topic, payload)
        except asyncio.CancelledError:
            self._parser.kill()  # the agent stops: a parse under way must not hold the exit
            raise

    def _apply(self, topic: str, payload: bytes) -> ApplyResult | None:
        """Verify, parse and apply one message (in a worker thread); None for a part of a snapshot
        that is not complete yet (or one ignored)."""
        try:
            # Verifying is one SHA-256 of the body where it lies in the payload; the signed message
            # is a roster message itself (its signature member is a field), parsed in or out of process.
            signature = self.signatures.verify(topic, payload)
            if len(payload) <= ISOLATED_PARSE_BYTES:
                message = parse_roster_message(payload)
                if message.kind == "delta" or message.part is None:
                    return self._apply_message(message, signature)
                with collector_paused():  # the staged entries are frozen out of the collector's passes
                    return self._take_part(message, signature, None, len(payload))
            with collector_paused():
                message, encoded = self._parser.parse(payload)
                if message.kind == "snapshot" and message.part is not None:
                    return self._take_part(message, signature, encoded, len(payload))
                return self._apply_message(message, signature, encoded)
        finally:
            if self._staging is None:
                self._parser.close()  # kept only between the parts of a snapshot

    def _apply_message(
        self,
        message: RosterSnapshot | RosterDelta,
        signature: RosterSignature | None,
        encoded: Encoded | None = None,
    ) -> ApplyResult:
        try:
            if message.kind == "snapshot":
                self._check_replay(message.version, signature)
                if self._staging is not None:
                    self._abandon(f"a whole snapshot (version {message.version}) came instead")
                self._check_newer(message.version)
                result = self._applied_snapshot(self.roster.apply_snapshot(message, encoded=encoded))
            else:
                # A delta seen before is a replay whatever its version says.
                self.signatures.check_fresh(signature, "delta")
                # A delta between the parts of a snapshot is taken against the roster held now, as if
                # no snapshot were coming: a card withdrawn is withdrawn at once, not after the last part.
                result = self.roster.apply_delta(message, encoded=encoded)
            self.signatures.remember([signature] if signature is not None else [])
            return result
        except RosterError as err:
            err.kind, err.requested_version = message.kind, message.version
            raise

    def _check_replay(self, version: int, signature: RosterSignature | None) -> None:
        """A snapshot (or part) seen before is a replay, except one at the version held: that is the
        retained snapshot the broker hands over at every reconnect: answered ``ignored`` (or, when
        faces.db lost its templates, taken once more)."""
        if version != self.roster.version:
            self.signatures.check_fresh(signature, "snapshot")

    def _check_newer(self, version: int) -> None:
        held = self.roster.version
        if version > held or (version == held and self._refill_faces):
            return
        raise RosterError(
            f"snapshot version {version} is not newer than {held}", result="ignored", code="stale_snapshot"
        )

    def _applied_snapshot(self, result: ApplyResult) -> ApplyResult:
        self._refill_faces = False  # the templates came with it
        return result

    # -- snapshots in parts ----------------------------------------------------------------------

    def _take_part(
        self,
        message: RosterSnapshot,
        signature: RosterSignature | None,
        encoded: Encoded | None,
        size: int,
    ) -> ApplyResult | None:
        """Stage one part; on the last, apply the whole like a snapshot in one message.

        Parts must come in order (the link delivers in order). A part sent again (QoS 1 may
        redeliver) is ignored; index 0 starts the snapshot afresh (superseding one unfinished);
        any other break — an index skipped, another id or count or version mid-way — drops what was
        staged and asks for the snapshot again (``resync_needed``). After a snapshot in parts ended,
        its later parts are ignored: it got its one answer.
        """
        assert message.part is not None
        part, staging = message.part, self._staging
        try:
            if staging is not None and part.id == staging.part_id and part.index < staging.next_index:
                self.counters.count("roster_snapshot_part_duplicate")
                return None
            if staging is None and part.index > 0 and self._ended is not None and self._ended[0] == part.id:
                self.counters.count(
                    "roster_snapshot_part_duplicate" if self._ended[1] else "roster_snapshot_part_dropped"
                )
                return None
            self._check_replay(message.version, signature)
            if signature is not None and any(
                (s.key_id, s.nonce) == (signature.key_id, signature.nonce) for s in self._staged_signatures
            ):
                raise RosterSignatureError(
                    "replayed",
                    f"nonce {signature.nonce} was already used by a part of this snapshot",
                    kind="snapshot",
                    key_id=signature.key_id,
                )
            if part.index == 0:
                if staging is not None:
                    self._abandon(f"snapshot {part.id!r} started")
                staging = self._staging = SnapshotStaging(
                    part.id, message.version, part.count, max_bytes=self.max_message_bytes
                )
                self._staged_signatures = []
            elif staging is None or (part.id, part.index, part.count, message.version) != (
                staging.part_id,
                staging.next_index,
                staging.count,
                staging.version,
            ):
                self._end(part.id, complete=False)
                self._check_newer(message.version)  # a part of one not newer (a retained last part)
                raise RosterError(
                    f"snapshot part gap: got part {part.index + 1} of {part.count} of snapshot {part.id!r} "
                    f"(version {message.version}), "
                    + (
                        "with no snapshot in parts under way"
                        if staging is None
                        else f"expected part {staging.next_index + 1} of {staging.count} of snapshot "
                        f"{staging.part_id!r} (version {staging.version})"
                    )
                    + "; what was staged is dropped",
                    result="resync_needed",
                    code="snapshot_part_gap",
                )
            held = self.roster.version
            if message.version > held or (message.version == held and self._refill_faces):
                staging.add(message, encoded, size)
                if signature is not None:
                    self._staged_signatures.append(signature)
            else:
                staging.next_index += 1  # not newer: nothing to stage, its answer comes with the last
            if not staging.complete:
                return None
            self._end(part.id, complete=True)
            self._check_newer(message.version)
            result = self._applied_snapshot(self.roster.apply_staged(staging))
            self.signatures.remember(self._staged_signatures)
            return result
        except RosterSignatureError as err:
            # A replayed part is not part of the snapshot being staged: that one goes on.
            err.requested_version = message.version
            raise
        except RosterError as err:
            self._end(part.id, complete=False)
            err.kind, err.requested_version = "snapshot", message.version
            raise

    def _end(self, part_id: str, *, complete: bool) -> None:
        self._staging = None
        self._staged_signatures = []
        self._ended = (part_id, complete)

    def _abandon(self, why: str, *, counter: str = "roster_snapshot_part_superseded") -> None:
        """Drop an unfinished snapshot in parts that a newer one replaces (no answer is due for it:
        the centre sent the newer one) or whose next part did not come in time."""
        staging = self._staging
        assert staging is not None
        self._staging = None
        self._staged_signatures = []
        self._ended = (staging.part_id, False)
        self.counters.count(counter)
        self._warn(
            f"roster snapshot {staging.part_id!r} (version {staging.version}) dropped after "
            f"{staging.next_index} of {staging.count} parts: {why}"
        )

    def _log_refused(self, topic: str, err: RosterError) -> None:
        self._warn(f"roster message on {topic} not applied: {err}")

    def _warn(self, text: str) -> None:
        """A WARNING about refused or dropped roster messages, at most one a :data:`REJECT_LOG_INTERVAL_S`."""
        now = self.clock.monotonic()
        self._rejects_unlogged += 1
        if self._reject_logged_at is not None and now - self._reject_logged_at < REJECT_LOG_INTERVAL_S:
            return
        more = self._rejects_unlogged - 1
        log.warning(
            "%s%s", text, f" (and {more} more refused or dropped since the last line)" if more else ""
        )
        self._reject_logged_at, self._rejects_unlogged = now, 0


async def seed_roster(roster: Roster, seed: str | None, config_path: Path | None) -> None:
    """Apply the configured seed snapshot once, while the local roster is empty (first install, demo).

    Not after a recovery that left the roster empty: a seed is old master data, and a card it would
    grant may have been withdrawn since; the centre's snapshot is requested instead.
    """
    if seed is None or roster.version > 0:
        return
    if roster.recovery is not None:
        log.warning("roster seed %s not applied: the roster is waiting for the centre after a recovery", seed)
        return
    path = Path(seed)
    if not path.is_absolute() and config_path is not None:
        path = config_path.parent / path
    try:
        message = parse_roster_message(await asyncio.to_thread(path.read_bytes))
        if message.kind != "snapshot":
            raise RosterError("a roster seed must be a snapshot", result="rejected", code="seed_not_snapshot")
        await asyncio.to_thread(roster.apply_snapshot, message)
    except (OSError, RosterError) as err:
        log.error("roster seed %s not applied: %s", seed, err)


__all__ = [
    "LAST_GOOD_SETTLE_S",
    "NONCE_FILE",
    "RosterKeysError",
    "RosterSignatureError",
    "RosterSignatures",
    "RosterSync",
    "parse_roster_keys",
    "seed_roster",
]
