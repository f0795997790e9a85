"""ZKTeco simulators: a terminal speaking the TCP protocol (port 4370) that pyzk's own client and
our driver talk to, and a terminal pushing ATTLOG over HTTP (``/iclock``) as the firmware does.

Test and demo equipment, reached through :mod:`device_drivers.registry` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self
from zoneinfo import ZoneInfo

import httpx

from device_drivers.errors import DeviceError
from device_drivers.zkteco import codec
from device_drivers.zkteco.codec import Record, User
from device_drivers.zkteco.driver import comm_key

logger = logging.getLogger(__name__)


@dataclass
class ZkFaults:
    """Fault switches of :class:`ZkDeviceSimulator` (set them while it runs)."""

    drop_after_chunks: int | None = None
    """Close the connection after serving this many buffer chunks (then clear the switch)."""
    garbage_next: bool = False
    """Answer the next command with random bytes (then clear the switch)."""
    refuse_auth: bool = False
    """Answer every CMD_AUTH with CMD_ACK_UNAUTH."""
    no_realtime: bool = False
    """Answer CMD_REG_EVENT with CMD_ACK_ERROR (a terminal without real-time events)."""


class ZkDeviceSimulator:
    """An asyncio TCP server speaking the terminal's protocol: comm-key auth, a user table, an
    attendance log (:meth:`add_record` while running; pushed as a real-time event to clients that
    registered EF_ATTLOG), a clock (:attr:`clock_offset_s`, set by CMD_SET_TIME) and :attr:`faults`."""

    def __init__(
        self,
        *,
        comm_key: int = 0,
        users: list[User] | None = None,
        records: list[Record] | None = None,
        timezone: str | None = None,
        clock_offset_s: float = 0.0,
        demo_interval_s: float | None = None,
    ) -> None:
        self.comm_key = comm_key
        self.users: list[User] = list(users or [])
        self.records: list[Record] = list(records or [])
        self.tz = ZoneInfo(timezone or "UTC")
        self.clock_offset_s = clock_offset_s
        self.demo_interval_s = demo_interval_s
        self.faults = ZkFaults()
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0
        self.commands: list[int] = []
        self._server: asyncio.Server | None = None
        self._writers: dict[asyncio.StreamWriter, int] = {}
        self._demo: asyncio.Task[None] | None = None
        self.demo_in_turn = False
        """Demo punches go through the users in order (configured ``sim_users``), not at random."""
        self._log_cache: bytes | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_config(cls, config: Any) -> Self:
        """The demo terminal of a ``simulated: true`` device: three users, a punch every 20 s."""
        key = 0
        # A missing or unusable comm key: the driver refuses it with the clear error when entered.
        with contextlib.suppress(DeviceError):
            key = comm_key(config)
        named = list(getattr(config, "sim_users", None) or [])
        users = [User(i, user_id, f"Demo {user_id}") for i, user_id in enumerate(named, 1)] or [
            User(i, str(1000 + i), f"Demo {i}") for i in range(1, 4)
        ]
        sim = cls(
            comm_key=key,
            users=users,
            timezone=config.timezone,
            demo_interval_s=float(getattr(config, "sim_interval_s", 20.0)),
        )
        sim.demo_in_turn = bool(named)
        return sim

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def now_local(self) -> datetime:
        """The terminal's clock: naive local time."""
        now = datetime.now(UTC) + timedelta(seconds=self.clock_offset_s)
        return now.astimezone(self.tz).replace(tzinfo=None, microsecond=0)

    def add_user(self, uid: int, user_id: str, name: str = "") -> None:
        self.users.append(User(uid, user_id, name))

    def add_record(
        self, user_id: str, timestamp: datetime | None = None, status: int = 1, punch: int = 0
    ) -> Record:
        """Append a record to the log (``timestamp``: naive local time, default the clock) and push
        it to clients that registered real-time events."""
        uid = next((u.uid for u in self.users if u.user_id == user_id), 0)
        record = Record(user_id, timestamp or self.now_local(), status, punch, uid)
        self.records.append(record)
        self._log_cache = None
        for writer, flags in list(self._writers.items()):
            if flags & codec.EF_ATTLOG:
                with contextlib.suppress(Exception):
                    writer.write(
                        codec.encode(codec.CMD_REG_EVENT, codec.EF_ATTLOG, 0, codec.encode_event(record))
                    )
        return record

    def clear_log(self) -> None:
        self.records.clear()
        self._log_cache = None

    def disconnect_all(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, self.host, self.port or 0)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.demo_interval_s:
            self._demo = asyncio.create_task(self._demo_punches(self.demo_interval_s))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._demo is not None:
            self._demo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._demo
        if self._server is not None:
            self._server.close()
            self.disconnect_all()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _demo_punches(self, interval_s: float) -> None:
        rng = random.Random()
        verify = (1, 15, 2)  # fingerprint, face, card
        turn = 0
        while True:
            await asyncio.sleep(interval_s)
            if not self.users:
                continue
            if self.demo_in_turn:
                user = self.users[turn % len(self.users)]
                self.add_record(user.user_id, status=verify[turn % len(verify)], punch=0)
                turn += 1
            else:
                self.add_record(rng.choice(self.users).user_id, status=rng.choice([1, 2, 15]), punch=0)

    def _table(self, command: int) -> bytes:
        if command == codec.CMD_USERTEMP_RRQ:
            rows = b"".join(codec.encode_user(u) for u in self.users)
            return struct.pack("<I", len(rows)) + rows
        if self._log_cache is None:
            rows = b"".join(codec.encode_record(r) for r in self.records)
            self._log_cache = struct.pack("<I", len(rows)) + rows
        return self._log_cache

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.connections += 1
        session = random.randint(1, 0xFFFE)
        authed = False
        buffer = b""
        chunks = 0
        self._writers[writer] = 0
        packets = codec.PacketReader(verify_checksum=False)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                try:
                    batch = packets.feed(data)
                except codec.ZkProtocolError:
                    return
                for p in batch:
                    cmd = p.command
                    self.commands.append(cmd)
                    rid = p.reply_id

                    def reply(code: int, payload: bytes = b"", rid: int = rid) -> bytes:
                        return codec.encode(code, session, rid, payload)

                    if cmd == codec.CMD_ACK_OK:
                        continue  # a client acknowledging a real-time event
                    if self.faults.garbage_next:
                        self.faults.garbage_next = False
                        writer.write(random.randbytes(48))
                        continue
                    if cmd == codec.CMD_CONNECT:
                        authed = self.comm_key == 0
                        writer.write(reply(codec.CMD_ACK_OK if authed else codec.CMD_ACK_UNAUTH))
                        continue
                    if cmd == codec.CMD_AUTH:
                        authed = not self.faults.refuse_auth and p.payload[:4] == codec.make_commkey(
                            self.comm_key, session
                        )
                        writer.write(reply(codec.CMD_ACK_OK if authed else codec.CMD_ACK_UNAUTH))
                        continue
                    if not authed:
                        writer.write(reply(codec.CMD_ACK_UNAUTH))
                        continue
                    if cmd == codec.CMD_EXIT:
                        writer.write(reply(codec.CMD_ACK_OK))
                        await writer.drain()
                        return
                    if cmd == codec.CMD_GET_FREE_SIZES:
                        writer.write(
                            reply(codec.CMD_ACK_OK, codec.free_sizes(len(self.users), len(self.records)))
                        )
                    elif cmd == codec.CMD_PREPARE_BUFFER:
                        _one, table, _fct, _ext = struct.unpack_from("<bhii", p.payload.ljust(11, b"\x00"))
                        buffer = self._table(table)
                        writer.write(reply(codec.CMD_ACK_OK, b"\x00" + struct.pack("<II", len(buffer), 0)))
                    elif cmd == codec.CMD_READ_BUFFER:
                        start, size = struct.unpack_from("<ii", p.payload.ljust(8, b"\x00"))
                        if (
                            self.faults.drop_after_chunks is not None
                            and chunks >= self.faults.drop_after_chunks
                        ):
                            self.faults.drop_after_chunks = None
                            return
                        chunk = buffer[start : start + size]
                        writer.write(
                            reply(codec.CMD_PREPARE_DATA, struct.pack("<II", len(chunk), 0))
                            + reply(codec.CMD_DATA, chunk)
                            + reply(codec.CMD_ACK_OK)
                        )
                        chunks += 1
                    elif cmd == codec.CMD_FREE_DATA:
                        buffer = b""
                        writer.write(reply(codec.CMD_ACK_OK))
                    elif cmd == codec.CMD_GET_TIME:
                        writer.write(
                            reply(codec.CMD_ACK_OK, struct.pack("<I", codec.encode_time(self.now_local())))
                        )
                    elif cmd == codec.CMD_SET_TIME:
                        wanted = codec.decode_time(struct.unpack_from("<I", p.payload.ljust(4, b"\x00"))[0])
                        aware = wanted.replace(tzinfo=self.tz)
                        self.clock_offset_s = (aware - datetime.now(UTC)).total_seconds()
                        writer.write(reply(codec.CMD_ACK_OK))
                    elif cmd == codec.CMD_REG_EVENT:
                        if self.faults.no_realtime:
                            writer.write(reply(codec.CMD_ACK_ERROR))
                        else:
                            self._writers[writer] = struct.unpack_from("<I", p.payload.ljust(4, b"\x00"))[0]
                            writer.write(reply(codec.CMD_ACK_OK))
                    elif cmd == 11:  # CMD_OPTIONS_RRQ
                        name = p.payload.split(b"\x00")[0]
                        value = b"ZKSIM0001" if name == b"~SerialNumber" else b""
                        writer.write(reply(codec.CMD_ACK_OK, name + b"=" + value + b"\x00"))
                    else:
                        writer.write(reply(codec.CMD_ACK_OK))
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            return
        finally:
            self._writers.pop(writer, None)
            writer.close()


@dataclass
class PushRecord:
    pin: str
    at: datetime
    status: int = 0
    verify: int = 1
    workcode: int = 0

    def line(self) -> str:
        return f"{self.pin}\t{self.at:%Y-%m-%d %H:%M:%S}\t{self.status}\t{self.verify}\t{self.workcode}\t0\t0"


@dataclass
class _PushState:
    pending: list[PushRecord] = field(default_factory=list)
    sent: int = 0
    attempts: int = 0
    failures: int = 0
    last_status: int | None = None
    last_answer: str = ""
    options: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


class ZkPushTerminalSimulator:
    """A terminal pushing ATTLOG to the gateway's ``/iclock`` server as the firmware does: the
    ``options=all`` handshake, then POSTs of at most ``batch`` records; a batch leaves the terminal
    only when the answer is ``OK: <n>`` with n the batch size, otherwise it is sent again later, so
    a cut link loses nothing. :meth:`add_record` queues a record; :meth:`push` sends now."""

    def __init__(
        self,
        serial: str = "ZKPUSH0001",
        *,
        url: str | None = None,
        batch: int = 50,
        interval_s: float = 0.2,
        demo_interval_s: float | None = None,
    ) -> None:
        self.serial = serial
        self.base_url = url or ""
        self.batch = batch
        self.interval_s = interval_s
        self.demo_interval_s = demo_interval_s
        self.state = _PushState()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stamp = 0

    @classmethod
    def from_config(cls, config: Any) -> Self:
        """The demo terminal of a ``simulated: true`` push server: the first allowed serial."""
        terminals = getattr(config, "terminals", None) or []
        serial = terminals[0].serial if terminals else "ZKPUSH0001"
        return cls(serial, demo_interval_s=20.0)

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def pending(self) -> int:
        return len(self.state.pending)

    @property
    def sent(self) -> int:
        return self.state.sent

    def add_record(
        self, pin: str, at: datetime | None = None, status: int = 0, verify: int = 1, workcode: int = 0
    ) -> PushRecord:
        rec = PushRecord(pin, at or datetime.now().replace(microsecond=0), status, verify, workcode)
        self.state.pending.append(rec)
        self._wake.set()
        return rec

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"zk-push-sim:{self.serial}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        rng = random.Random()
        last_demo = time.monotonic()
        async with httpx.AsyncClient(timeout=10.0) as client:
            while True:
                if not self.base_url:
                    await asyncio.sleep(0.1)
                    continue
                if self.demo_interval_s and time.monotonic() - last_demo > self.demo_interval_s:
                    last_demo = time.monotonic()
                    self.add_record(str(rng.randint(1, 3)), verify=rng.choice([1, 2, 15]))
                try:
                    if not self.state.options:
                        await self.handshake(client)
                    await self.push(client)
                    await self.poll_commands(client)
                except httpx.HTTPError as err:
                    self.state.failures += 1
                    self.state.last_answer = f"{type(err).__name__}: {err}"
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)

    async def handshake(self, client: httpx.AsyncClient) -> None:
        r = await client.get(
            f"{self.base_url}/iclock/cdata", params={"SN": self.serial, "options": "all", "pushver": "2.4.1"}
        )
        self.state.last_status = r.status_code
        if r.status_code == 200:
            for line in r.text.splitlines():
                if "=" in line:
                    key, _, value = line.partition("=")
                    self.state.options[key.strip()] = value.strip()

    async def push(self, client: httpx.AsyncClient) -> None:
        while self.state.pending:
            batch = self.state.pending[: self.batch]
            self.state.attempts += 1
            body = "\n".join(r.line() for r in batch) + "\n"
            self._stamp += 1
            r = await client.post(
                f"{self.base_url}/iclock/cdata",
                params={"SN": self.serial, "table": "ATTLOG", "Stamp": str(self._stamp)},
                content=body.encode(),
            )
            self.state.last_status = r.status_code
            self.state.last_answer = r.text.strip()
            if r.status_code == 200 and r.text.strip() == f"OK: {len(batch)}":
                del self.state.pending[: len(batch)]
                self.state.sent += len(batch)
            else:
                self.state.failures += 1
                return

    async def push_operlog(self, client: httpx.AsyncClient, lines: list[str]) -> httpx.Response:
        return await client.post(
            f"{self.base_url}/iclock/cdata",
            params={"SN": self.serial, "table": "OPERLOG", "Stamp": "1"},
            content=("\n".join(lines) + "\n").encode(),
        )

    async def poll_commands(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{self.base_url}/iclock/getrequest", params={"SN": self.serial})
        text = r.text.strip()
        if r.status_code == 200 and text.startswith("C:"):
            for line in text.splitlines():
                self.state.commands.append(line)
                cmd_id = line.split(":")[1] if line.count(":") >= 2 else "0"
                await client.post(
                    f"{self.base_url}/iclock/devicecmd",
                    params={"SN": self.serial},
                    content=f"ID={cmd_id}&Return=0&CMD=DATA\n".encode(),
                )
