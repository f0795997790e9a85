"""ZKTeco terminals: :class:`ZkPullDriver` polls a terminal over its TCP protocol (port 4370) on
asyncio with :mod:`device_drivers.zkteco.codec`; :class:`ZkPushServer` serves the terminal's HTTP
push protocol (``/iclock``) the terminals call.

Pull: connect (+ comm key), read the clock (skew; set it with ``sync_clock``), the users and the
attendance log; yield one :class:`TerminalAttendance` per record after the high-water mark, then
check the record count every ``poll_interval_s`` (or at once on a real-time event) and read what
is new. The mark is the number of records delivered from the log's start plus the ``record_id`` of
the last one; it moves (and is written atomically to ``state_dir``) only in :meth:`acknowledge`, so
a record is never skipped, and a restarted driver starts after the last acknowledged one. When the
record at the mark is not where the mark says, the log was rotated (the record is found further
up) or cleared (not found: everything in the log is new).

Why not pyzk in a thread: pyzk's socket calls block up to their timeout and cannot be cancelled,
its live capture owns the socket, garbage raises whatever ``struct`` raises (or it prints and
returns ``[]``), and a download is slower (bench/bench_zkteco_download.py measures both on the same
simulator). The codec follows pyzk's framing and its table layouts exactly; the simulator is
checked against pyzk's own client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from device_drivers._io.backoff import Backoff
from device_drivers._io.probe import ProbeResult
from device_drivers._io.source import AttachedSimulator
from device_drivers._io.state import write_atomically
from device_drivers._io.stream import DropSummary
from device_drivers.errors import DeviceError
from device_drivers.readings import DeviceOffline, DeviceOnline, Reading, TerminalAttendance, utc_now
from device_drivers.secrets import load_password
from device_drivers.zkteco import codec
from device_drivers.zkteco.codec import Packet, Record, ZkProtocolError
from device_drivers.zkteco.config import PushTerminal, ZktecoConfig, ZktecoPushConfig

logger = logging.getLogger(__name__)

DEFAULT_PORT = 4370
MARK_FILE = "zkteco_mark.json"


class ZkAuthError(DeviceError):
    """The terminal answered CMD_ACK_UNAUTH: wrong (or missing) comm key."""


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise DeviceError(f"unknown timezone {name!r}", code="bad_timezone") from None


class ZkClient:
    """One connection to a terminal: commands one at a time, replies matched, real-time event
    packets (CMD_REG_EVENT) set aside and acknowledged as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout_s = timeout_s
        self.session_id = 0
        self.reply_id = codec.USHRT_MAX - 1
        self.packets = codec.PacketReader()
        self.queue: deque[Packet] = deque()
        self.events: deque[Record] = deque()
        self.bad_checksums = 0
        self.bad_events = 0
        self.woken = False

    @classmethod
    async def open(cls, host: str, port: int, timeout_s: float, comm_key: int) -> ZkClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        client = cls(reader, writer, timeout_s)
        try:
            reply = await client.command(codec.CMD_CONNECT)
            client.session_id = reply.session_id
            if reply.command == codec.CMD_ACK_UNAUTH:
                reply = await client.command(codec.CMD_AUTH, codec.make_commkey(comm_key, client.session_id))
            if reply.command == codec.CMD_ACK_UNAUTH:
                raise ZkAuthError("the terminal refused the comm key (CMD_ACK_UNAUTH)", code="auth_failed")
            if reply.command != codec.CMD_ACK_OK:
                raise ZkProtocolError(f"connect answered {reply.command}", "refused")
        except BaseException:
            client.abort()
            raise
        return client

    def abort(self) -> None:
        self.writer.close()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.command(codec.CMD_EXIT), 1.0)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    def _send(self, command: int, payload: bytes = b"") -> None:
        self.reply_id = (self.reply_id + 1) % codec.USHRT_MAX
        self.writer.write(codec.encode(command, self.session_id, self.reply_id, payload))

    def _event(self, p: Packet) -> bool:
        """Set a real-time event packet aside (and acknowledge it, as pyzk does); False: not one."""
        if not p.checksum_ok:
            self.bad_checksums += 1
            raise ZkProtocolError(f"bad checksum on command {p.command}", "bad_checksum")
        if p.command != codec.CMD_REG_EVENT:
            return False
        self.writer.write(codec.encode(codec.CMD_ACK_OK, self.session_id, codec.USHRT_MAX - 1))
        self.woken = True  # the record is in the log: a read will find it even if this does not decode
        if p.payload:
            try:
                self.events.extend(codec.decode_event(p.payload))
            except ZkProtocolError:
                self.bad_events += 1
        return True

    async def _read(self, timeout_s: float) -> None:
        data = await asyncio.wait_for(self.reader.read(1 << 17), timeout_s)
        if not data:
            raise ConnectionError("the terminal closed the connection")
        self.queue.extend(self.packets.feed(data))

    async def _packet(self) -> Packet:
        """The next non-event packet (events go to :attr:`events`)."""
        while True:
            while self.queue:
                p = self.queue.popleft()
                if not self._event(p):
                    return p
            await self._read(self.timeout_s)

    async def command(self, command: int, payload: bytes = b"") -> Packet:
        self._send(command, payload)
        return await self._packet()

    async def ok(self, command: int, payload: bytes = b"") -> Packet:
        reply = await self.command(command, payload)
        if reply.command == codec.CMD_ACK_UNAUTH:
            raise ZkAuthError(f"command {command}: CMD_ACK_UNAUTH", code="auth_failed")
        if reply.command not in (codec.CMD_ACK_OK, codec.CMD_DATA, codec.CMD_PREPARE_DATA):
            raise ZkProtocolError(f"command {command} answered {reply.command}", "refused")
        return reply

    async def wait_events(self, timeout_s: float) -> list[Record] | None:
        """Real-time records arriving within ``timeout_s``: None when none came, else the decoded
        records (possibly empty: an event that did not decode still means "read the log")."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.woken:
            while self.queue and not self.woken:
                p = self.queue.popleft()
                if not self._event(p):
                    raise ZkProtocolError(f"unexpected packet {p.command} while idle", "unexpected")
            remaining = deadline - loop.time()
            if self.woken or remaining <= 0:
                break
            try:
                await self._read(remaining)
            except TimeoutError:
                break
        if not self.woken:
            return None
        out = list(self.events)
        self.events.clear()
        self.woken = False
        return out

    async def sizes(self) -> tuple[int, int]:
        return codec.parse_free_sizes((await self.ok(codec.CMD_GET_FREE_SIZES)).payload)

    async def get_time(self) -> datetime:
        payload = (await self.ok(codec.CMD_GET_TIME)).payload
        if len(payload) < 4:
            raise ZkProtocolError("time answer too short", "truncated")
        return codec.decode_time(struct.unpack_from("<I", payload)[0])

    async def set_time(self, local: datetime) -> None:
        await self.ok(codec.CMD_SET_TIME, struct.pack("<I", codec.encode_time(local)))

    async def register_events(self, flags: int) -> bool:
        reply = await self.command(codec.CMD_REG_EVENT, struct.pack("<I", flags))
        return reply.command == codec.CMD_ACK_OK

    async def read_buffer(self, table: int, fct: int = 0) -> bytes:
        """A table through the prepared buffer (pyzk ``read_with_buffer``)."""
        reply = await self.ok(codec.CMD_PREPARE_BUFFER, struct.pack("<bhii", 1, table, fct, 0))
        if reply.command == codec.CMD_DATA:
            return reply.payload
        if len(reply.payload) < 5:
            raise ZkProtocolError("buffer answer too short", "truncated")
        size = struct.unpack_from("<I", reply.payload, 1)[0]
        parts: list[bytes] = []
        for start in range(0, size, codec.MAX_CHUNK):
            parts.append(await self._read_chunk(start, min(codec.MAX_CHUNK, size - start)))
        await self.ok(codec.CMD_FREE_DATA)
        return b"".join(parts)

    async def _read_chunk(self, start: int, size: int) -> bytes:
        self._send(codec.CMD_READ_BUFFER, struct.pack("<ii", start, size))
        reply = await self._packet()
        if reply.command == codec.CMD_DATA:
            return reply.payload
        if reply.command != codec.CMD_PREPARE_DATA:
            raise ZkProtocolError(f"buffer chunk answered {reply.command}", "unexpected")
        got: list[bytes] = []
        n = 0
        while True:
            p = await self._packet()
            if p.command == codec.CMD_DATA:
                got.append(p.payload)
                n += len(p.payload)
            elif p.command == codec.CMD_ACK_OK:
                break
            else:
                raise ZkProtocolError(f"packet {p.command} inside a buffer chunk", "unexpected")
        if n != size:
            raise ZkProtocolError(f"buffer chunk of {n} bytes, asked {size}", "truncated")
        return b"".join(got)

    async def users(self) -> dict[int, str]:
        n_users, _ = await self.sizes()
        if n_users == 0:
            return {}
        data = await self.read_buffer(codec.CMD_USERTEMP_RRQ, codec.FCT_USER)
        return {u.uid: u.user_id for u in codec.decode_users(data, n_users)}

    async def attendance(self, count: int, users: dict[int, str]) -> list[Record]:
        if count == 0:
            return []
        data = await self.read_buffer(codec.CMD_ATTLOG_RRQ)
        return codec.decode_records(data, count, users)


@dataclass
class _Mark:
    count: int = 0
    record_id: str | None = None


def start_index(ids: list[str], mark: _Mark) -> tuple[int, str]:
    """Where the records after ``mark`` start in a log with these ids, and what happened to the
    log: ``same`` (the mark is where it says), ``rotated`` (found further up: old records were
    dropped), ``cleared`` (not found: every record is new)."""
    if mark.count == 0 or mark.record_id is None:
        return 0, "same"
    if mark.count <= len(ids) and ids[mark.count - 1] == mark.record_id:
        return mark.count, "same"
    for j in range(min(mark.count, len(ids)) - 1, -1, -1):
        if ids[j] == mark.record_id:
            return j + 1, "rotated"
    return 0, "cleared"


class ZkPullDriver:
    """A ZKTeco terminal over TCP (see the module docstring). ``counters``: ``connects``,
    ``records``, ``realtime_events``, ``auth_failed``, ``timeout``, ``connection_failed``, ``protocol_<code>``
    (``garbled``, ``bad_checksum``, ``bad_length``, ``truncated``, ``bad_record``...), ``log_rotated``,
    ``log_cleared``, ``clock_skew_exceeded``, ``clock_set``, ``mark_writes``; the last measured skew
    (signed seconds, terminal minus gateway) is :attr:`clock_skew_s`."""

    def __init__(
        self,
        config: ZktecoConfig,
        *,
        simulator: AttachedSimulator | Any = None,
        state_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.simulator = simulator
        self.state_dir = state_dir
        self.counters: dict[str, int] = {}
        self.device_id = config.id
        self.tz = _zone(config.timezone)
        self.drops = DropSummary(config.id, config.noise_log_interval_s)
        self.clock_skew_s: float | None = None
        self.online = False
        self.last_error: str | None = None
        self._offline_reported = False
        self._host = config.host or "127.0.0.1"
        self._port = config.port or DEFAULT_PORT
        self._comm_key = 0
        self._mark = self._load_mark()
        self._cursor = _Mark(self._mark.count, self._mark.record_id)
        self._pending: dict[str, int] = {}
        self._last_write = 0.0
        self._dirty = False
        self._last_count: int | None = None
        self._client: ZkClient | None = None

    @classmethod
    def from_config(
        cls, config: ZktecoConfig, *, simulator: Any = None, state_dir: Path | None = None
    ) -> Self:
        return cls(config, simulator=simulator, state_dir=state_dir)

    # --- the high-water mark -------------------------------------------------------------------

    @property
    def mark(self) -> tuple[int, str | None]:
        """(records acknowledged from the log's start, record id of the last one)."""
        return self._mark.count, self._mark.record_id

    def _mark_path(self) -> Path | None:
        return None if self.state_dir is None else Path(self.state_dir) / MARK_FILE

    def _load_mark(self) -> _Mark:
        path = self._mark_path()
        if path is None or not path.exists():
            return _Mark()
        try:
            data = json.loads(path.read_text())
            return _Mark(int(data["count"]), data.get("record_id"))
        except (ValueError, KeyError, TypeError) as err:
            logger.error(
                "device %s: unreadable mark %s (%s): reading the whole log", self.device_id, path, err
            )
            return _Mark()

    def _write_mark(self) -> None:
        path = self._mark_path()
        self._dirty = False
        self._last_write = time.monotonic()
        if path is None:
            return
        body = {"count": self._mark.count, "record_id": self._mark.record_id, "at": utc_now().isoformat()}
        write_atomically(path, json.dumps(body).encode())
        self._count("mark_writes")

    def acknowledge(self, reading: Reading) -> None:
        """The event of ``reading`` is committed: move the mark past it (in reading order)."""
        if not isinstance(reading, TerminalAttendance) or reading.device_id != self.device_id:
            return
        index = self._pending.pop(reading.record_id, None)
        if index is None:
            return
        self._mark = _Mark(index + 1, reading.record_id)
        self._dirty = True
        if not self._pending or time.monotonic() - self._last_write >= 1.0:
            self._write_mark()

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._comm_key = comm_key(self.config)
        if self.simulator is not None:
            await self.simulator.__aenter__()
            where = urlsplit(self.simulator.url)  # tcp://127.0.0.1:<free port>
            self._host, self._port = where.hostname or "127.0.0.1", where.port or DEFAULT_PORT
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._dirty:
            self._write_mark()
        if self._client is not None:
            self._client.abort()
            self._client = None
        self.drops.close()
        if self.simulator is not None:
            await self.simulator.__aexit__(exc_type, exc, tb)

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def _offline(self, reason: str) -> DeviceOffline | None:
        self.last_error = reason
        if self.online or not self._offline_reported:
            self.online = False
            self._offline_reported = True
            logger.warning("device %s offline: %s", self.device_id, reason)
            return DeviceOffline(self.device_id, reason, utc_now())
        return None

    def _failure(self, err: BaseException) -> str:
        """Count ``err``, log it rate-limited, and say why the terminal is offline."""
        if isinstance(err, ZkAuthError):
            self._count("auth_failed")
            where = (
                f"check the comm key in credential {self.config.password_credential}"
                if self.config.password_credential
                else "the terminal has a comm key: set password_credential"
            )
            reason = f"authentication failed: {err} ({where})"
        elif isinstance(err, ZkProtocolError):
            self._count(f"protocol_{err.code}")
            self.drops.dropped(err.code, 0, str(err))
            reason = f"garbled answer ({err.code}): {err}"
        elif isinstance(err, struct.error | ValueError):
            self._count("protocol_garbled")
            self.drops.dropped("garbled", 0, str(err))
            reason = f"garbled answer (garbled): {err}"
        elif isinstance(err, TimeoutError):
            self._count("timeout")
            reason = f"no answer within {self.config.timeout_s} s"
        else:
            self._count("connection_failed")
            reason = f"connection to {self._host}:{self._port} failed: {err}"
        return reason

    # --- readings ------------------------------------------------------------------------------

    async def readings(self) -> AsyncIterator[Reading]:
        """Online/offline and the terminal's records, reconnecting with the shared backoff."""
        backoff = Backoff(self.config.backoff)
        while True:
            try:
                self._client = await ZkClient.open(
                    self._host, self._port, self.config.timeout_s, self._comm_key
                )
            except (OSError, TimeoutError, ZkProtocolError, ZkAuthError, struct.error) as err:
                off = self._offline(self._failure(err))
                if off is not None:
                    yield off
                await asyncio.sleep(backoff.next_delay())
                continue
            self._count("connects")
            self.online = True
            self.last_error = None
            yield DeviceOnline(self.device_id, f"connected to {self._host}:{self._port}", utc_now())
            try:
                async for reading in self._session(self._client):
                    backoff.reset()
                    yield reading
            except (OSError, TimeoutError, ZkProtocolError, ZkAuthError, struct.error) as err:
                off = self._offline(self._failure(err))
                if off is not None:
                    yield off
            finally:
                client, self._client = self._client, None
                if client is not None:
                    await client.close()
            await asyncio.sleep(backoff.next_delay())

    async def _check_clock(self, client: ZkClient) -> None:
        local = await client.get_time()
        now = utc_now()
        skew = (local.replace(tzinfo=self.tz).astimezone(UTC) - now).total_seconds()
        self.clock_skew_s = skew
        if abs(skew) > self.config.max_clock_skew_s:
            self._count("clock_skew_exceeded")
            logger.warning("device %s: clock is %+.0f s off the gateway's", self.device_id, skew)
            if self.config.sync_clock:
                await client.set_time(utc_now().astimezone(self.tz).replace(tzinfo=None, microsecond=0))
                self._count("clock_set")
                logger.info("device %s: clock set to the gateway's", self.device_id)

    async def _session(self, client: ZkClient) -> AsyncIterator[Reading]:
        await self._check_clock(client)
        users = await client.users()
        realtime = False
        if self.config.realtime:
            realtime = await client.register_events(codec.EF_ATTLOG)
            if not realtime:
                self._count("realtime_unsupported")
        self._last_count = None
        while True:
            _, count = await client.sizes()
            if count != self._last_count:
                records = await client.attendance(count, users)
                for reading in self._new(records):
                    yield reading
                self._last_count = count
                self.drops.good()
            if realtime:
                events = await client.wait_events(self.config.poll_interval_s)
                if events is not None:
                    self._count("realtime_events", max(1, len(events)))
                    if client.bad_events:
                        self._count("protocol_bad_event", client.bad_events)
                        self.drops.dropped("bad_event", 0, "a real-time event that did not decode")
                        client.bad_events = 0
                    self._last_count = None  # read the log now: the event's record is in it
            else:
                await asyncio.sleep(self.config.poll_interval_s)

    def _new(self, records: list[Record]) -> list[TerminalAttendance]:
        ids = codec.record_ids(records)
        start, what = start_index(ids, self._cursor)
        if what != "same":
            self._count(f"log_{what}")
            logger.warning(
                "device %s: the record at the mark (%s) is %s; reading from record %d of %d",
                self.device_id,
                self._cursor.record_id,
                "further up: the log was rotated" if what == "rotated" else "gone: the log was cleared",
                start,
                len(records),
            )
        now = utc_now()
        out: list[TerminalAttendance] = []
        tz = self.tz
        for i in range(start, len(records)):
            r = records[i]
            rid = ids[i]
            out.append(
                TerminalAttendance(
                    device_id=self.device_id,
                    user_id=r.user_id,
                    method=codec.VERIFY_METHODS.get(r.status, "other"),
                    terminal_time=r.timestamp.replace(tzinfo=tz).astimezone(UTC),
                    at=now,
                    record_id=rid,
                    punch=codec.PUNCHES.get(r.punch),
                    raw={
                        "user_id": r.user_id,
                        "uid": r.uid,
                        "timestamp": r.timestamp.isoformat(),
                        "verify": r.status,
                        "punch": r.punch,
                        "index": i,
                    },
                )
            )
            self._pending[rid] = i
        if out:
            self._cursor = _Mark(len(records), ids[-1])
            self._count("records", len(out))
        elif what != "same":
            self._cursor = _Mark(len(records), ids[-1] if ids else None)
        return out


def comm_key(config: ZktecoConfig) -> int:
    """The terminal's comm key from its credential (0 without one); :class:`DeviceError`
    ``bad_comm_key`` when the credential holds no comm key, ``no_password`` when it is missing."""
    if not config.password_credential:
        return 0
    try:
        return codec.parse_comm_key(load_password(config.password_credential))
    except ValueError as err:
        raise DeviceError(
            f"{config.id}: the credential {config.password_credential} is no comm key: {err}",
            device_id=config.id,
            code="bad_comm_key",
        ) from None


async def probe_zkteco(config: ZktecoConfig) -> list[ProbeResult]:
    """Doctor: reachable, authenticated (comm key), clock skew."""
    host, port = config.host or "127.0.0.1", config.port or DEFAULT_PORT
    try:
        key = comm_key(config)
    except DeviceError as err:
        return [ProbeResult("authenticated", "fail", f"comm key: {err}")]
    try:
        client = await ZkClient.open(host, port, config.timeout_s, key)
    except ZkAuthError as err:
        return [
            ProbeResult("reachable", "ok", f"{host}:{port} answers"),
            ProbeResult("authenticated", "fail", str(err)),
        ]
    except (OSError, TimeoutError, ZkProtocolError) as err:
        return [ProbeResult("reachable", "fail", f"{host}:{port}: {type(err).__name__}: {err}")]
    results = [
        ProbeResult("reachable", "ok", f"{host}:{port} answers"),
        ProbeResult("authenticated", "ok", "comm key accepted" if key else "no comm key needed"),
    ]
    try:
        local = await client.get_time()
        tz = _zone(config.timezone)
        skew = (local.replace(tzinfo=tz).astimezone(UTC) - utc_now()).total_seconds()
        status: Literal["ok", "warn"] = "ok" if abs(skew) <= config.max_clock_skew_s else "warn"
        results.append(ProbeResult("clock", status, f"terminal clock {skew:+.0f} s off the gateway's"))
        users, records = await client.sizes()
        results.append(ProbeResult("log", "ok", f"{users} users, {records} attendance records"))
    except (OSError, TimeoutError, ZkProtocolError, DeviceError) as err:
        results.append(ProbeResult("clock", "fail", f"{type(err).__name__}: {err}"))
    finally:
        await client.close()
    return results


# --- push ------------------------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class ZkPushServer:
    """The ``/iclock`` server ZKTeco terminals push to (see the module docstring and
    docs/ZKTECO.md). An ATTLOG upload is answered ``OK: <n>`` only when :meth:`acknowledge` was
    called for each of its records (the agent committed their events); otherwise, after
    ``ack_timeout_s``, it is answered 503 and the terminal sends it again (same record ids, same
    event ids). ``counters``: ``requests``, ``handshakes``, ``attlog_uploads``, ``records``,
    ``operlog_lines``, ``unknown_serial``, ``bad_request``, ``bad_record``, ``body_too_large``,
    ``ack_timeout``, ``commands_sent``, ``command_results``."""

    MAX_HEADER_BYTES = 16384

    def __init__(
        self, config: ZktecoPushConfig, *, simulator: Any = None, state_dir: Path | None = None
    ) -> None:
        self.config = config
        self.simulator = simulator
        self.state_dir = state_dir
        self.counters: dict[str, int] = {}
        self.device_id = config.id
        self.terminals: dict[str, PushTerminal] = {t.serial: t for t in config.terminals}
        self._zones = {t.serial: _zone(t.timezone or config.timezone) for t in config.terminals}
        self.drops = DropSummary(config.id, config.noise_log_interval_s)
        self.commands: dict[str, list[str]] = {}
        self.seen: dict[str, datetime] = {}
        self.port = config.listen_port
        self._queue: asyncio.Queue[Reading] = asyncio.Queue(1000)
        self._pending: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._server: asyncio.Server | None = None
        self._command_id = 0
        self._online: set[str] = set()
        self._watchdog: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls, config: ZktecoPushConfig, *, simulator: Any = None, state_dir: Path | None = None
    ) -> Self:
        return cls(config, simulator=simulator, state_dir=state_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def queue_command(self, serial: str, command: str) -> None:
        """Queue a command for a terminal's next ``getrequest`` (e.g. ``SET OPTION DateTime=...``)."""
        self._command_id += 1
        self.commands.setdefault(serial, []).append(f"C:{self._command_id}:{command}")

    async def __aenter__(self) -> Self:
        host = "127.0.0.1" if self.simulator is not None else self.config.listen_host
        port = 0 if self.simulator is not None else self.config.listen_port
        self._server = await asyncio.start_server(self._serve, host, port, limit=self.MAX_HEADER_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("device %s: ZKTeco push server on %s:%d", self.device_id, host, self.port)
        self._watchdog = asyncio.create_task(self._watch(), name=f"zk-push-watchdog:{self.device_id}")
        if self.simulator is not None:
            self.simulator.base_url = self.url
            await self.simulator.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.simulator is not None:
            await self.simulator.__aexit__(exc_type, exc, tb)
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self.drops.close()

    async def readings(self) -> AsyncIterator[Reading]:
        while True:
            yield await self._queue.get()

    async def _watch(self) -> None:
        """Report a terminal offline once it has not called for ``offline_after_s``."""
        limit = self.config.offline_after_s
        while True:
            await asyncio.sleep(min(5.0, limit / 4))
            now = utc_now()
            for serial in list(self._online):
                if (now - self.seen[serial]).total_seconds() > limit:
                    self._online.discard(serial)
                    reason = f"terminal {serial} has not called for {limit:.0f} s"
                    logger.warning("device %s offline: %s", self.terminals[serial].id, reason)
                    self._queue.put_nowait(DeviceOffline(self.terminals[serial].id, reason, now))

    def acknowledge(self, reading: Reading) -> None:
        if not isinstance(reading, TerminalAttendance):
            return
        fut = self._pending.pop((reading.device_id, reading.record_id), None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    # --- HTTP -----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.config.timeout_s)
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    self._bad("bad_request", "request header over 16 KiB")
                    await self._respond(writer, 431, "header too large", close=True)
                    return
                except (ValueError, TimeoutError):
                    return
                try:
                    keep = await self._request(head, reader, writer)
                except HttpError as err:
                    await self._respond(writer, err.status, str(err), close=True)
                    return
                if not keep:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    def _bad(self, code: str, detail: str) -> None:
        self._count(code)
        self.drops.dropped(code, 0, detail)

    async def _respond(
        self, writer: asyncio.StreamWriter, status: int, text: str, *, close: bool = False
    ) -> None:
        body = text.encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nDate: {utc_now():%a, %d %b %Y %H:%M:%S GMT}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()

    async def _request(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        self._count("requests")
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            self._bad("bad_request", f"bad request line {head[:60]!r}")
            raise HttpError(400, "bad request line") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, sep, value = line.partition(":")
                if not sep:
                    self._bad("bad_request", f"bad header {line[:60]!r}")
                    raise HttpError(400, "bad header")
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._bad("bad_request", "chunked upload")
            raise HttpError(400, "chunked bodies are not accepted")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._bad("bad_request", "bad Content-Length")
            raise HttpError(400, "bad Content-Length") from None
        if length < 0:
            raise HttpError(400, "bad Content-Length")
        if length > self.config.max_body_bytes:
            self._bad("body_too_large", f"body of {length} bytes")
            raise HttpError(413, f"body over {self.config.max_body_bytes} bytes")
        try:
            body = (
                await asyncio.wait_for(reader.readexactly(length), self.config.timeout_s) if length else b""
            )
        except (asyncio.IncompleteReadError, TimeoutError):
            self._bad("bad_request", "body cut short or too slow")
            return False
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        status, text = await self._route(method, url.path, query, body)
        close = headers.get("connection", "").lower() == "close"
        await self._respond(writer, status, text, close=close)
        return not close

    async def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, str]:
        if path not in ("/iclock/cdata", "/iclock/getrequest", "/iclock/devicecmd", "/iclock/ping"):
            self._count("not_found")
            return 404, "not found"
        serial = query.get("SN", "")
        terminal = self.terminals.get(serial)
        if terminal is None:
            self._bad("unknown_serial", f"terminal SN={serial[:40]!r} is not in the allow-list")
            return 403, "unknown terminal"
        self.seen[serial] = utc_now()
        if serial not in self._online:
            self._online.add(serial)
            self._queue.put_nowait(DeviceOnline(terminal.id, f"terminal {serial} called in", utc_now()))
        if path == "/iclock/cdata" and method == "GET":
            self._count("handshakes")
            return 200, self._options(terminal)
        if path == "/iclock/cdata" and method == "POST":
            table = query.get("table", "")
            if table == "ATTLOG":
                return await self._attlog(terminal, body)
            if table == "OPERLOG":
                lines = [ln for ln in body.decode("utf-8", "replace").splitlines() if ln.strip()]
                self._count("operlog_lines", len(lines))
                return 200, f"OK: {len(lines)}"
            self._count("other_tables")
            return 200, "OK"
        if path == "/iclock/ping":
            return 200, "OK"
        if path == "/iclock/getrequest":
            queued = self.commands.pop(serial, [])
            if queued:
                self._count("commands_sent", len(queued))
                return 200, "\n".join(queued) + "\n"
            return 200, "OK"
        if path == "/iclock/devicecmd" and method == "POST":
            self._count("command_results", max(1, body.count(b"ID=")))
            return 200, "OK"
        return 405, "method not allowed"

    def _options(self, terminal: PushTerminal) -> str:
        tz = self._zones[terminal.serial]
        offset = utc_now().astimezone(tz).utcoffset() or timedelta(0)
        hours = int(offset.total_seconds() // 3600)
        return "\n".join(
            [
                f"GET OPTION FROM: {terminal.serial}",
                "ATTLOGStamp=None",
                "OPERLOGStamp=9999",
                "ATTPHOTOStamp=None",
                "ErrorDelay=30",
                "Delay=10",
                "TransTimes=00:00;14:05",
                f"TransInterval={self.config.trans_interval_min}",
                "TransFlag=TransData AttLog\tOpLog",
                f"TimeZone={hours}",
                f"Realtime={1 if self.config.realtime else 0}",
                "Encrypt=None",
                "",
            ]
        )

    async def _attlog(self, terminal: PushTerminal, body: bytes) -> tuple[int, str]:
        self._count("attlog_uploads")
        tz = self._zones[terminal.serial]
        now = utc_now()
        readings: list[TerminalAttendance] = []
        seen: dict[str, int] = {}
        for line in body.decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            fields = line.split("\t")
            try:
                pin = fields[0].strip()
                local = datetime.strptime(fields[1].strip(), "%Y-%m-%d %H:%M:%S")
                status = int(fields[2]) if len(fields) > 2 and fields[2].strip() else 0
                verify = int(fields[3]) if len(fields) > 3 and fields[3].strip() else 0
                if not pin:
                    raise ValueError("empty PIN")
            except (ValueError, IndexError) as err:
                self._bad("bad_record", f"{terminal.serial}: bad ATTLOG line {line[:80]!r}: {err}")
                continue
            key = f"{pin}|{local.isoformat()}|{verify}|{status}"
            n = seen.get(key, 0)
            seen[key] = n + 1
            readings.append(
                TerminalAttendance(
                    device_id=terminal.id,
                    user_id=pin,
                    method=codec.VERIFY_METHODS.get(verify, "other"),
                    terminal_time=local.replace(tzinfo=tz).astimezone(UTC),
                    at=now,
                    record_id=f"{key}|{n}",
                    punch=codec.PUNCHES.get(status),
                    raw={
                        "serial": terminal.serial,
                        "line": line,
                        "pin": pin,
                        "time": fields[1].strip(),
                        "status": status,
                        "verify": verify,
                    },
                )
            )
        accepted = len([ln for ln in body.splitlines() if ln.strip()])
        if not readings:
            return 200, f"OK: {accepted}"
        loop = asyncio.get_running_loop()
        waits: dict[tuple[str, str], asyncio.Future[None]] = {}
        fresh: list[TerminalAttendance] = []
        for r in readings:
            pk = (r.device_id, r.record_id)
            if pk in waits:
                continue
            known = self._pending.get(pk)
            if known is None:  # a retry of an upload still waiting reuses its records
                known = self._pending[pk] = loop.create_future()
                fresh.append(r)
            waits[pk] = known
        left: list[tuple[str, str]] = []
        try:
            for r in fresh:
                await asyncio.wait_for(self._queue.put(r), self.config.ack_timeout_s)
        except TimeoutError:
            left = list(waits)
        if not left:
            _, waiting = await asyncio.wait(waits.values(), timeout=self.config.ack_timeout_s)
            left = [pk for pk, fut in waits.items() if fut in waiting]
        if left:
            self._bad("ack_timeout", f"{terminal.serial}: {len(left)} records not committed in time")
            for pk in left:  # the terminal's retry hands them to the agent again (same event ids)
                self._pending.pop(pk, None)
            return 503, "records not committed, send again"
        self._count("records", len(readings))
        return 200, f"OK: {accepted}"


async def probe_zkteco_push(config: ZktecoPushConfig) -> list[ProbeResult]:
    """Doctor: the push port can be bound (or is already served by the running agent)."""
    try:
        server = await asyncio.start_server(lambda r, w: None, config.listen_host, config.listen_port)
    except OSError as err:
        return [
            ProbeResult(
                "reachable",
                "warn",
                f"{config.listen_host}:{config.listen_port} in use ({err}): the agent may be serving it",
            )
        ]
    server.close()
    await server.wait_closed()
    return [
        ProbeResult("reachable", "ok", f"{config.listen_host}:{config.listen_port} can be served"),
        ProbeResult("authenticated", "ok", f"{len(config.terminals)} terminal serials allowed"),
    ]


__all__ = [
    "ZkAuthError",
    "ZkClient",
    "ZkPullDriver",
    "ZkPushServer",
    "probe_zkteco",
    "probe_zkteco_push",
    "start_index",
]
