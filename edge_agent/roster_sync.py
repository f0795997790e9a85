"""Roster sync: master data from the centre, applied strictly one message after another.

The link hands this component the messages of ``campus/v1/{site}/roster/#`` in arrival order and
waits for each to be handled before the next (a delta N+1 must never be applied before delta N).
Parsing and applying run in a worker thread, so the gates keep deciding meanwhile. Every message
gets a reply (applied, ignored or rejected) through the link's reply queue, which delivers it when
the link is up — also when it was down at the time — or expires it with a logged, counted reason.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from paho.mqtt.properties import Properties

from edge_agent.roster import ApplyResult, Roster, RosterError, parse_roster_message
from edge_agent.services import Counters, Emitter
from sync import Event, MqttLink, RosterReply, reply_properties, response_properties

log = logging.getLogger(__name__)

REPLY_TTL_S = 3600.0
"""How long a roster reply waits for the link: the centre resends after a resync anyway."""


class RosterSync:
    """Applies what arrives on the roster topics, in order (the gateway subscribes
    :meth:`on_message` to ``link.topics.roster_filter``)."""

    def __init__(
        self, roster: Roster, link: MqttLink, emitter: Emitter, counters: Counters, gateway: str
    ) -> None:
        self.roster = roster
        self.link = link
        self.emitter = emitter
        self.counters = counters
        self.gateway = gateway

    async def on_message(self, topic: str, payload: bytes, props: Properties | None) -> None:
        roster = self.roster
        requested: int | None = None
        kind = "unknown"
        try:
            result = await asyncio.to_thread(self._apply, payload)
        except RosterError as err:
            kind, requested = err.kind or kind, err.requested_version
            self.counters.count(f"roster_{err.code}")
            log.warning("roster message on %s not applied: %s", topic, err)
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

    def _apply(self, payload: bytes) -> ApplyResult:
        """Parse and apply one message (in a worker thread)."""
        message = parse_roster_message(payload)
        try:
            if message.kind == "snapshot":
                held = self.roster.version
                if message.version <= held:
                    raise RosterError(
                        f"snapshot version {message.version} is not newer than {held}",
                        result="ignored",
                        code="stale_snapshot",
                    )
                return self.roster.apply_snapshot(message)
            return self.roster.apply_delta(message)
        except RosterError as err:
            err.kind, err.requested_version = message.kind, message.version
            raise


async def seed_roster(roster: Roster, seed: str | None, config_path: Path | None) -> None:
    """Apply the configured seed snapshot once, while the local roster is empty (first install, demo)."""
    if seed is None or roster.version > 0:
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


__all__ = ["RosterSync", "seed_roster"]
