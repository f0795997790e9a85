"""Hikvision access controllers and face terminals over ISAPI (httpx, digest auth).

``readings()`` subscribes to ``/ISAPI/Event/notification/alertStream`` (``multipart/mixed``), and on
every (re)connect first fetches what the terminal recorded since the last acknowledged event
(``AcsEvent`` search by time, paged), so events raised while the link was down are delivered, once
and in serial order, before the live ones. :meth:`HikvisionDriver.sync_users` writes users and cards
down to the terminal (``UserInfo``/``CardInfo``), diffing against what it holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self
from zoneinfo import ZoneInfo

import httpx

from device_drivers._io.backoff import Backoff
from device_drivers._io.probe import ProbeResult
from device_drivers._io.state import write_atomically
from device_drivers.errors import DeviceError
from device_drivers.hikvision import codec
from device_drivers.hikvision.config import SIMULATED_PASSWORD, SIMULATED_USERNAME, HikvisionConfig
from device_drivers.readings import (
    DeviceOffline,
    DeviceOnline,
    Reading,
    TerminalAccess,
    TerminalAttendance,
    utc_now,
)
from device_drivers.secrets import load_password

log = logging.getLogger(__name__)

ALERT_STREAM = "/ISAPI/Event/notification/alertStream"
ACS_EVENT = "/ISAPI/AccessControl/AcsEvent?format=json"
SYSTEM_TIME = "/ISAPI/System/time"
DEVICE_INFO = "/ISAPI/System/deviceInfo"
USER_SEARCH = "/ISAPI/AccessControl/UserInfo/Search?format=json"
USER_RECORD = "/ISAPI/AccessControl/UserInfo/Record?format=json"
USER_MODIFY = "/ISAPI/AccessControl/UserInfo/Modify?format=json"
USER_DELETE = "/ISAPI/AccessControl/UserInfo/Delete?format=json"
CARD_SEARCH = "/ISAPI/AccessControl/CardInfo/Search?format=json"
CARD_RECORD = "/ISAPI/AccessControl/CardInfo/Record?format=json"
CARD_DELETE = "/ISAPI/AccessControl/CardInfo/Delete?format=json"
PAGE = 30
"""Results per search page: the most terminals return (``maxResults`` above it is cut to it)."""
STATE_FILE = "hikvision.json"
CATCH_UP_MARGIN = timedelta(minutes=5)
EARLIEST = "2000-01-01T00:00:00"
LATEST = "2037-12-31T23:59:59"


class _Simulator(Protocol):
    host: str
    port: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class AuthenticationFailed(DeviceError):
    """The terminal refused the login (HTTP 401 after the digest exchange)."""


class UserSpec(Protocol):
    """What :meth:`HikvisionDriver.sync_users` reads of a user (:class:`TerminalUser` has it)."""

    @property
    def employee_no(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def user_type(self) -> Literal["normal", "visitor"]: ...

    @property
    def valid_from(self) -> datetime | None: ...

    @property
    def valid_until(self) -> datetime | None: ...

    @property
    def cards(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class TerminalUser:
    """A person as the terminal holds them: ``employee_no`` (our person id), ``name``, ``user_type``
    (``normal`` or ``visitor``), validity (UTC; None: open), card numbers."""

    employee_no: str
    name: str
    user_type: Literal["normal", "visitor"] = "normal"
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    cards: tuple[str, ...] = ()


@dataclass
class UserSyncResult:
    """What one :meth:`HikvisionDriver.sync_users` did; ``errors`` maps an employee number (or
    ``card <no>``) to the terminal's refusal."""

    added: int = 0
    modified: int = 0
    deleted: int = 0
    cards_added: int = 0
    cards_deleted: int = 0
    unchanged: int = 0
    errors: dict[str, str] = field(default_factory=dict)


class _Noise:
    """Bad input is logged as one summary line per interval; the counters keep every drop."""

    def __init__(self, device_id: str, interval_s: float) -> None:
        self.device_id, self.interval_s = device_id, interval_s
        self._at: float | None = None
        self._unlogged = 0

    def report(self, code: str, detail: str) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if self._at is not None and now - self._at < self.interval_s:
            return
        log.warning(
            "%s: %s (%s); %d such since the last line",
            self.device_id,
            detail,
            code,
            self._unlogged,
            extra={"device": self.device_id, "code": code},
        )
        self._at, self._unlogged = now, 0


class HikvisionDriver:
    """One ISAPI terminal. Yields :class:`TerminalAccess`, :class:`TerminalAttendance`,
    :class:`DeviceOnline` and :class:`DeviceOffline`; keeps the last acknowledged event (serial and
    time) in ``state_dir``."""

    def __init__(
        self, config: HikvisionConfig, *, simulator: _Simulator | None = None, state_dir: Path | None = None
    ) -> None:
        self.config = config
        self.simulator = simulator
        self.state_dir = state_dir
        self.device_id = config.id
        self.timezone: tzinfo = ZoneInfo(config.timezone) if config.timezone else UTC
        self.counters: dict[str, int] = {}
        self.clock_skew_s: float | None = None
        self._client: httpx.AsyncClient | None = None
        self._backoff = Backoff(config.backoff)
        self._noise = _Noise(config.id, config.noise_log_interval_s)
        self._online: bool | None = None
        self._acked: tuple[int, datetime] | None = None
        self._yielded: tuple[int, datetime] | None = None
        self._pending: dict[int, int] = {}  # serial -> readings of it not yet acknowledged
        self._load_state()

    @classmethod
    def from_config(
        cls, config: HikvisionConfig, *, simulator: Any = None, state_dir: Path | None = None
    ) -> Self:
        return cls(config, simulator=simulator, state_dir=state_dir)

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self.simulator is not None:
            await self.simulator.start()
        self._client = _client(self.config, self.simulator)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        if self.simulator is not None:
            await self.simulator.stop()

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise DeviceError(f"{self.device_id}: driver not entered", code="not_open")
        return self._client

    # -- readings --------------------------------------------------------------------------------

    async def readings(self) -> AsyncIterator[Reading]:
        """Events, forever: reconnects with the shared backoff (at least ``auth_retry_s`` after a
        refused login) and says online/offline on each change."""
        while True:
            try:
                async for reading in self._session():
                    yield reading
                reason = "alert stream ended"
                self._count("stream_ended")
                delay = self._backoff.next_delay()
            except AuthenticationFailed:
                reason = "authentication failed"
                self._count("auth_failed")
                delay = max(self._backoff.next_delay(), self.config.auth_retry_s)
                log.error(
                    "%s: the terminal refused user %r (wrong password?); next attempt in %.0f s "
                    "(terminals lock the account after repeated failures)",
                    self.device_id,
                    self.config.username or SIMULATED_USERNAME,
                    delay,
                    extra={"device": self.device_id, "code": "auth_failed"},
                )
            except (httpx.HTTPError, OSError, DeviceError, codec.MalformedPart) as err:
                reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                self._count("disconnects")
                delay = self._backoff.next_delay()
                log.info("%s: %s; reconnecting in %.1f s", self.device_id, reason, delay)
            if self._online is not False:
                self._online = False
                yield DeviceOffline(self.device_id, reason, utc_now())
            await asyncio.sleep(delay)

    async def _session(self) -> AsyncIterator[Reading]:
        timeout = httpx.Timeout(self.config.timeout_s, read=self.config.heartbeat_timeout_s)
        async with self.client.stream("GET", ALERT_STREAM, timeout=timeout) as response:
            _check_status(response)
            parser = codec.MultipartParser(
                codec.boundary_from_content_type(response.headers.get("content-type")),
                max_part_bytes=self.config.max_part_bytes,
            )
            self._count("connects")
            self._backoff.reset()
            await self._check_clock()
            if self._acked is None and self._yielded is None:
                # First contact: events from now on; the terminal's older history is not ours.
                self._acked = (0, utc_now() - CATCH_UP_MARGIN)
                self._save_state()
            self._online = True
            yield DeviceOnline(self.device_id, "alert stream subscribed", utc_now())
            # The stream is open (what happens from here waits in it): fetch what was missed.
            async for reading in self._catch_up():
                yield reading
            async for chunk in response.aiter_raw():
                for item in parser.feed(chunk):
                    for reading in self._from_item(item):
                        yield reading

    def _from_item(self, item: codec.Part | codec.Dropped) -> list[Reading]:
        if isinstance(item, codec.Dropped):
            self._count(f"stream_{item.reason}")
            self._noise.report(item.reason, f"alert stream: {item.size} bytes dropped")
            return []
        try:
            parsed = codec.parse_part(item, self.timezone)
        except codec.MalformedPart as err:
            self._count(f"part_{err.code}")
            self._noise.report(err.code, f"alert stream: {err}")
            return []
        if parsed is None:
            self._count("pictures_skipped")
            return []
        if isinstance(parsed, codec.Heartbeat):
            self._count("heartbeats")
            return []
        if isinstance(parsed, codec.OtherEvent):
            self._count("events_ignored")
            return []
        return self._deliver(parsed)

    def _deliver(self, record: codec.AcsRecord) -> list[Reading]:
        """Readings of a record not delivered before (by serial), counted and marked pending."""
        if record.serial is not None and self._yielded is not None and record.serial <= self._yielded[0]:
            self._count("events_duplicate")
            return []
        readings = codec.to_readings(
            self.device_id, record, received_at=utc_now(), attendance=self.config.attendance
        )
        if not readings:
            self._count("events_ignored")
        if record.serial is not None:
            self._yielded = (record.serial, record.time)
            if readings:
                self._pending[record.serial] = len(readings)
        self._count("events", len(readings))
        return list(readings)

    async def _catch_up(self) -> AsyncIterator[Reading]:
        since = self._yielded or self._acked
        if since is None:
            return
        start = codec.format_time(since[1], self.timezone)
        skew = timedelta(seconds=self.clock_skew_s or 0)
        end = codec.format_time(utc_now() + skew + CATCH_UP_MARGIN, self.timezone)
        search_id = os.urandom(8).hex()
        position, fetched = 0, 0
        records: list[codec.AcsRecord] = []
        while fetched < self.config.catch_up_max_events:
            cond = {
                "searchID": search_id,
                "searchResultPosition": position,
                "maxResults": PAGE,
                "major": 0,
                "minor": 0,
                "startTime": start,
                "endTime": end,
            }
            doc = await self._post_json(ACS_EVENT, {"AcsEventCond": cond})
            result = doc.get("AcsEvent")
            if not isinstance(result, dict):
                raise codec.MalformedPart("AcsEvent answer without AcsEvent", "bad_search")
            items = result.get("InfoList") or []
            for info in items:
                try:
                    records.append(codec.record_from_info(info, self.timezone))
                except (codec.MalformedPart, KeyError) as err:
                    self._count("catch_up_bad_record")
                    self._noise.report("bad_event", f"AcsEvent: {err}")
            fetched += len(items)
            position += len(items)
            if result.get("responseStatusStrg") != "MORE" or not items:
                break
        if fetched >= self.config.catch_up_max_events:
            self._count("catch_up_truncated")
            log.error(
                "%s: more than %d events missed since %s; the rest are not fetched (catch_up_max_events)",
                self.device_id,
                self.config.catch_up_max_events,
                start,
                extra={"device": self.device_id, "code": "catch_up_truncated"},
            )
        records.sort(key=lambda r: (r.serial if r.serial is not None else -1, r.time))
        serials = [r.serial for r in records if r.serial is not None]
        if serials and max(serials) < since[0]:
            # Events since our mark's time, all numbered below it: the terminal's log was cleared or
            # it was reset, and numbers again from 1. Deliver them rather than skip them for ever.
            self._count("serial_reset")
            log.error(
                "%s: the terminal numbers its events from %d again (last delivered %d): log cleared or "
                "device reset; delivering from its new numbers",
                self.device_id,
                min(serials),
                since[0],
                extra={"device": self.device_id, "code": "serial_reset"},
            )
            since = (0, since[1])
            self._yielded = None
            self._acked = (0, since[1])
            self._save_state()
        before = self.counters.get("events", 0)
        for record in records:
            if record.serial is None or record.serial <= since[0]:
                continue
            for reading in self._deliver(record):
                yield reading
        caught = self.counters.get("events", 0) - before
        self._count("catch_up_events", caught)
        if caught:
            log.info("%s: %d missed events fetched (AcsEvent since %s)", self.device_id, caught, start)

    async def _check_clock(self) -> None:
        try:
            response = await self.client.get(SYSTEM_TIME)
            _check_status(response)
            local = _xml_values(response.content).get("localTime", "")
            skew = (codec.parse_time(local, self.timezone) - utc_now()).total_seconds()
        except (httpx.HTTPError, codec.MalformedPart, ET.ParseError, DeviceError) as err:
            if isinstance(err, AuthenticationFailed):
                raise
            self._count("clock_read_failed")
            self._noise.report("clock_read_failed", f"System/time: {err}")
            return
        self.clock_skew_s = skew
        if abs(skew) > self.config.clock_skew_warn_s:
            self._count("clock_skew_warnings")
            log.warning(
                "%s: the terminal's clock is %+.0f s off the gateway's; its event times are its own",
                self.device_id,
                skew,
                extra={"device": self.device_id, "code": "clock_skew"},
            )

    # -- acknowledgement and its state -------------------------------------------------------------

    def acknowledge(self, reading: Reading) -> None:
        """The event made from ``reading`` is committed: once every reading of its terminal event is,
        the high-water mark (serial and time) moves to it, on disk."""
        if not isinstance(reading, TerminalAccess | TerminalAttendance):
            return
        serial = codec.serial_of(reading.record_id)
        if serial is None:
            return
        left = self._pending.get(serial, 1) - 1
        if left > 0:
            self._pending[serial] = left
            return
        self._pending.pop(serial, None)
        if self._acked is None or serial > self._acked[0]:
            self._acked = (serial, reading.terminal_time)
            self._save_state()

    @property
    def acknowledged(self) -> tuple[int, datetime] | None:
        """The last acknowledged event: (serial, terminal time)."""
        return self._acked

    def _load_state(self) -> None:
        if self.state_dir is None:
            return
        path = self.state_dir / STATE_FILE
        try:
            doc = json.loads(path.read_text())
            self._acked = (int(doc["serial"]), datetime.fromisoformat(doc["time"]))
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError) as err:
            self._count("state_unreadable")
            log.error("%s: %s is unreadable (%s); starting from now", self.device_id, path, err)

    def _save_state(self) -> None:
        if self.state_dir is None or self._acked is None:
            return
        data = json.dumps({"serial": self._acked[0], "time": self._acked[1].isoformat()}).encode()
        write_atomically(self.state_dir / STATE_FILE, data)

    # -- requests --------------------------------------------------------------------------------

    async def _post_json(self, url: str, body: Mapping[str, Any], method: str = "POST") -> dict[str, Any]:
        response = await self.client.request(method, url, json=body)
        _check_status(response, allow=(400,))
        try:
            doc = response.json()
        except ValueError as err:
            raise codec.MalformedPart(f"{url}: answer is not JSON", "bad_json") from err
        if not isinstance(doc, dict):
            raise codec.MalformedPart(f"{url}: answer is not an object", "bad_json")
        if response.status_code == 400:
            raise DeviceError(
                f"{url.split('?')[0]}: {doc.get('subStatusCode') or doc.get('statusString') or 'refused'}",
                code="refused",
            )
        return doc

    async def _search(self, url: str, cond_key: str, result_key: str, items_key: str) -> list[dict[str, Any]]:
        search_id, position, out = os.urandom(8).hex(), 0, []
        while True:
            cond = {"searchID": search_id, "searchResultPosition": position, "maxResults": PAGE}
            result = (await self._post_json(url, {cond_key: cond})).get(result_key)
            if not isinstance(result, dict):
                raise codec.MalformedPart(f"{url}: answer without {result_key}", "bad_search")
            items = [i for i in result.get(items_key) or [] if isinstance(i, dict)]
            out += items
            position += len(items)
            if result.get("responseStatusStrg") != "MORE" or not items:
                return out

    # -- roster sync down --------------------------------------------------------------------------

    async def sync_users(self, users: Sequence[UserSpec]) -> UserSyncResult:
        """Make the terminal hold exactly ``users`` and their cards: add, modify and delete users,
        add and delete cards, after reading what it holds (paged searches). Idempotent: a second
        call with the same users changes nothing. A refusal for one user is in ``errors`` and the
        others go on; a lost link raises."""
        result = UserSyncResult()
        held = {
            str(u.get("employeeNo")): u
            for u in await self._search(USER_SEARCH, "UserInfoSearchCond", "UserInfoSearch", "UserInfo")
        }
        cards = {
            str(c.get("cardNo")): str(c.get("employeeNo"))
            for c in await self._search(CARD_SEARCH, "CardInfoSearchCond", "CardInfoSearch", "CardInfo")
        }
        wanted = {u.employee_no: u for u in users}
        gone = sorted(set(held) - set(wanted))
        for number in gone:
            await self._try(
                result,
                number,
                USER_DELETE,
                {"UserInfoDelCond": {"EmployeeNoList": [{"employeeNo": number}]}},
                "PUT",
            )
            if number not in result.errors:
                result.deleted += 1
        wanted_cards = {card: u.employee_no for u in users for card in u.cards}
        for card, owner in sorted(cards.items()):
            if owner in gone:
                continue  # deleting the user deleted its cards
            if wanted_cards.get(card) != owner:
                await self._try(
                    result,
                    f"card {card}",
                    CARD_DELETE,
                    {"CardInfoDelCond": {"CardNoList": [{"cardNo": card}]}},
                    "PUT",
                )
                if f"card {card}" not in result.errors:
                    result.cards_deleted += 1
        for number, user in wanted.items():
            info = self._user_info(user)
            if number not in held:
                await self._try(result, number, USER_RECORD, {"UserInfo": info}, "POST")
                if number not in result.errors:
                    result.added += 1
            elif _differs(held[number], info):
                await self._try(result, number, USER_MODIFY, {"UserInfo": info}, "PUT")
                if number not in result.errors:
                    result.modified += 1
            else:
                result.unchanged += 1
            if number in result.errors:
                continue
            for card in user.cards:
                if cards.get(card) == number:
                    continue
                await self._try(
                    result,
                    f"card {card}",
                    CARD_RECORD,
                    {"CardInfo": {"employeeNo": number, "cardNo": card, "cardType": "normalCard"}},
                    "POST",
                )
                if f"card {card}" not in result.errors:
                    result.cards_added += 1
        for key in ("added", "modified", "deleted", "cards_added", "cards_deleted"):
            self._count(f"users_{key}" if not key.startswith("cards") else key, getattr(result, key))
        self._count("user_sync_errors", len(result.errors))
        self._count("user_syncs")
        return result

    async def _try(
        self, result: UserSyncResult, key: str, url: str, body: Mapping[str, Any], method: str
    ) -> None:
        try:
            await self._post_json(url, body, method)
        except (DeviceError, codec.MalformedPart) as err:
            if isinstance(err, AuthenticationFailed):
                raise
            result.errors[key] = str(err)
            log.warning(
                "%s: %s: %s", self.device_id, key, err, extra={"device": self.device_id, "code": "user_sync"}
            )

    def _user_info(self, user: UserSpec) -> dict[str, Any]:
        def local(at: datetime | None, default: str) -> str:
            if at is None:
                return default
            text = at.astimezone(self.timezone).replace(tzinfo=None, microsecond=0).isoformat()
            return min(max(text, EARLIEST), LATEST)

        return {
            "employeeNo": user.employee_no,
            "name": user.name[:32],
            "userType": user.user_type,
            "Valid": {
                "enable": True,
                "beginTime": local(user.valid_from, EARLIEST),
                "endTime": local(user.valid_until, LATEST),
                "timeType": "local",
            },
            "doorRight": "1",
            "RightPlan": [{"doorNo": 1, "planTemplateNo": "1"}],
        }


def _differs(held: Mapping[str, Any], info: Mapping[str, Any]) -> bool:
    valid, want = held.get("Valid") or {}, info["Valid"]
    return bool(
        str(held.get("name", "")) != info["name"]
        or str(held.get("userType", "normal")) != info["userType"]
        or str(valid.get("beginTime", "")) != want["beginTime"]
        or str(valid.get("endTime", "")) != want["endTime"]
    )


def _check_status(response: httpx.Response, allow: tuple[int, ...] = ()) -> None:
    if response.status_code == 401:
        raise AuthenticationFailed("authentication failed", code="auth_failed")
    if response.status_code != 200 and response.status_code not in allow:
        raise DeviceError(
            f"{response.request.url.path} answered HTTP {response.status_code}", code="http_status"
        )


def _xml_values(content: bytes) -> dict[str, str]:
    root = ET.fromstring(content)
    return {el.tag.rsplit("}", 1)[-1]: (el.text or "").strip() for el in root.iter()}


def _client(config: HikvisionConfig, simulator: _Simulator | None) -> httpx.AsyncClient:
    if simulator is not None:
        base = f"http://{simulator.host}:{simulator.port}"
    else:
        base = f"{config.scheme}://{config.host}:{config.default_port}"
    password = load_password(config.password_credential) if config.password_credential else SIMULATED_PASSWORD
    return httpx.AsyncClient(
        base_url=base,
        auth=httpx.DigestAuth(config.username or SIMULATED_USERNAME, password),
        verify=config.verify_tls,
        timeout=config.timeout_s,
    )


async def probe_hikvision(config: HikvisionConfig) -> list[ProbeResult]:
    """Doctor's checks: reachable, authenticated (with model, serial, firmware), clock skew."""
    if config.simulated:
        return [ProbeResult("reachable", "ok", "simulated terminal (started with the agent)")]
    results: list[ProbeResult] = []
    try:
        client = _client(config, None)
    except DeviceError as err:
        return [ProbeResult("authenticated", "fail", str(err))]
    async with client:
        try:
            response = await client.get(DEVICE_INFO)
        except httpx.HTTPError as err:
            return [ProbeResult("reachable", "fail", f"{config.host}:{config.default_port}: {err!r}")]
        results.append(ProbeResult("reachable", "ok", f"{config.host}:{config.default_port} answers ISAPI"))
        if response.status_code == 401:
            results.append(
                ProbeResult("authenticated", "fail", f"user {config.username!r}: authentication failed")
            )
            return results
        try:
            info = _xml_values(response.content) if response.status_code == 200 else {}
        except ET.ParseError:
            info = {}
        if response.status_code != 200:
            results.append(
                ProbeResult("authenticated", "fail", f"deviceInfo answered HTTP {response.status_code}")
            )
            return results
        results.append(
            ProbeResult(
                "authenticated",
                "ok",
                f"model {info.get('model', '?')}, serial {info.get('serialNumber', '?')}, "
                f"firmware {info.get('firmwareVersion', '?')}",
            )
        )
        try:
            response = await client.get(SYSTEM_TIME)
            tz: tzinfo = ZoneInfo(config.timezone) if config.timezone else UTC
            local = _xml_values(response.content).get("localTime", "")
            skew = (codec.parse_time(local, tz) - utc_now()).total_seconds()
        except (httpx.HTTPError, ET.ParseError, codec.MalformedPart) as err:
            results.append(ProbeResult("clock", "warn", f"System/time unreadable: {err}"))
            return results
        status: Literal["ok", "warn"] = "ok" if abs(skew) <= config.clock_skew_warn_s else "warn"
        results.append(ProbeResult("clock", status, f"terminal clock {skew:+.0f} s off the gateway's"))
    return results


__all__ = [
    "AuthenticationFailed",
    "HikvisionDriver",
    "TerminalUser",
    "UserSpec",
    "UserSyncResult",
    "probe_hikvision",
]
