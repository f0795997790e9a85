"""Signatures by the centre's keys: trusted keys, the signing primitives, replay protection, and
the signed roster wire format (docs/COMMANDS.md, docs/INTEGRATORS.md "Signed master data").

Both sides live here: the centre signs with :func:`sign_roster_message` (``sync.central`` and the
publisher use it), the gateway opens with :func:`open_roster_message`; signed commands
(``edge_agent.commands``) share the keys, the primitives and the :class:`NonceCache`.

A signed roster message is the unsigned message with a ``signature`` object put first::

    {"signature":{"key_id":..,"issued_at":..,"expires_at":..,"nonce":..,"value":..},<the body's members>

and ``value`` signs the topic, the signature's own fields and the SHA-256 of the unsigned body
(:func:`roster_signing_input`). The body is never re-serialised: a 30 MB snapshot costs one hash,
and any JSON serialiser may produce it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sync.envelope import format_time
from sync.errors import SyncError
from sync.storage import move_aside

log = logging.getLogger(__name__)

KEY_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
NONCE_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
# Strings, not pydantic datetimes: those would also accept Unix timestamps, and the signed text
# must mean the same to every implementation.
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"

Algorithm = Literal["ed25519", "hmac-sha256"]


# -- trusted keys ---------------------------------------------------------------------------------


class TrustedKeysError(SyncError):
    """A trusted keys credential that cannot be used: ``code`` ``bad_keys`` (the file) or ``bad_key``."""


class TrustedKeyEntry(BaseModel):
    """One trusted key in a keys credential."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=KEY_ID_PATTERN, description="Key id, sent as key_id.")
    algorithm: Algorithm = Field(description="Signature algorithm.")
    public_key: str | None = Field(
        None, description="Ed25519: the public key, base64 of the 32 raw bytes or a PEM block."
    )
    secret: str | None = Field(None, description="HMAC-SHA256: the shared secret, base64, 32 bytes or more.")
    commands: list[str] | None = Field(
        None, description="Commands this key may sign; all commands when absent (command keys only)."
    )


class TrustedKeysFile(BaseModel):
    """A keys credential: ``{"keys": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    keys: list[TrustedKeyEntry] = Field(description="Trusted keys; an empty list trusts nothing.")


@dataclass(frozen=True)
class TrustedKey:
    id: str
    algorithm: Algorithm
    verifier: Ed25519PublicKey | bytes
    commands: frozenset[str] | None

    def verify(self, signature: bytes, message: bytes) -> bool:
        if isinstance(self.verifier, bytes):
            expected = hmac.new(self.verifier, message, hashlib.sha256).digest()
            return hmac.compare_digest(expected, signature)
        try:
            self.verifier.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise TrustedKeysError(f"{what} is not valid base64", code="bad_key") from err


def parse_trusted_keys(text: str, what: str = "trusted keys") -> dict[str, TrustedKey]:
    """Parse a keys credential (``what`` names it in errors, e.g. "roster keys"); raises
    :class:`TrustedKeysError` (code ``bad_keys``/``bad_key``)."""
    try:
        parsed = TrustedKeysFile.model_validate_json(text)
    except ValidationError as err:
        raise TrustedKeysError(f"the {what} credential is invalid: {err}", code="bad_keys") from err
    keys: dict[str, TrustedKey] = {}
    for entry in parsed.keys:
        if entry.id in keys:
            raise TrustedKeysError(f"key id {entry.id!r} is listed twice", code="bad_keys")
        verifier: Ed25519PublicKey | bytes
        if entry.algorithm == "ed25519":
            if entry.public_key is None or entry.secret is not None:
                raise TrustedKeysError(f"key {entry.id}: ed25519 takes public_key only", code="bad_key")
            if entry.public_key.lstrip().startswith("-----BEGIN"):
                try:
                    loaded = load_pem_public_key(entry.public_key.encode())
                except ValueError as err:
                    raise TrustedKeysError(f"key {entry.id}: the PEM cannot be read", code="bad_key") from err
                if not isinstance(loaded, Ed25519PublicKey):
                    raise TrustedKeysError(f"key {entry.id}: the PEM is not an Ed25519 key", code="bad_key")
                verifier = loaded
            else:
                raw = _b64(entry.public_key, f"key {entry.id} public_key")
                if len(raw) != 32:
                    raise TrustedKeysError(
                        f"key {entry.id}: an Ed25519 public key has 32 bytes", code="bad_key"
                    )
                verifier = Ed25519PublicKey.from_public_bytes(raw)
        else:
            if entry.secret is None or entry.public_key is not None:
                raise TrustedKeysError(f"key {entry.id}: hmac-sha256 takes secret only", code="bad_key")
            verifier = _b64(entry.secret, f"key {entry.id} secret")
            if len(verifier) < 32:
                # Shorter than the hash output makes the secret, not SHA-256, the weak part.
                raise TrustedKeysError(
                    f"key {entry.id}: an HMAC secret needs 32 bytes or more", code="bad_key"
                )
        keys[entry.id] = TrustedKey(
            entry.id, entry.algorithm, verifier, frozenset(entry.commands) if entry.commands else None
        )
    return keys


# -- primitives -------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 (JCS) for the JSON the envelopes allow: objects, arrays, strings, integers,
    booleans, null. Keys sorted, no whitespace, UTF-8 without escaping beyond JSON's minimum.

    Non-integral numbers are refused by the gateway, so number formatting, the one part of JCS
    Python's ``json`` does not reproduce, never comes up.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_bytes(
    message: bytes,
    *,
    ed25519_private_key: Ed25519PrivateKey | None = None,
    hmac_secret: bytes | None = None,
) -> bytes:
    """The raw signature of ``message`` by exactly one key: Ed25519 (64 bytes) or HMAC-SHA256 (32)."""
    if (ed25519_private_key is None) == (hmac_secret is None):
        raise ValueError("give exactly one of ed25519_private_key and hmac_secret")
    if ed25519_private_key is not None:
        return ed25519_private_key.sign(message)
    assert hmac_secret is not None
    return hmac.new(hmac_secret, message, hashlib.sha256).digest()


def new_nonce() -> str:
    """128 random bits, URL-safe base64 without padding (22 characters of ``[A-Za-z0-9_-]``)."""
    return secrets.token_urlsafe(16)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time as the signature patterns admit it (with an offset); ValueError otherwise."""
    if not re.match(RFC3339, text):
        raise ValueError(f"{text!r} is not an RFC 3339 time with an offset")
    return datetime.fromisoformat(text)


# -- replay protection --------------------------------------------------------------------------


class NonceCache:
    """Nonces seen per key, each kept until its message can no longer be valid.

    Kept in memory and written to ``path`` (when given) after each new nonce, so a message
    accepted before a restart is still refused as a replay after it. ``what`` names the messages
    in log lines ("commands", "roster messages").

    A file that cannot be read back (corrupt, or missing when ``expect_file`` says one was written
    before) would reopen every still-valid message to replay. Then the cache starts empty with
    ``lost_at`` set to now: messages issued before it may be refused (:meth:`issued_before_loss`), a
    corrupt file is moved aside (``moved_to``), and ``lost_at`` is kept in the file until the next loss.
    """

    def __init__(
        self,
        size: int,
        path: Path | None = None,
        *,
        wall: Callable[[], float] = time.time,
        expect_file: bool = False,
        what: str = "commands",
        after_loss: str | None = None,
    ) -> None:
        self.size = size
        self.path = path
        self.what = what
        self.after_loss = after_loss
        """What a loss means for these messages, for the log line; by default (commands) those issued
        before it are refused (:meth:`issued_before_loss`)."""
        self._wall = wall
        self._until: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self.lost_at: float | None = None
        """Wall time from which on the cache is complete again (None: it always was)."""
        self.lost_error = ""
        self.moved_to: Path | None = None
        if path is not None:
            self._load(path, expect_file)

    @staticmethod
    def _key(key_id: str, nonce: str) -> str:
        return f"{key_id} {nonce}"

    def _load(self, path: Path, expect_file: bool) -> None:
        try:
            stored = json.loads(path.read_bytes())
            nonces, lost_at = self._parse(stored)
        except FileNotFoundError:
            if expect_file:
                self._lost(f"{path.name} is missing, though the agent ran before")
            self.save()  # from now on a missing file means it was lost
            return
        except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            self.moved_to = self._move_aside(path)
            self._lost(f"{path.name} is unreadable: {err}")
            self.save()
            return
        self.lost_at = lost_at
        now = self._wall()
        for key, until in nonces.items():
            if until > now:
                self._until[key] = until
                heapq.heappush(self._heap, (until, key))

    @staticmethod
    def _parse(stored: object) -> tuple[dict[str, float], float | None]:
        """``{"lost_at": ..., "nonces": {...}}``, or the flat ``{key: until}`` of older versions."""
        if not isinstance(stored, dict):
            raise ValueError(f"a JSON {type(stored).__name__}, not an object")
        if "nonces" in stored:
            nonces, lost_at = stored["nonces"], stored.get("lost_at")
        else:  # written before the file carried lost_at
            nonces, lost_at = stored, None
        if not isinstance(nonces, dict) or not (lost_at is None or isinstance(lost_at, int | float)):
            raise ValueError("not a nonce file")
        for key, until in nonces.items():
            if not isinstance(key, str) or isinstance(until, bool) or not isinstance(until, int | float):
                raise ValueError(f"bad entry {key!r}")
        return {k: float(v) for k, v in nonces.items()}, None if lost_at is None else float(lost_at)

    def _move_aside(self, path: Path) -> Path | None:
        try:
            return move_aside(path, datetime.fromtimestamp(self._wall(), UTC))
        except OSError as err:
            log.error("nonce file %s cannot be moved aside: %s", path, err)
            return None

    def _lost(self, reason: str) -> None:
        self.lost_at = self._wall()
        self.lost_error = reason
        consequence = self.after_loss or (
            f"{self.what} issued before {format_time(datetime.fromtimestamp(self.lost_at, UTC))} are "
            "refused as replay_unverifiable, later ones are accepted as usual"
        )
        log.error(
            "%s; %s%s",
            reason,
            consequence,
            f" (the file is kept at {self.moved_to})" if self.moved_to else "",
        )

    def issued_before_loss(self, issued_at: float, skew_s: float) -> bool:
        """Whether a message issued at ``issued_at`` may have been taken before the nonces were lost.

        A message taken just before the loss may carry an ``issued_at`` up to ``skew_s`` past it
        (the centre's clock ahead of ours), so those are refused too."""
        return self.lost_at is not None and issued_at < self.lost_at + skew_s

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, key = heapq.heappop(self._heap)
            del self._until[key]

    def seen(self, key_id: str, nonce: str, now: float) -> str | None:
        """``replayed`` when the nonce is remembered, ``nonce_cache_full`` when a new one would not
        fit, else None; remembers nothing (:meth:`check_and_add` does)."""
        self._expire(now)
        if self._key(key_id, nonce) in self._until:
            return "replayed"
        if len(self._until) >= self.size:
            return "nonce_cache_full"
        return None

    def check_and_add(self, key_id: str, nonce: str, until: float, now: float) -> str | None:
        """None when fresh (and now remembered until ``until``); else ``replayed`` or
        ``nonce_cache_full``. Evicting a live nonce would reopen it to replay, so a full cache refuses."""
        code = self.seen(key_id, nonce, now)
        if code is not None:
            return code
        key = self._key(key_id, nonce)
        self._until[key] = until
        heapq.heappush(self._heap, (until, key))
        return None

    def __len__(self) -> int:
        return len(self._until)

    def save(self) -> None:
        """Write the live nonces atomically (a temporary file, then rename; no fsync: a power cut
        loses at most the last few, each of which is still bounded by its expiry)."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"lost_at": self.lost_at, "nonces": self._until}))
            os.replace(tmp, self.path)
        except OSError as err:
            log.warning("nonces not saved to %s: %s", self.path, err)


# -- signed roster messages -----------------------------------------------------------------------

ROSTER_SIGNING_CONTEXT = b"campus-edge roster v1\n"
"""Prefix of every signed roster input, so a roster signature is never valid as anything else
(a command signature starts ``campus-cmd/v1``)."""
SIGNED_PREFIX = b'{"signature":'
MAX_SIGNATURE_BYTES = 512
"""Most bytes the ``signature`` object may take (the largest legal one is ~350): what a centre
leaves free when it sizes the parts of a snapshot (``split_snapshot(max_part_bytes=...)``)."""

SignatureRefusalCode = Literal[
    "unsigned",
    "bad_signature_format",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "validity_too_long",
]


class SignatureRefused(SyncError):
    """A signed message that must not be taken; ``code`` is one of :data:`SignatureRefusalCode`."""

    def __init__(self, code: SignatureRefusalCode, message: str, *, key_id: str | None = None) -> None:
        super().__init__(message, code=code)
        self.key_id = key_id
        """The signing key, once the signature verified (expired, not yet valid, too long)."""


class RosterSignatureHeader(BaseModel):
    """The ``signature`` member of a signed roster message (docs/INTEGRATORS.md, "Signed master data")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str = Field(pattern=KEY_ID_PATTERN, description="Id of the centre's signing key.")
    issued_at: str = Field(pattern=RFC3339, description="When the centre signed it (RFC 3339).")
    expires_at: str = Field(
        pattern=RFC3339, description="After this (plus clock skew) the gateway refuses it (RFC 3339)."
    )
    nonce: str = Field(pattern=NONCE_PATTERN, description="Random, never reused by the key (>= 96 bits).")
    value: str = Field(
        pattern=r"^[A-Za-z0-9+/]+={0,2}$",
        max_length=200,
        description="Base64 Ed25519 (or HMAC-SHA256) signature over the roster signing input.",
    )


@dataclass(frozen=True)
class RosterSignature:
    """A roster signature that verified: who signed, when, until when, and its nonce."""

    key_id: str
    issued_at: datetime
    expires_at: datetime
    nonce: str

    def remember_until(self, clock_skew_s: float) -> float:
        """Wall time until which its nonce must be remembered: after that it is refused as expired."""
        return (self.expires_at + timedelta(seconds=clock_skew_s)).timestamp()


def roster_signing_input(topic: str, header: Mapping[str, str], body_sha256: bytes) -> bytes:
    """What ``value`` signs: the context line, the exact topic, the canonical signature fields
    (without ``value``) and the raw SHA-256 of the unsigned body, each after a newline."""
    fields = {name: header[name] for name in ("key_id", "issued_at", "expires_at", "nonce")}
    return (
        ROSTER_SIGNING_CONTEXT + topic.encode("utf-8") + b"\n" + canonical_json(fields) + b"\n" + body_sha256
    )


def sign_roster_message(
    topic: str,
    body: bytes,
    *,
    key_id: str,
    ed25519_private_key: Ed25519PrivateKey | None = None,
    hmac_secret: bytes | None = None,
    valid_for_s: float,
    now: datetime | None = None,
    nonce: str | None = None,
) -> bytes:
    """The centre's side: ``body`` (an unsigned roster message, a JSON object with at least one
    member) signed for ``topic`` by exactly one key, valid ``valid_for_s`` seconds from ``now``."""
    if not body.startswith(b"{") or body[1:].lstrip().startswith(b"}"):
        raise ValueError("a roster message is a JSON object with at least one member, starting with '{'")
    if valid_for_s <= 0:
        raise ValueError("valid_for_s must be positive")
    issued = now or datetime.now(UTC)
    header = {
        "key_id": key_id,
        "issued_at": format_time(issued),
        "expires_at": format_time(issued + timedelta(seconds=valid_for_s)),
        "nonce": nonce or new_nonce(),
    }
    RosterSignatureHeader(**header, value="AA==")  # the patterns, before anything is signed
    value = sign_bytes(
        roster_signing_input(topic, header, hashlib.sha256(body).digest()),
        ed25519_private_key=ed25519_private_key,
        hmac_secret=hmac_secret,
    )
    signature = {**header, "value": base64.b64encode(value).decode("ascii")}
    sig_json = json.dumps(signature, separators=(",", ":")).encode("ascii")
    return SIGNED_PREFIX + sig_json + b"," + body[1:]


def is_signed(payload: bytes) -> bool:
    """Whether ``payload`` has the signed form's prefix (it may still be badly signed)."""
    return payload.startswith(SIGNED_PREFIX)


def open_roster_message(
    topic: str,
    payload: bytes,
    keys: Mapping[str, TrustedKey],
    *,
    now: datetime,
    max_age_s: float,
    clock_skew_s: float,
) -> tuple[bytes, RosterSignature]:
    """The unsigned body of ``payload`` and its verified signature, or :class:`SignatureRefused`
    (see :func:`verify_roster_message`, which the gateway uses: it parses the signed message as it
    is, without this copy of the body)."""
    signature, body_from = _verified(topic, payload, keys, now, max_age_s, clock_skew_s)
    return b"{" + payload[body_from:], signature


def verify_roster_message(
    topic: str,
    payload: bytes,
    keys: Mapping[str, TrustedKey],
    *,
    now: datetime,
    max_age_s: float,
    clock_skew_s: float,
) -> RosterSignature:
    """The gateway's side: the verified signature of ``payload``, or :class:`SignatureRefused`.
    Replay (the nonce) is the caller's: it knows what the message does. The signed message is itself
    a valid roster message (its models take the ``signature`` member), so it is parsed as it came:
    copying a 30 MB body out of it cost the gates tens of milliseconds of GIL in page faults."""
    return _verified(topic, payload, keys, now, max_age_s, clock_skew_s)[0]


def _verified(
    topic: str,
    payload: bytes,
    keys: Mapping[str, TrustedKey],
    now: datetime,
    max_age_s: float,
    clock_skew_s: float,
) -> tuple[RosterSignature, int]:
    """The verified signature and where the body's members start in ``payload`` (the body is
    ``b"{" + payload[that:]``)."""
    if not payload.startswith(SIGNED_PREFIX):
        raise SignatureRefused(
            "unsigned", 'the roster message carries no signature (no leading {"signature":)'
        )
    start = len(SIGNED_PREFIX)
    # ASCII with one replacement per other byte keeps string and byte offsets equal; a legal
    # signature is ASCII, so anything replaced fails its patterns below.
    window = payload[start : start + MAX_SIGNATURE_BYTES].decode("ascii", errors="replace")
    try:
        raw, end = json.JSONDecoder().raw_decode(window)
    except json.JSONDecodeError as err:
        raise SignatureRefused(
            "bad_signature_format",
            f"the signature object is not JSON within {MAX_SIGNATURE_BYTES} bytes: {err}",
        ) from err
    after = start + end
    if payload[after : after + 1] != b"," or not isinstance(raw, dict):
        raise SignatureRefused(
            "bad_signature_format", "the signature must be a JSON object followed by the message's members"
        )
    try:
        header = RosterSignatureHeader.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise SignatureRefused("bad_signature_format", f"signature.{where}: {first['msg']}") from err
    key = keys.get(header.key_id)
    if key is None:
        raise SignatureRefused("unknown_key", f"key {header.key_id!r} is not trusted here")
    try:
        value = base64.b64decode(header.value, validate=True)
    except binascii.Error as err:
        raise SignatureRefused("bad_signature", "the signature value is not valid base64") from err
    body_digest = hashlib.sha256(b"{")
    body_digest.update(memoryview(payload)[after + 1 :])  # the body, hashed where it lies
    message = roster_signing_input(topic, header.model_dump(), body_digest.digest())
    if not key.verify(value, message):
        raise SignatureRefused(
            "bad_signature", f"the signature does not verify with key {key.id!r} for {topic}"
        )
    try:
        issued_at, expires_at = parse_time(header.issued_at), parse_time(header.expires_at)
    except ValueError as err:
        raise SignatureRefused("bad_signature_format", str(err), key_id=key.id) from err
    if expires_at <= issued_at:
        raise SignatureRefused("bad_signature_format", "expires_at is not after issued_at", key_id=key.id)
    if expires_at - issued_at > timedelta(seconds=max_age_s):
        raise SignatureRefused(
            "validity_too_long",
            f"validity window {header.issued_at} to {header.expires_at} exceeds the gateway's limit of "
            f"{max_age_s:g} s",
            key_id=key.id,
        )
    skew = timedelta(seconds=clock_skew_s)
    if now > expires_at + skew:
        raise SignatureRefused(
            "expired", f"the signature expired at {header.expires_at}; now {format_time(now)}", key_id=key.id
        )
    if issued_at > now + skew:
        raise SignatureRefused(
            "not_yet_valid", f"signed at {header.issued_at}, ahead of {format_time(now)}", key_id=key.id
        )
    return RosterSignature(key.id, issued_at, expires_at, header.nonce), after + 1


__all__ = [
    "MAX_SIGNATURE_BYTES",
    "ROSTER_SIGNING_CONTEXT",
    "NonceCache",
    "RosterSignature",
    "RosterSignatureHeader",
    "SignatureRefused",
    "TrustedKey",
    "TrustedKeysError",
    "canonical_json",
    "is_signed",
    "new_nonce",
    "open_roster_message",
    "parse_time",
    "parse_trusted_keys",
    "roster_signing_input",
    "sign_bytes",
    "sign_roster_message",
    "verify_roster_message",
]
