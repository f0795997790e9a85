"""Remote management over MQTT: signed, authorised commands with replies (docs/COMMANDS.md).

A command arrives on ``{prefix}/{site}/{gw}/cmd/{name}`` as a JSON envelope signed by a key the
gateway trusts (Ed25519 or HMAC-SHA256, listed in a credential). The broker's ACL is the first
check (who may publish to ``cmd/#``); the signature is the second, and it binds the command to
this gateway's topic, a validity window and a nonce, so a captured command cannot be replayed
later, twice, or to another gateway. Every command, done or refused, is audited as a
``gateway.audit.v1`` event and answered with a reply envelope: on the MQTT 5 response topic with
the request's correlation data, else on ``.../cmd/{name}/reply``.

The processor never raises into the MQTT link: a bad command is refused, counted, audited and
answered, and the gateway keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device_drivers import DeviceError
from edge_agent.alerts import AlertError
from edge_agent.config import (
    CommandSettings,
    ConfigFileError,
    Direction,
    RateLimit,
    install_config,
    load_config,
    parse_config,
    pending_marker,
    restore_previous_config,
    write_error_code,
)
from edge_agent.errors import ConfigError
from edge_agent.logs import setup_logging
from edge_agent.secrets import read_credential
from edge_agent.services import Services
from sync import (
    Event,
    NonceCache,
    ReplyQueueFull,
    TrustedKey,
    TrustedKeysError,
    canonical_json,
    format_time,
    reply_properties,
    response_properties,
    sign_bytes,
)
from sync import parse_trusted_keys as sync_parse_trusted_keys

log = logging.getLogger(__name__)

#: Prefix of every signed message, so a command signature can never be mistaken for (or reused
#: as) a signature over anything else the same key might sign.
SIGNING_CONTEXT = b"campus-cmd/v1\n"

AUDIT_TYPE = "edu.campus.gateway.audit.v1"
NONCE_FILE = "command_nonces.json"
# I-JSON (RFC 7493) integer range: what every JSON implementation the centre might use agrees on.
MAX_SAFE_INT = 2**53 - 1

# Strings, not pydantic datetimes: those would also accept Unix timestamps, and the signed text
# must mean the same to every implementation.
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
_ID = re.compile(ID_PATTERN)

Result = Literal["ok", "refused", "failed"]


# -- trusted keys ---------------------------------------------------------------------------------


class CommandKeyError(ConfigError):
    """The keys credential cannot be used (missing, not JSON, a bad key)."""


def parse_trusted_keys(text: str) -> dict[str, TrustedKey]:
    """Parse the keys credential (sync's format, shared with roster keys); raises
    :class:`CommandKeyError` (code ``bad_keys``/``bad_key``), a configuration error of the agent."""
    try:
        return sync_parse_trusted_keys(text, "command keys")
    except TrustedKeysError as err:
        raise CommandKeyError(str(err), code=err.code) from err


# -- the wire format ----------------------------------------------------------------------------


class CommandRequest(BaseModel):
    """The request envelope (sync/schemas/commands/request.json)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="Request id, echoed in the reply.")
    name: str = Field(pattern=r"^[a-z_]{1,32}$", description="Command name; equals the topic's last level.")
    args: dict[str, Any] = Field(default_factory=dict, description="The command's arguments.")
    issued_at: str = Field(
        pattern=RFC3339, description="When the centre signed it (RFC 3339, UTC or offset)."
    )
    expires_at: str = Field(
        pattern=RFC3339, description="After this (plus clock skew) it is refused (RFC 3339)."
    )
    nonce: str = Field(
        pattern=r"^[A-Za-z0-9_-]{16,64}$", description="Random, never reused by the key (≥ 96 bits)."
    )
    key_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Id of the signing key.")
    signature: str = Field(
        pattern=r"^[A-Za-z0-9+/]+={0,2}$", max_length=200, description="Base64 signature (see COMMANDS.md)."
    )


class CommandReply(BaseModel):
    """The reply envelope (sync/schemas/commands/reply.json)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(description="The request's id; null when the request had none readable.")
    name: str = Field(description="Command name, from the topic.")
    result: Result = Field(description="ok, refused (not attempted) or failed (attempted, did not work).")
    code: str = Field(description="Stable short machine-readable code, e.g. 'replayed'.")
    message: str = Field(description="Human-readable explanation.")
    data: dict[str, Any] = Field(default_factory=dict, description="Command-specific results.")


def signing_input(topic: str, envelope: dict[str, Any]) -> bytes:
    """What is signed: context line, the exact topic, a newline, the canonical envelope without
    ``signature``. The topic binds the command to one gateway and one command name."""
    body = {k: v for k, v in envelope.items() if k != "signature"}
    return SIGNING_CONTEXT + topic.encode("utf-8") + b"\n" + canonical_json(body)


def sign_command(
    topic: str,
    envelope: dict[str, Any],
    *,
    ed25519_private_key: Ed25519PrivateKey | None = None,
    hmac_secret: bytes | None = None,
) -> dict[str, Any]:
    """The centre's side: ``envelope`` with its ``signature`` (base64) added. Exactly one key."""
    signature = sign_bytes(
        signing_input(topic, envelope), ed25519_private_key=ed25519_private_key, hmac_secret=hmac_secret
    )
    return {**envelope, "signature": base64.b64encode(signature).decode("ascii")}


class Refused(Exception):
    """A command refused (or failed) before or while running; becomes the reply and the audit."""

    def __init__(self, code: str, message: str, *, result: Result = "refused", **data: Any) -> None:
        super().__init__(message)
        self.code = code
        self.result: Result = result
        self.data = data


def _no_floats(text: str) -> Any:
    raise ValueError(f"non-integral number {text} (only integers are allowed)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Two parsers may keep different copies of a duplicated key: refuse the ambiguity.
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json_strict(payload: bytes) -> Any:
    """JSON without floats, NaN/Infinity, duplicate keys or integers beyond ±2^53."""
    value = json.loads(
        payload.decode("utf-8"),
        parse_float=_no_floats,
        parse_constant=_no_floats,
        object_pairs_hook=_no_duplicates,
    )
    _check_ints(value)
    return value


def _check_ints(value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > MAX_SAFE_INT:
        raise ValueError(f"integer {value} is outside ±2^53")
    if isinstance(value, dict):
        for item in value.values():
            _check_ints(item)
    elif isinstance(value, list):
        for item in value:
            _check_ints(item)


# -- command arguments ----------------------------------------------------------------------------


class GateArgs(BaseModel):
    """``lock`` / ``normal``: which gate."""

    model_config = ConfigDict(extra="forbid")

    gate: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Gate id from the configuration.")


class GateDirectionArgs(GateArgs):
    """``open`` / ``hold_open``: which gate and which way."""

    direction: Direction = Field(description="entry or exit.")


class NoArgs(BaseModel):
    """Commands without arguments."""

    model_config = ConfigDict(extra="forbid")


class ResyncRosterArgs(BaseModel):
    """``resync_roster``: optionally the centre's current version, to compare with ours."""

    model_config = ConfigDict(extra="forbid")

    centre_version: int | None = Field(
        None, ge=0, le=MAX_SAFE_INT, description="The centre's current roster version, if it knows it."
    )


class SetLogLevelArgs(BaseModel):
    """``set_log_level``: the new root log level (until the next reload or restart)."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["debug", "info", "warning", "error"] = Field(description="New log level.")


class AckAlertArgs(BaseModel):
    """``ack_alert``: acknowledge an alert of the local alert book."""

    model_config = ConfigDict(extra="forbid")

    alert_id: str = Field(min_length=1, max_length=64, description="The alert's event id.")
    by: str = Field(min_length=1, max_length=128, description="Who acknowledges (a person at the centre).")
    note: str = Field("", max_length=1000, description="Free text kept with the acknowledgement.")


class PushConfigArgs(BaseModel):
    """``push_config``: a whole configuration file from the centre."""

    model_config = ConfigDict(extra="forbid")

    yaml: str = Field(min_length=1, max_length=200_000, description="The complete YAML configuration file.")


ARGS: dict[str, type[BaseModel]] = {
    "open": GateDirectionArgs,
    "hold_open": GateDirectionArgs,
    "lock": GateArgs,
    "normal": GateArgs,
    "resync_roster": ResyncRosterArgs,
    "reload_config": NoArgs,
    "diagnostics": NoArgs,
    "set_log_level": SetLogLevelArgs,
    "ack_alert": AckAlertArgs,
    "push_config": PushConfigArgs,
}
# What the gateway's reload applies while running; a change anywhere else needs a restart.
HOT_SECTIONS = frozenset({"agent", "simulated"})
COMMAND_NAMES = tuple(ARGS)


# -- rate limits ----------------------------------------------------------------------------------


class SlidingWindow:
    """Rate limit: at most ``limit.count`` hits in any ``limit.per_s`` seconds, per key."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._hits: dict[str, collections.deque[float]] = {}

    def allow(self, key: str, now: float) -> float | None:
        """None when allowed (and counted); else the seconds until the next one would be."""
        hits = self._hits.setdefault(key, collections.deque())
        while hits and hits[0] <= now - self.limit.per_s:
            hits.popleft()
        if len(hits) >= self.limit.count:
            return hits[0] + self.limit.per_s - now
        hits.append(now)
        return None


# -- the processor ------------------------------------------------------------------------------


@dataclass
class CommandStats:
    received: int = 0
    ok: int = 0
    refused: int = 0
    failed: int = 0
    reply_not_sent: int = 0


@dataclass
class _Outcome:
    result: Result
    code: str
    message: str
    data: dict[str, Any]
    target: str | None = None


Handler = Callable[[Any], Awaitable[_Outcome]]


class CommandProcessor:
    """Verifies, executes, answers and audits commands. Subscribe :meth:`handle` to
    ``services.link.topics.command_filter``."""

    def __init__(
        self, services: Services, settings: CommandSettings, *, nonce_file_expected: bool = False
    ) -> None:
        """``nonce_file_expected``: the agent ran on this data directory before, so a missing nonce
        file was lost (see :class:`NonceCache`)."""
        self.services = services
        self.settings = settings
        self.stats = CommandStats()
        self.by_code: dict[str, int] = {}
        self.keys: dict[str, TrustedKey] = {}
        self.keys_error = ""
        clock = services.clock
        self.nonces = NonceCache(
            settings.nonce_cache_size,
            services.data_dir / NONCE_FILE,
            wall=lambda: clock.now().timestamp(),
            expect_file=nonce_file_expected,
        )
        self.open_limit = SlidingWindow(settings.open_rate_limit)
        self.reload_keys()
        self._handlers: dict[str, Handler] = {
            "open": self._open,
            "hold_open": self._hold_open,
            "lock": self._lock,
            "normal": self._normal,
            "resync_roster": self._resync_roster,
            "reload_config": self._reload_config,
            "diagnostics": self._diagnostics,
            "set_log_level": self._set_log_level,
            "ack_alert": self._ack_alert,
            "push_config": self._push_config,
        }

    def reload_keys(self) -> bool:
        """Re-read the keys credential (rotation). On error the keys in use are kept; False."""
        name = self.settings.keys_credential
        try:
            text = read_credential(name)
            if text is None:
                raise CommandKeyError(f"credential {name!r} is not set", code="no_keys")
            self.keys = parse_trusted_keys(text)
        except ConfigError as err:
            self.keys_error = str(err)
            log.error("command keys not loaded (%s); keeping %d key(s) in use", err, len(self.keys))
            return False
        self.keys_error = ""
        log.info("command keys loaded: %s", ", ".join(sorted(self.keys)) or "none")
        return True

    # -- entry point --------------------------------------------------------------------------

    async def handle(self, topic: str, payload: bytes, props: Properties | None) -> None:
        """One command message from the link: verify, run, reply, audit. Never raises."""
        base = self.services.link.topics.base + "/cmd/"
        topic_name = topic[len(base) :] if topic.startswith(base) else ""
        if not topic_name or "/" in topic_name:
            return  # not a command topic of ours (a reply echoed back, or a stray filter match)
        self.stats.received += 1
        # The id is echoed even before the signature is checked: a 3.1.1 centre matches replies
        # by id alone, and the id is the requester's own data. The actor stays 'unknown' until then.
        seen: dict[str, str] = {}
        try:
            request, _key = self._authenticate(topic, topic_name, payload, seen)
            handler = self._handlers.get(request.name)
            if handler is None:
                raise Refused("unknown_command", f"unknown command {request.name!r}", known=list(ARGS))
            try:
                args = ARGS[request.name].model_validate(request.args)
            except ValidationError as err:
                raise Refused("bad_args", _first_error(err)) from err
            outcome = await handler(args)
        except Refused as refusal:
            outcome = _Outcome(refusal.result, refusal.code, str(refusal), refusal.data)
        except Exception as err:
            # A bug in one command must not take the link's handler down; it is reported as such.
            log.exception("command %s on %s failed unexpectedly", topic_name, topic)
            outcome = _Outcome("failed", "internal_error", f"internal error: {type(err).__name__}", {})
        self._finish(topic_name, props, seen.get("id"), seen.get("actor", "unknown"), outcome)

    def _authenticate(
        self, topic: str, topic_name: str, payload: bytes, seen: dict[str, str]
    ) -> tuple[CommandRequest, TrustedKey]:
        settings = self.settings
        if len(payload) > settings.max_payload_bytes:
            raise Refused(
                "too_large", f"payload of {len(payload)} bytes exceeds {settings.max_payload_bytes}"
            )
        try:
            raw = parse_json_strict(payload)
        except (UnicodeDecodeError, ValueError) as err:
            raise Refused("malformed", f"not acceptable JSON: {err}") from err
        if not isinstance(raw, dict):
            raise Refused("malformed", "the command is not a JSON object")
        claimed = raw.get("id")
        if isinstance(claimed, str) and _ID.match(claimed):
            seen["id"] = claimed
        if not raw.get("signature"):
            raise Refused("unsigned", "the command carries no signature")
        try:
            request = CommandRequest.model_validate(raw)
        except ValidationError as err:
            raise Refused("schema_invalid", _first_error(err)) from err
        if request.name != topic_name:
            raise Refused("name_mismatch", f"body names {request.name!r} but the topic is {topic_name!r}")
        key = self.keys.get(request.key_id)
        if key is None:
            raise Refused("unknown_key", f"key {request.key_id!r} is not trusted here")
        try:
            signature = base64.b64decode(request.signature, validate=True)
        except binascii.Error as err:
            raise Refused("bad_signature", "the signature is not valid base64") from err
        if not key.verify(signature, signing_input(topic, raw)):
            raise Refused("bad_signature", f"signature does not verify with key {key.id!r} for {topic}")
        # From here on the request is authentic; every later refusal is attributed to the key.
        seen["actor"] = key.id
        if key.commands is not None and request.name not in key.commands:
            raise Refused("not_permitted", f"key {key.id!r} may not sign {request.name!r}")
        now = self.services.clock.now()
        skew = timedelta(seconds=settings.clock_skew_s)
        issued_at, expires_at = _parse_time(request.issued_at), _parse_time(request.expires_at)
        if expires_at <= issued_at:
            raise Refused("schema_invalid", "expires_at is not after issued_at")
        if expires_at - issued_at > timedelta(seconds=settings.max_age_s):
            raise Refused("validity_too_long", f"validity window exceeds max_age_s={settings.max_age_s:g}")
        if now > expires_at + skew:
            raise Refused("expired", f"expired at {request.expires_at}; now {format_time(now)}")
        if issued_at > now + skew:
            raise Refused("not_yet_valid", f"issued at {request.issued_at}, ahead of {format_time(now)}")
        if self.nonces.issued_before_loss(issued_at.timestamp(), settings.clock_skew_s):
            raise Refused(
                "replay_unverifiable",
                f"issued at {request.issued_at}, before the gateway lost its record of used nonces; "
                "re-issue the command",
            )
        until = (expires_at + skew).timestamp()
        code = self.nonces.check_and_add(key.id, request.nonce, until, now.timestamp())
        if code == "replayed":
            raise Refused("replayed", f"nonce {request.nonce} was already used with key {key.id!r}")
        if code is not None:
            raise Refused(code, "too many live nonces; retry later")
        self.nonces.save()
        return request, key

    def _finish(
        self,
        topic_name: str,
        props: Properties | None,
        request_id: str | None,
        actor: str,
        outcome: _Outcome,
    ) -> None:
        setattr(self.stats, outcome.result, getattr(self.stats, outcome.result) + 1)
        self.by_code[outcome.code] = self.by_code.get(outcome.code, 0) + 1
        audit: dict[str, Any] = {
            "actor": actor,
            "role": "centre" if actor != "unknown" else "unknown",
            "via": "mqtt",
            "action": topic_name[:64],
            "result": outcome.result,
            # Free text from a request ends up here: bounded, so refusals cannot bloat the outbox.
            "reason": f"{outcome.code}: {outcome.message}"[:300],
        }
        if outcome.target is not None:
            audit["target"] = outcome.target
        if request_id is not None:
            audit["request_id"] = request_id
        emitter = self.services.emitter
        emitter.emit(Event(AUDIT_TYPE, emitter.source("gateway"), audit))
        level = logging.INFO if outcome.result == "ok" else logging.WARNING
        log.log(
            level,
            "command %s (%s) from %s: %s %s",
            topic_name,
            request_id,
            actor,
            outcome.code,
            outcome.message,
        )
        reply = CommandReply(
            id=request_id,
            name=topic_name,
            result=outcome.result,
            code=outcome.code,
            message=outcome.message,
            data=outcome.data,
        )
        response_topic, correlation = response_properties(props)
        topic = self.services.link.topics.command_reply(topic_name)
        if response_topic and self._response_topic_allowed(response_topic):
            topic = response_topic
        payload = orjson.dumps(reply.model_dump(), default=str)
        if not self._send_reply(topic, payload, reply_properties(correlation)):
            # The audit event is in the outbox either way; this reply is dropped.
            self.stats.reply_not_sent += 1

    def _send_reply(self, topic: str, payload: bytes, properties: Properties | None) -> bool:
        """Queue a reply on the link; False when the link's reply queue is full. The one place
        replies leave, so the link's reply API is met here only.

        The centre stops waiting once a command's validity window (at most ``max_age_s``) is over,
        so a reply still unsent after that would answer nobody: the link gives it up then.
        """
        link = self.services.link
        try:
            link.send_reply(topic, payload, properties=properties, ttl_s=self.settings.max_age_s)
        except ReplyQueueFull:
            return False  # logged and counted by the link
        return True

    def _response_topic_allowed(self, topic: str) -> bool:
        if "+" in topic or "#" in topic or "\x00" in topic:
            return False
        prefixes = self.settings.response_topic_prefixes
        return prefixes is None or any(topic.startswith(p) for p in prefixes)

    # -- commands -----------------------------------------------------------------------------

    def _gate(self, gate_id: str) -> Any:
        gates = self.services.gates
        gate = gates.get(gate_id)
        if gate is None:
            raise Refused("unknown_gate", f"no gate {gate_id!r} here", gates=sorted(gates))
        device_id = gate.config.turnstile
        driver = self.services.devices.drivers.get(device_id) if device_id else None
        if driver is None:
            driver = gate.door_device  # a gate with `door:` (a Modbus relay door), or None
        if driver is None:
            raise Refused(
                "no_turnstile", f"gate {gate_id!r} has no running turnstile or door device", result="failed"
            )
        return driver

    async def _device(self, gate_id: str, name: str, *args: Any) -> _Outcome:
        driver = self._gate(gate_id)
        method = getattr(driver, name, None)
        if method is None:
            raise Refused("unsupported", f"the device of gate {gate_id!r} cannot {name}")
        kwargs: dict[str, Any] = {}
        # The serial turnstile can wait for the device's ack; a relay door has nothing to wait for.
        if self.settings.device_confirm and "confirm" in inspect.signature(method).parameters:
            kwargs["confirm"] = True
        try:
            await method(*args, **kwargs)
        except DeviceError as err:
            raise Refused(
                "device_error",
                f"{name} on gate {gate_id!r} failed: {err}",
                result="failed",
                device_code=err.code,
            ) from err
        return _Outcome(
            "ok",
            "ok",
            f"{name} sent to gate {gate_id!r}" + (" and acknowledged" if kwargs else ""),
            {"gate": gate_id, "confirmed": bool(kwargs)},
            target=gate_id,
        )

    async def _open(self, args: GateDirectionArgs) -> _Outcome:
        self._gate(args.gate)  # an unknown gate is refused before it spends the rate limit
        wait = self.open_limit.allow(args.gate, self.services.clock.monotonic())
        if wait is not None:
            limit = self.settings.open_rate_limit
            raise Refused(
                "rate_limited",
                f"more than {limit.count} remote opens of gate {args.gate!r} in {limit.per_s:g} s",
                retry_after_s=round(wait, 3),
            )
        outcome = await self._device(args.gate, "open", args.direction)
        if outcome.result == "ok":
            # The passage that follows was authorised by this command: not tailgating.
            self.services.gates[args.gate].expect_remote_passage(args.direction, "command")
        return outcome

    async def _hold_open(self, args: GateDirectionArgs) -> _Outcome:
        return await self._device(args.gate, "hold_open", args.direction)

    async def _lock(self, args: GateArgs) -> _Outcome:
        return await self._device(args.gate, "lock")

    async def _normal(self, args: GateArgs) -> _Outcome:
        return await self._device(args.gate, "normal")

    async def _resync_roster(self, args: ResyncRosterArgs) -> _Outcome:
        held = self.services.roster.version
        # Without the centre's version we can only tell an empty roster (never synced) apart.
        needed = args.centre_version != held if args.centre_version is not None else held == 0
        topics = self.services.link.topics
        return _Outcome(
            "ok",
            "ok",
            "the gateway cannot pull the roster: the centre publishes a snapshot (or the missing "
            f"deltas) on {topics.roster('snapshot')}",
            {
                "roster_version": held,
                "snapshot_needed": needed,
                "snapshot_topic": topics.roster("snapshot"),
                "delta_topic": topics.roster("delta"),
            },
            target="roster",
        )

    async def _reload_config(self, args: NoArgs) -> _Outcome:
        config = self.services.config
        path = config.path
        if path is None:
            raise Refused("no_config_file", "the agent was not started from a config file")
        # Validate first, so the reply can say what is wrong; the gateway's reload only logs it.
        try:
            await asyncio.to_thread(load_config, path)
        except ConfigFileError as err:
            raise Refused(
                "config_invalid",
                f"{path} is not valid; the running configuration is kept",
                result="failed",
                errors=str(err)[:2000],
            ) from err
        before = config.current()
        await config.reload()
        keys_ok = self.reload_keys()
        # The gateway's reload replaces the running configuration object when it succeeds, and
        # keeps it on any failure after our check.
        if config.current() is before:
            raise Refused(
                "reload_failed", "the agent kept the running configuration; see its log", result="failed"
            )
        return _Outcome(
            "ok",
            "ok",
            f"configuration reloaded from {path}; gateway, mqtt and outbox changes need a restart",
            {"keys_reloaded": keys_ok, "keys": sorted(self.keys), "keys_error": self.keys_error},
            target=str(path),
        )

    async def _push_config(self, args: PushConfigArgs) -> _Outcome:
        # One writer of the file at a time: an admin applying zones on the console reads the file
        # this would replace.
        async with self.services.config.writing:
            return await self._install_pushed(args)

    async def _install_pushed(self, args: PushConfigArgs) -> _Outcome:
        """Validate a configuration from the centre, install it (keeping the previous file) and
        apply what can change while running; put the previous file back if that fails."""
        config = self.services.config
        path = config.path
        if path is None:
            raise Refused("no_config_file", "the agent was not started from a config file")
        try:
            # In a thread, like every file read here: parsing and checking is pure Python.
            new = await asyncio.to_thread(parse_config, args.yaml, "pushed configuration")
        except ConfigFileError as err:
            raise Refused(
                "config_invalid",
                "the pushed configuration is not valid; nothing changed",
                errors=str(err)[:2000],
            ) from err
        current = config.current()
        if (new.gateway.site, new.gateway.id) != (current.gateway.site, current.gateway.id):
            # A file meant for another gateway would change our identity and topics on restart.
            raise Refused(
                "wrong_gateway",
                f"the configuration is for {new.gateway.site}/{new.gateway.id}, "
                f"this is {current.gateway.site}/{current.gateway.id}",
            )
        changed = sorted(
            name for name in type(new).model_fields if getattr(new, name) != getattr(current, name)
        )
        try:
            previous = await asyncio.to_thread(install_config, path, args.yaml)
        except OSError as err:
            if write_error_code(err) == "config_read_only":
                raise Refused(
                    "config_read_only",
                    f"cannot write {path}: {err.strerror}; the shipped systemd unit keeps the configuration "
                    "read-only to the agent (docs/OPERATIONS.md says how to allow it); nothing changed",
                ) from err
            raise Refused("write_failed", f"cannot write {path}: {err}", result="failed") from err
        before = config.current()
        error = ""
        try:
            await config.reload()
        except Exception as err:
            error = f"{type(err).__name__}: {err}"
            log.exception("applying the pushed configuration failed")
        if error or config.current() is before:
            restored = await asyncio.to_thread(restore_previous_config, path)
            with contextlib.suppress(Exception):
                await config.reload()
            raise Refused(
                "rolled_back",
                "the agent could not apply the pushed configuration; "
                + (
                    "the previous file is back"
                    if restored
                    else "the previous file does not load, so the pushed one stays in the file, unapplied"
                ),
                result="failed",
                error=error or "the reload kept the running configuration",
                restored=restored,
            )
        restart = [name for name in changed if name not in HOT_SECTIONS]
        if restart:
            # The next start runs on probation: if the broker does not answer, the previous file
            # comes back (the gateway's config probation), so a bad push cannot cut the gateway off.
            marked_at = format_time(self.services.clock.now())
            await asyncio.to_thread(pending_marker(path).write_text, f"{marked_at}\n")
        return _Outcome(
            "ok",
            "ok",
            f"configuration installed at {path}"
            + (f"; {', '.join(restart)} take effect after a restart" if restart else " and applied"),
            {"changed": changed, "restart_required": restart, "previous": str(previous)},
            target=str(path),
        )

    async def _diagnostics(self, args: NoArgs) -> _Outcome:
        services = self.services
        data = {
            "status": services.report.status(),
            "counters": services.counters.snapshot(),
            "gates": {gate_id: asdict(gate.stats) for gate_id, gate in services.gates.items()},
            "link": asdict(services.link.stats),
            "commands": {**asdict(self.stats), "by_code": dict(self.by_code), "nonces": len(self.nonces)},
            "log_level": logging.getLevelName(logging.getLogger().level).lower(),
            "at": format_time(services.clock.now()),
        }
        return _Outcome("ok", "ok", "diagnostics", data, target="gateway")

    async def _set_log_level(self, args: SetLogLevelArgs) -> _Outcome:
        setup_logging(args.level)
        return _Outcome(
            "ok",
            "ok",
            f"log level set to {args.level} until the next reload or restart",
            {"level": args.level},
            target=args.level,
        )

    async def _ack_alert(self, args: AckAlertArgs) -> _Outcome:
        try:
            record = self.services.alerts.acknowledge(args.alert_id, args.by, "mqtt", args.note)
        except AlertError as err:
            raise Refused(err.code, str(err)) from err
        return _Outcome(
            "ok",
            "ok",
            f"alert {record.id} acknowledged by {args.by}",
            {"alert_id": record.id, "acknowledged_at": record.acknowledged_at},
            target=record.id,
        )


def _parse_time(text: str) -> datetime:
    # The schema pattern already admits only RFC 3339 with an offset, which fromisoformat reads.
    try:
        return datetime.fromisoformat(text)
    except ValueError as err:
        raise Refused("schema_invalid", f"{text!r} is not a valid time: {err}") from err


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    return f"{where}: {first['msg']}"


__all__ = [
    "COMMAND_NAMES",
    "SIGNING_CONTEXT",
    "CommandProcessor",
    "CommandReply",
    "CommandRequest",
    "NonceCache",
    "SlidingWindow",
    "TrustedKey",
    "canonical_json",
    "parse_trusted_keys",
    "sign_command",
    "signing_input",
]
