"""Roster sync down to vendor terminals: every ``hikvision`` device with ``sync_roster: true``
holds the roster's persons (employee number = person id) and their cards, so the terminal's own
decisions use our identities and its events name our person ids.

At start, after every roster change (``Roster.on_applied``) and every ``user_sync_interval_s`` (someone
may edit users at the terminal), each such terminal is diffed and brought to the roster: persons
added or modified, blocked persons, leavers (past ``valid_until``) and people no longer in the
roster deleted, cards added and deleted. A terminal that is not open yet or refuses is retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from edge_agent.clock import Clock, sleep_or_wake
from edge_agent.config import GatewayConfig
from edge_agent.roster import ApplyResult, Roster, RosterIndex
from edge_agent.services import Counters, DeviceDirectory

log = logging.getLogger(__name__)

RETRY_S = 10.0
"""A terminal whose sync failed is tried again this soon."""
WAIT_ONLINE_S = 1.0
"""A terminal not open or not online yet is looked at again this soon (no request is made)."""


@dataclass(frozen=True, slots=True)
class RosterUser:
    """A person as written to a terminal (the driver's ``UserSpec``)."""

    employee_no: str
    name: str
    user_type: Literal["normal", "visitor"]
    valid_from: datetime | None
    valid_until: datetime | None
    cards: tuple[str, ...]


def terminal_users(index: RosterIndex, now: datetime, gate: str | None = None) -> list[RosterUser]:
    """The users a terminal should hold: every person not blocked and not past ``valid_until`` and,
    for a terminal reported as ``gate``, whose access groups include that gate (or ``*``), as the
    gateway's own gates decide; with their cards that are not blocked and not expired (a terminal's
    card has no validity of its own: the person's applies). Schedules are not written: the terminal
    grants a holder at any time of day (docs/HIKVISION.md)."""
    allowed = (
        None
        if gate is None
        else {g.id for g in index.access_groups.values() if gate in g.gates or "*" in g.gates}
    )
    cards: dict[str, list[str]] = {}
    for number, cred in sorted(index.credentials.items()):
        if number in index.blocklist or (cred.valid_until is not None and cred.valid_until <= now):
            continue
        cards.setdefault(cred.person_id, []).append(number)
    out = []
    for person in sorted(index.persons.values(), key=lambda p: p.id):
        if person.blocked or (person.valid_until is not None and person.valid_until <= now):
            continue
        if allowed is not None and not allowed.intersection(person.access_groups):
            continue
        out.append(
            RosterUser(
                employee_no=person.id,
                name=person.name,
                user_type="visitor" if person.role == "visitor" else "normal",
                valid_from=person.valid_from,
                valid_until=person.valid_until,
                cards=tuple(cards.get(person.id, ())),
            )
        )
    return out


class TerminalRosterSync:
    """The component (start / run / stop) that keeps ``sync_roster`` terminals on the roster."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        roster: Callable[[], Roster | None],
        devices: DeviceDirectory,
        clock: Clock,
        counters: Counters,
    ) -> None:
        self.roster = roster
        self.devices = devices
        self.clock = clock
        self.counters = counters
        self.terminals: dict[str, float] = {
            d.id: float(getattr(d, "user_sync_interval_s", 3600.0))
            for d in config.devices
            if d.kind == "hikvision" and getattr(d, "sync_roster", False) is True
        }
        # The gate a terminal's decisions are reported under (terminals:, else its id): who may pass it.
        gates = {t.device: t.gate for t in config.terminals if t.gate}
        self.gates: dict[str, str] = {
            device_id: gates.get(device_id, device_id) for device_id in self.terminals
        }
        self.synced: dict[str, tuple[int, float]] = {}
        """Per terminal: the roster version it was last brought to, and when (clock monotonic)."""
        self.last_result: dict[str, Any] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: Roster | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._store = self.roster()
        if self._store is not None and self.terminals and self._on_applied not in self._store.on_applied:
            self._store.on_applied.append(self._on_applied)

    def _on_applied(self, result: ApplyResult) -> None:
        # Called in the thread that applied the roster.
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        if not self.terminals:
            await asyncio.Event().wait()  # nothing to do, for ever
        assert self._wake is not None
        while True:
            self._wake.clear()
            wait = min(self.terminals.values())
            for device_id, interval in self.terminals.items():
                due = await self._sync(device_id, interval)
                wait = min(wait, due)
            await sleep_or_wake(self.clock, wait, self._wake, name="terminal-roster-next")

    async def _sync(self, device_id: str, interval: float) -> float:
        """Bring one terminal to the roster if it is behind; returns the seconds until it is due again."""
        store = self._store
        if store is None:
            return RETRY_S
        version = store.version
        last = self.synced.get(device_id)
        now = self.clock.monotonic()
        if last is not None and last[0] == version and now - last[1] < interval:
            return interval - (now - last[1])
        driver = self.devices.drivers.get(device_id)
        sync_users = getattr(driver, "sync_users", None)
        # Only while its stream is up: a terminal that refuses our login is not asked again here
        # (it locks the account); its driver retries at its own pace.
        if sync_users is None or self.devices.state.get(device_id, {}).get("online") is not True:
            return WAIT_ONLINE_S
        users: Sequence[RosterUser] = terminal_users(store.index, self.clock.now(), self.gates[device_id])
        try:
            result = await sync_users(users)
        except Exception as err:
            self.counters.count("terminal_roster_sync_failed")
            log.warning(
                "%s: roster sync to the terminal failed (%s); retrying in %.0f s",
                device_id,
                err,
                RETRY_S,
                extra={"device": device_id, "code": "terminal_roster_sync_failed"},
            )
            return RETRY_S
        self.synced[device_id] = (version, self.clock.monotonic())
        self.last_result[device_id] = result
        self.counters.count("terminal_roster_syncs")
        errors = getattr(result, "errors", {})
        if errors:
            self.counters.count("terminal_roster_user_errors", len(errors))
            log.warning(
                "%s: the terminal refused %d users/cards: %s",
                device_id,
                len(errors),
                "; ".join(f"{k}: {v}" for k, v in sorted(errors.items())[:10]),
                extra={"device": device_id, "code": "terminal_roster_user_errors"},
            )
        log.info("%s: roster version %d on the terminal: %s", device_id, version, result)
        return RETRY_S if errors else interval

    async def stop(self) -> None:
        if self._store is not None and self._on_applied in self._store.on_applied:
            self._store.on_applied.remove(self._on_applied)


__all__ = ["RosterUser", "TerminalRosterSync", "terminal_users"]
