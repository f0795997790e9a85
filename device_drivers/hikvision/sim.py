"""An ISAPI terminal for tests and the demo: HTTP/1.1 on 127.0.0.1 with real digest auth (RFC 7616,
MD5, ``qop=auth``), the ``multipart/mixed`` alert stream, ``AcsEvent`` search over its event
history, ``UserInfo``/``CardInfo`` record, modify, delete and search, ``System/time`` and
``System/deviceInfo``.

It decides like a terminal: a card or face presented at it is granted when the user (and card)
was written to it and the user's validity holds, and the event goes to its history and to every
open alert stream. Fault switches: :meth:`go_down` (streams cut mid-part, new connections closed:
events raised meanwhile are only in the history), :meth:`send_garbage`, :meth:`send_bad_json`.

Demo traffic: ``present`` (``face:<employee no>`` / ``card:<card no>``, the config's
``sim_present``) are presented in turn every ``interval_s`` while the simulator runs, each decided
by the terminal like :meth:`present_face` / :meth:`present_card`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from device_drivers.hikvision import codec
from device_drivers.hikvision.config import SIMULATED_PASSWORD, SIMULATED_USERNAME, HikvisionConfig
from device_drivers.secrets import load_password

BOUNDARY = b"MIME_boundary"
REALM = "DS-K1T671M"
# A 1x1 JPEG is enough: the driver skips pictures, the stream must carry them.
TINY_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912"
    "130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b080001"
    "000101011100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffda0008010100003f"
    "00d2cf20ffd9"
)


@dataclass
class SimUser:
    employee_no: str
    name: str
    user_type: str = "normal"
    begin: str = "2000-01-01T00:00:00"
    end: str = "2037-12-31T23:59:59"


@dataclass
class _Stream:
    writer: asyncio.StreamWriter
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)


class IsapiSimulator:
    """A Hikvision face terminal / access controller speaking ISAPI on a free port of 127.0.0.1."""

    def __init__(
        self,
        *,
        username: str = SIMULATED_USERNAME,
        password: str = SIMULATED_PASSWORD,
        timezone: tzinfo = UTC,
        heartbeat_s: float = 1.0,
        picture_every: int = 2,
        present: Sequence[str] = (),
        interval_s: float = 5.0,
    ) -> None:
        self.username = username
        self.password = password
        self.timezone = timezone
        self.heartbeat_s = heartbeat_s
        self.picture_every = picture_every
        self.present = list(present)
        self.interval_s = interval_s
        self.presented = 0
        """Demo presentations made so far."""
        self._demo: asyncio.Task[None] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.users: dict[str, SimUser] = {}
        self.cards: dict[str, str] = {}  # card number -> employee number
        self.history: list[dict[str, Any]] = []
        self.serial = 1000
        self.clock_skew = timedelta(0)
        self.down = False
        self.slow_s = 0.0
        self.requests: list[tuple[str, str]] = []
        self.auth_failures = 0
        self.streams_opened = 0
        self._nonces: set[str] = set()
        self._streams: list[_Stream] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, config: HikvisionConfig) -> Self:
        password = (
            load_password(config.password_credential) if config.password_credential else SIMULATED_PASSWORD
        )
        tz: tzinfo = ZoneInfo(config.timezone) if config.timezone else UTC
        return cls(
            username=config.username or SIMULATED_USERNAME,
            password=password,
            timezone=tz,
            present=config.sim_present,
            interval_s=config.sim_interval_s,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._connection, self.host, self.port or 0)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.present and self._demo is None:
            self._demo = asyncio.create_task(self._present_in_turn(), name=f"demo-isapi:{self.port}")

    async def stop(self) -> None:
        demo, self._demo = self._demo, None
        if demo is not None:
            demo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await demo
        server, self._server = self._server, None
        for stream in self._streams:
            stream.queue.put_nowait(None)
        for task in list(self._tasks):
            task.cancel()
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what tests do at the terminal -----------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_skew

    def raise_event(
        self,
        minor: int,
        *,
        major: int = codec.MAJOR_EVENT,
        employee_no: str | None = None,
        card_no: str | None = None,
        verify_mode: str = "cardOrFace",
        door: int = 1,
        attendance_status: str | None = None,
        picture: bool = False,
    ) -> int:
        """Record an event (history) and send it on every open alert stream; returns its serial."""
        self.serial += 1
        at = codec.format_time(self.now(), self.timezone)
        info: dict[str, Any] = {
            "major": major,
            "minor": minor,
            "time": at,
            "serialNo": self.serial,
            "doorNo": door,
            "currentVerifyMode": verify_mode,
        }
        if employee_no is not None:
            info["employeeNoString"] = employee_no
            if employee_no in self.users:
                info["name"] = self.users[employee_no].name
        if card_no is not None:
            info["cardNo"] = card_no
        if attendance_status is not None:
            info["attendanceStatus"] = attendance_status
        self.history.append(info)
        acs = {k: v for k, v in info.items() if k not in ("major", "minor", "time")}
        acs["majorEventType"], acs["subEventType"] = major, minor
        doc = {
            "ipAddress": self.host,
            "portNo": self.port,
            "protocol": "HTTP",
            "dateTime": at,
            "activePostCount": 1,
            "eventType": "AccessControllerEvent",
            "eventState": "active",
            "eventDescription": "Access Controller Event",
            "AccessControllerEvent": acs,
        }
        data = codec.encode_part("application/json", json.dumps(doc).encode(), BOUNDARY)
        if picture or (self.picture_every and self.serial % self.picture_every == 0):
            data += codec.encode_part("image/jpeg", TINY_JPEG, BOUNDARY, {"Content-ID": f"pic{self.serial}"})
        self._broadcast(data)
        return self.serial

    def present_card(self, card_no: str, *, attendance_status: str | None = None) -> int:
        """A card held at the reader: the terminal decides from the users and cards written to it."""
        employee = self.cards.get(card_no)
        if employee is None or employee not in self.users:
            return self.raise_event(codec.MINOR_INVALID_CARD, card_no=card_no, verify_mode="card")
        minor = self._validity(self.users[employee]) or codec.MINOR_LEGAL_CARD_PASS
        status = attendance_status if minor == codec.MINOR_LEGAL_CARD_PASS else None
        return self.raise_event(
            minor, employee_no=employee, card_no=card_no, verify_mode="card", attendance_status=status
        )

    def present_face(self, employee_no: str) -> int:
        """A face the terminal matched to ``employee_no`` (or did not: no such user)."""
        user = self.users.get(employee_no)
        if user is None:
            return self.raise_event(codec.MINOR_FACE_VERIFY_FAIL, verify_mode="face")
        minor = codec.MINOR_CARD_OUT_OF_DATE if self._validity(user) else codec.MINOR_FACE_VERIFY_PASS
        return self.raise_event(minor, employee_no=employee_no, verify_mode="face")

    async def _present_in_turn(self) -> None:
        """The demo's people at the terminal, one every ``interval_s``, looping."""
        while True:
            for item in self.present:
                # Also while the link is down: the event then waits in the history for the catch-up.
                await asyncio.sleep(self.interval_s)
                method, _, value = item.partition(":")
                if method == "face":
                    self.present_face(value)
                else:
                    self.present_card(value)
                self.presented += 1

    def _validity(self, user: SimUser) -> int | None:
        local = self.now().astimezone(self.timezone).replace(tzinfo=None, microsecond=0)
        if local < datetime.fromisoformat(user.begin):
            return codec.MINOR_CARD_INVALID_PERIOD
        if local > datetime.fromisoformat(user.end):
            return codec.MINOR_CARD_OUT_OF_DATE
        return None

    def go_down(self) -> None:
        """The link drops: open streams are cut in the middle of a part, new connections closed."""
        self.down = True
        for stream in list(self._streams):
            stream.queue.put_nowait(b"--" + BOUNDARY + b"\r\nContent-Type: application/json\r\nContent-Le")
            stream.queue.put_nowait(None)

    def come_up(self) -> None:
        self.down = False

    def send_garbage(self) -> None:
        """Bytes that are no part, then a part whose headers are cut: the driver must resync."""
        self._broadcast(b"\x00\xffnot a part at all\r\n" * 4 + b"--" + BOUNDARY + b"\r\nContent-Type: appl")

    def send_bad_json(self) -> None:
        self._broadcast(codec.encode_part("application/json", b'{"eventType": "AccessControllerEv', BOUNDARY))

    def send_heartbeat(self) -> None:
        self._broadcast(codec.encode_part("application/xml", self._heartbeat_xml(), BOUNDARY))

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def _broadcast(self, data: bytes) -> None:
        for stream in self._streams:
            stream.queue.put_nowait(data)

    def _heartbeat_xml(self) -> bytes:
        at = codec.format_time(self.now(), self.timezone)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\r\n'
            '<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">\r\n'
            f"<ipAddress>{self.host}</ipAddress><portNo>{self.port}</portNo><protocol>HTTP</protocol>"
            f"<channelID>1</channelID><dateTime>{at}</dateTime><activePostCount>0</activePostCount>"
            "<eventType>videoloss</eventType><eventState>inactive</eventState>"
            "<eventDescription>videoloss alarm</eventDescription></EventNotificationAlert>\r\n"
        ).encode()

    # -- HTTP ------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while not self.down:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if self.slow_s:
                    await asyncio.sleep(self.slow_s)
                if self.down:
                    return
                path = urlsplit(target).path
                if not self._authorised(method, target, headers):
                    self.auth_failures += 1
                    nonce = os.urandom(16).hex()
                    self._nonces.add(nonce)
                    challenge = (
                        f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", '
                        f'opaque="{os.urandom(8).hex()}", algorithm=MD5'
                    )
                    await self._respond(writer, 401, b"", "text/plain", {"WWW-Authenticate": challenge})
                    continue
                self.requests.append((method, path))
                if method == "GET" and path == "/ISAPI/Event/notification/alertStream":
                    await self._alert_stream(writer)
                    return
                status, payload, content_type = self._route(method, path, body)
                await self._respond(writer, status, payload, content_type)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    def _authorised(self, method: str, target: str, headers: Mapping[str, str]) -> bool:
        value = headers.get("authorization", "")
        if not value.lower().startswith("digest "):
            return False
        params = dict(
            (k.strip(), v.strip().strip('"'))
            for k, _, v in (item.partition("=") for item in _split_params(value[7:]))
        )
        if params.get("username") != self.username or params.get("nonce") not in self._nonces:
            return False
        if params.get("uri") != target or params.get("qop") != "auth":
            return False
        ha1 = _md5(f"{self.username}:{REALM}:{self.password}")
        ha2 = _md5(f"{method}:{params['uri']}")
        expected = _md5(
            f"{ha1}:{params['nonce']}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}"
        )
        return params.get("response") == expected

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        content_type: str,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error")
        head = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(payload)}",
        ]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await writer.drain()

    async def _alert_stream(self, writer: asyncio.StreamWriter) -> None:
        stream = _Stream(writer)
        self._streams.append(stream)
        self.streams_opened += 1
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: multipart/mixed; boundary="
                + BOUNDARY
                + b"\r\nConnection: close\r\n\r\n"
            )
            stream.queue.put_nowait(codec.encode_part("application/xml", self._heartbeat_xml(), BOUNDARY))
            while True:
                try:
                    data = await asyncio.wait_for(stream.queue.get(), self.heartbeat_s)
                except TimeoutError:
                    data = codec.encode_part("application/xml", self._heartbeat_xml(), BOUNDARY)
                if data is None:
                    return
                writer.write(data)
                await writer.drain()
        finally:
            self._streams.remove(stream)

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            return _status(400, "badJsonFormat")
        routes = {
            ("GET", "/ISAPI/System/time"): self._time,
            ("GET", "/ISAPI/System/deviceInfo"): self._device_info,
            ("POST", "/ISAPI/AccessControl/AcsEvent"): self._acs_event,
            ("POST", "/ISAPI/AccessControl/UserInfo/Search"): self._user_search,
            ("POST", "/ISAPI/AccessControl/UserInfo/Record"): self._user_record,
            ("PUT", "/ISAPI/AccessControl/UserInfo/Modify"): self._user_modify,
            ("PUT", "/ISAPI/AccessControl/UserInfo/Delete"): self._user_delete,
            ("POST", "/ISAPI/AccessControl/CardInfo/Search"): self._card_search,
            ("POST", "/ISAPI/AccessControl/CardInfo/Record"): self._card_record,
            ("PUT", "/ISAPI/AccessControl/CardInfo/Delete"): self._card_delete,
        }
        handler = routes.get((method, path))
        if handler is None:
            return _status(404, "notSupport")
        try:
            return handler(doc)
        except (KeyError, TypeError, ValueError, AttributeError):
            return _status(400, "badParameters")

    def _time(self, _doc: Any) -> tuple[int, bytes, str]:
        at = codec.format_time(self.now(), self.timezone)
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Time version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">'
            f"<timeMode>manual</timeMode><localTime>{at}</localTime><timeZone>CST+0:00:00</timeZone></Time>"
        )
        return 200, xml.encode(), "application/xml"

    def _device_info(self, _doc: Any) -> tuple[int, bytes, str]:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<DeviceInfo version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">'
            "<deviceName>Simulated terminal</deviceName><deviceID>sim</deviceID><model>DS-K1T671M</model>"
            "<serialNumber>DS-K1T671M0020260901SIM</serialNumber><firmwareVersion>V3.2.30</firmwareVersion>"
            "<firmwareReleasedDate>build 260901</firmwareReleasedDate>"
            "<deviceType>ACS</deviceType></DeviceInfo>"
        )
        return 200, xml.encode(), "application/xml"

    def _acs_event(self, doc: Any) -> tuple[int, bytes, str]:
        cond = doc["AcsEventCond"]
        start = codec.parse_time(cond["startTime"], self.timezone)
        end = codec.parse_time(cond["endTime"], self.timezone)
        major, minor = int(cond.get("major", 0)), int(cond.get("minor", 0))
        found = [
            e
            for e in sorted(self.history, key=lambda e: e["serialNo"])
            if start <= codec.parse_time(e["time"], self.timezone) <= end
            and (major == 0 or e["major"] == major)
            and (minor == 0 or e["minor"] == minor)
        ]
        position, size = int(cond["searchResultPosition"]), min(int(cond["maxResults"]), 30)
        page = found[position : position + size]
        status = "NO MATCH" if not found else ("MORE" if position + size < len(found) else "OK")
        out = {
            "AcsEvent": {
                "searchID": cond["searchID"],
                "totalMatches": len(found),
                "responseStatusStrg": status,
                "numOfMatches": len(page),
                "InfoList": page,
            }
        }
        return 200, json.dumps(out).encode(), "application/json"

    def _user_search(self, doc: Any) -> tuple[int, bytes, str]:
        cond = doc["UserInfoSearchCond"]
        users = sorted(self.users.values(), key=lambda u: u.employee_no)
        position, size = int(cond["searchResultPosition"]), min(int(cond["maxResults"]), 30)
        page = users[position : position + size]
        status = "NO MATCH" if not users else ("MORE" if position + size < len(users) else "OK")
        items = [
            {
                "employeeNo": u.employee_no,
                "name": u.name,
                "userType": u.user_type,
                "Valid": {"enable": True, "beginTime": u.begin, "endTime": u.end, "timeType": "local"},
                "numOfCard": sum(1 for e in self.cards.values() if e == u.employee_no),
            }
            for u in page
        ]
        out = {
            "UserInfoSearch": {
                "searchID": cond["searchID"],
                "responseStatusStrg": status,
                "numOfMatches": len(page),
                "totalMatches": len(users),
                "UserInfo": items,
            }
        }
        return 200, json.dumps(out).encode(), "application/json"

    def _user_from(self, info: Mapping[str, Any]) -> SimUser:
        valid = info.get("Valid") or {}
        user = SimUser(
            employee_no=str(info["employeeNo"]),
            name=str(info.get("name", "")),
            user_type=str(info.get("userType", "normal")),
            begin=str(valid.get("beginTime", "2000-01-01T00:00:00")),
            end=str(valid.get("endTime", "2037-12-31T23:59:59")),
        )
        datetime.fromisoformat(user.begin), datetime.fromisoformat(user.end)
        if not user.employee_no or len(user.employee_no) > 32 or user.user_type not in ("normal", "visitor"):
            raise ValueError("bad user")
        return user

    def _user_record(self, doc: Any) -> tuple[int, bytes, str]:
        user = self._user_from(doc["UserInfo"])
        if user.employee_no in self.users:
            return _status(400, "employeeNoAlreadyExist")
        self.users[user.employee_no] = user
        return _status(200, "ok")

    def _user_modify(self, doc: Any) -> tuple[int, bytes, str]:
        user = self._user_from(doc["UserInfo"])
        if user.employee_no not in self.users:
            return _status(400, "employeeNoNotExist")
        self.users[user.employee_no] = user
        return _status(200, "ok")

    def _user_delete(self, doc: Any) -> tuple[int, bytes, str]:
        for item in doc["UserInfoDelCond"]["EmployeeNoList"]:
            number = str(item["employeeNo"])
            self.users.pop(number, None)
            for card in [c for c, e in self.cards.items() if e == number]:
                del self.cards[card]
        return _status(200, "ok")

    def _card_search(self, doc: Any) -> tuple[int, bytes, str]:
        cond = doc["CardInfoSearchCond"]
        wanted = {str(i["employeeNo"]) for i in cond.get("EmployeeNoList") or []}
        cards = sorted((c, e) for c, e in self.cards.items() if not wanted or e in wanted)
        position, size = int(cond["searchResultPosition"]), min(int(cond["maxResults"]), 30)
        page = cards[position : position + size]
        status = "NO MATCH" if not cards else ("MORE" if position + size < len(cards) else "OK")
        out = {
            "CardInfoSearch": {
                "searchID": cond["searchID"],
                "responseStatusStrg": status,
                "numOfMatches": len(page),
                "totalMatches": len(cards),
                "CardInfo": [{"employeeNo": e, "cardNo": c, "cardType": "normalCard"} for c, e in page],
            }
        }
        return 200, json.dumps(out).encode(), "application/json"

    def _card_record(self, doc: Any) -> tuple[int, bytes, str]:
        info = doc["CardInfo"]
        number, employee = str(info["cardNo"]), str(info["employeeNo"])
        if employee not in self.users:
            return _status(400, "employeeNoNotExist")
        if number in self.cards:
            return _status(400, "cardNoAlreadyExist")
        self.cards[number] = employee
        return _status(200, "ok")

    def _card_delete(self, doc: Any) -> tuple[int, bytes, str]:
        for item in doc["CardInfoDelCond"]["CardNoList"]:
            self.cards.pop(str(item["cardNo"]), None)
        return _status(200, "ok")


def _status(http: int, sub: str) -> tuple[int, bytes, str]:
    ok = http == 200
    out = {
        "statusCode": 1 if ok else 6,
        "statusString": "OK" if ok else "Invalid Content",
        "subStatusCode": sub,
    }
    if not ok:
        out["errorMsg"] = sub
    return http, json.dumps(out).encode(), "application/json"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # RFC 7616 MD5: what terminals speak


def _split_params(text: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if current:
        out.append("".join(current).strip())
    return out


__all__ = ["BOUNDARY", "IsapiSimulator", "SimUser"]
