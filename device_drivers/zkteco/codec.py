"""The ZKTeco terminal TCP protocol (port 4370), sans I/O: what :mod:`zk.base` (pyzk) does inside
its blocking socket calls, as pure functions over bytes, shared by the driver and the simulator.

A TCP packet is ``50 50 82 7D`` + ``len`` (u32 LE, of what follows) + the 8-byte command header
``command, checksum, session_id, reply_id`` (u16 LE each) + payload. Large tables are read through
a prepared buffer: ``CMD_PREPARE_BUFFER`` (1503) answers the table size, ``CMD_READ_BUFFER`` (1504,
start, size) answers ``CMD_PREPARE_DATA`` + one ``CMD_DATA`` packet + ``CMD_ACK_OK`` per chunk of at
most 0xFFC0 bytes, ``CMD_FREE_DATA`` releases it. Times are ZK-encoded local times (seconds since
2000 in 31-day months), records are 8, 16 or 40 bytes (firmware dependent; TCP firmware sends 40).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from device_drivers.readings import AttendanceMethod

USHRT_MAX = 65535
MAGIC = b"\x50\x50\x82\x7d"
TOP = struct.Struct("<4sI")
HEADER = struct.Struct("<4H")

CMD_USERTEMP_RRQ = 9
CMD_ATTLOG_RRQ = 13
CMD_GET_FREE_SIZES = 50
CMD_GET_TIME = 201
CMD_SET_TIME = 202
CMD_REG_EVENT = 500
CMD_CONNECT = 1000
CMD_EXIT = 1001
CMD_ENABLEDEVICE = 1002
CMD_DISABLEDEVICE = 1003
CMD_AUTH = 1102
CMD_PREPARE_DATA = 1500
CMD_DATA = 1501
CMD_FREE_DATA = 1502
CMD_PREPARE_BUFFER = 1503
CMD_READ_BUFFER = 1504
CMD_ACK_OK = 2000
CMD_ACK_ERROR = 2001
CMD_ACK_UNAUTH = 2005
CMD_ACK_UNKNOWN = 0xFFFF
FCT_USER = 5
EF_ATTLOG = 1
MAX_CHUNK = 0xFFC0
MAX_PACKET = 1 << 20
"""Longest packet the driver accepts (a chunk is at most 0xFFC0 bytes): more is garbage."""

USER_SIZE = 72
RECORD_SIZE = 40

VERIFY_METHODS: dict[int, AttendanceMethod] = {
    0: "password",
    1: "fingerprint",
    2: "card",
    3: "password",
    4: "card",
    15: "face",
    25: "palm",
}
"""Verify mode (pyzk's ``Attendance.status``, the push protocol's ``verify``) -> method; other: ``other``."""

PUNCHES = {0: "check_in", 1: "check_out", 2: "break_out", 3: "break_in", 4: "overtime_in", 5: "overtime_out"}
"""Punch state (pyzk's ``punch``, the push protocol's ``status``) -> ``TerminalAttendance.punch``."""


class ZkProtocolError(Exception):
    """Bytes that are not the protocol (bad magic, length, checksum, a record too short)."""

    def __init__(self, message: str, code: str = "garbled") -> None:
        super().__init__(message)
        self.code = code


def checksum(data: bytes) -> int:
    """The packet checksum of zkemsdk.c as pyzk computes it (``__create_checksum``): a 16-bit sum
    folded at 0xFFFF, complemented, brought back into range by adding 0xFFFF."""
    odd = len(data) % 2
    total = 0
    for (word,) in struct.iter_unpack("<H", data[: len(data) - odd]):
        total += word
        if total > USHRT_MAX:
            total -= USHRT_MAX
    if odd:
        total += data[-1]
    while total > USHRT_MAX:
        total -= USHRT_MAX
    total = ~total
    while total < 0:
        total += USHRT_MAX
    return total


@dataclass(frozen=True, slots=True)
class Packet:
    command: int
    session_id: int
    reply_id: int
    payload: bytes = b""
    checksum_ok: bool = True


def encode(command: int, session_id: int, reply_id: int, payload: bytes = b"") -> bytes:
    """One TCP packet (the checksum over the header as sent, with the checksum field 0)."""
    body = HEADER.pack(command, 0, session_id, reply_id) + payload
    body = HEADER.pack(command, checksum(body), session_id, reply_id) + payload
    return TOP.pack(MAGIC, len(body)) + body


def _checksum_ok(body: bytes) -> bool:
    command, received, session_id, reply_id = HEADER.unpack_from(body)
    payload = body[8:]
    # pyzk sums the header before it increments the reply id; firmware sums the header it sends.
    for rid in (reply_id, (reply_id - 1) % USHRT_MAX):
        if checksum(HEADER.pack(command, 0, session_id, rid) + payload) == received:
            return True
    return False


class PacketReader:
    """Splits a TCP byte stream into packets; raises :class:`ZkProtocolError` on garbage."""

    def __init__(self, max_packet: int = MAX_PACKET, verify_checksum: bool = True) -> None:
        self.buffer = bytearray()
        self.max_packet = max_packet
        self.verify_checksum = verify_checksum

    def feed(self, data: bytes) -> list[Packet]:
        self.buffer += data
        packets: list[Packet] = []
        while len(self.buffer) >= 8:
            magic, length = TOP.unpack_from(self.buffer)
            if magic != MAGIC:
                head = bytes(self.buffer[:8]).hex()
                self.buffer.clear()
                raise ZkProtocolError(f"no packet start (got {head})")
            if length < 8 or length > self.max_packet:
                self.buffer.clear()
                raise ZkProtocolError(f"packet length {length} out of range", "bad_length")
            if len(self.buffer) < 8 + length:
                break
            body = bytes(self.buffer[8 : 8 + length])
            del self.buffer[: 8 + length]
            command, _, session_id, reply_id = HEADER.unpack_from(body)
            ok = _checksum_ok(body) if self.verify_checksum and command != CMD_DATA else True
            packets.append(Packet(command, session_id, reply_id, body[8:], ok))
        return packets


def parse_comm_key(text: str) -> int:
    """A terminal's comm key as its credential file holds it: a whole number (0: none), at most 32
    bits (what :func:`make_commkey` scrambles); ``ValueError`` otherwise."""
    digits = text.strip()
    if not digits.isdigit() or int(digits) >= 1 << 32:
        raise ValueError(
            "a ZKTeco comm key is a whole number below 4294967296 (0 when the terminal has none)"
        )
    return int(digits)


def make_commkey(key: int, session_id: int, ticks: int = 50) -> bytes:
    """The scrambled comm key of CMD_AUTH (commpro.c MakeKey; pyzk ``make_commkey``)."""
    k = 0
    for i in range(32):
        k = (k << 1 | 1) if key & (1 << i) else k << 1
    k = (k + session_id) & 0xFFFFFFFF
    b = struct.pack("<I", k)
    b = bytes((b[0] ^ ord("Z"), b[1] ^ ord("K"), b[2] ^ ord("S"), b[3] ^ ord("O")))
    lo, hi = struct.unpack("<HH", b)
    b = struct.pack("<HH", hi, lo)
    t = ticks & 0xFF
    return bytes((b[0] ^ t, b[1] ^ t, t, b[3] ^ t))


def encode_time(t: datetime) -> int:
    """zkemsdk.c EncodeTime: a naive local time as the terminal keeps it."""
    return (
        ((t.year % 100) * 12 * 31 + (t.month - 1) * 31 + t.day - 1) * 86400
        + (t.hour * 60 + t.minute) * 60
        + t.second
    )


def decode_time(value: int) -> datetime:
    """zkemsdk.c DecodeTime (raises :class:`ZkProtocolError` for an impossible date)."""
    second, value = value % 60, value // 60
    minute, value = value % 60, value // 60
    hour, value = value % 24, value // 24
    day, value = value % 31 + 1, value // 31
    month, value = value % 12 + 1, value // 12
    try:
        return datetime(value + 2000, month, day, hour, minute, second)
    except ValueError as err:
        raise ZkProtocolError(f"bad terminal time: {err}", "bad_time") from None


def decode_timehex(raw: bytes) -> datetime:
    """The 6-byte time of a real-time event (year-2000, month, day, hour, minute, second)."""
    y, mo, d, h, mi, s = raw[:6]
    try:
        return datetime(2000 + y, mo, d, h, mi, s)
    except ValueError as err:
        raise ZkProtocolError(f"bad event time: {err}", "bad_time") from None


def encode_timehex(t: datetime) -> bytes:
    return bytes((t.year - 2000, t.month, t.day, t.hour, t.minute, t.second))


@dataclass(frozen=True, slots=True)
class User:
    uid: int
    user_id: str
    name: str = ""
    privilege: int = 0
    password: str = ""
    group_id: str = ""
    card: int = 0


@dataclass(frozen=True, slots=True)
class Record:
    """One attendance log record: the terminal's user id, its local time, verify mode and punch."""

    user_id: str
    timestamp: datetime
    status: int
    punch: int
    uid: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\x00")[0].decode("utf-8", errors="replace")


def encode_user(u: User) -> bytes:
    return struct.pack(
        "<HB8s24sIx7sx24s",
        u.uid,
        u.privilege,
        u.password.encode(),
        u.name.encode(),
        u.card,
        u.group_id.encode(),
        u.user_id.encode(),
    )


def decode_users(data: bytes, count: int) -> list[User]:
    """The user table of CMD_USERTEMP_RRQ: u32 total size, then 72-byte (or 28-byte) users."""
    if len(data) < 4:
        raise ZkProtocolError("user table shorter than its size field", "truncated")
    total = struct.unpack_from("<I", data)[0]
    body = data[4 : 4 + total]
    if len(body) < total:
        raise ZkProtocolError(f"user table truncated: {len(body)} of {total} bytes", "truncated")
    size = total // count if count else USER_SIZE
    users: list[User] = []
    if size == 28:
        for off in range(0, len(body) - 27, 28):
            uid, priv, pw, name, card, group, _tz, uid2 = struct.unpack_from("<HB5s8sIxBhI", body, off)
            users.append(User(uid, str(uid2), _cstr(name), priv, _cstr(pw), str(group), card))
    else:
        for off in range(0, len(body) - 71, 72):
            uid, priv, pw, name, card, group, user_id = struct.unpack_from("<HB8s24sIx7sx24s", body, off)
            users.append(User(uid, _cstr(user_id), _cstr(name), priv, _cstr(pw), _cstr(group), card))
    return users


_REC40 = struct.Struct("<H24sBIB8x")


def encode_record(r: Record) -> bytes:
    return _REC40.pack(r.uid, r.user_id.encode(), r.status, encode_time(r.timestamp), r.punch)


def decode_records(data: bytes, count: int, users_by_uid: dict[int, str] | None = None) -> list[Record]:
    """The attendance log of CMD_ATTLOG_RRQ: u32 total size, then 40-, 16- or 8-byte records
    (the size is total / count, as pyzk finds it). Raises :class:`ZkProtocolError` when truncated."""
    if len(data) < 4:
        raise ZkProtocolError("attendance log shorter than its size field", "truncated")
    total = struct.unpack_from("<I", data)[0]
    body = data[4 : 4 + total]
    if len(body) < total:
        raise ZkProtocolError(f"attendance log truncated: {len(body)} of {total} bytes", "truncated")
    if count <= 0 or total == 0:
        return []
    size = total // count
    users_by_uid = users_by_uid or {}
    out: list[Record] = []
    if size == 8:
        for uid, status, t, punch in struct.iter_unpack("<HBIB", body[: len(body) // 8 * 8]):
            out.append(Record(users_by_uid.get(uid, str(uid)), decode_time(t), status, punch, uid))
    elif size == 16:
        for user, t, status, punch, _r, _w in struct.iter_unpack("<IIBB2sI", body[: len(body) // 16 * 16]):
            out.append(Record(str(user), decode_time(t), status, punch, 0))
    elif size == 40:
        cache: dict[int, datetime] = {}
        for uid, user_id, status, t, punch in _REC40.iter_unpack(body[: len(body) // 40 * 40]):
            when = cache.get(t)
            if when is None:
                when = cache[t] = decode_time(t)
            out.append(Record(_cstr(user_id), when, status, punch, uid))
    else:
        raise ZkProtocolError(f"attendance record size {size} (of {total} bytes / {count})", "bad_record")
    return out


def decode_event(payload: bytes) -> list[Record]:
    """A real-time EF_ATTLOG event (CMD_REG_EVENT packet): 12, 32, 36 or 52+ bytes per record."""
    out: list[Record] = []
    data = payload
    while len(data) >= 12:
        if len(data) == 12:
            uid, status, punch, th = struct.unpack("<IBB6s", data)
            user_id, data = str(uid), b""
        elif len(data) >= 52:
            raw_id, status, punch, th = struct.unpack_from("<24sBB6s", data)
            user_id, data = _cstr(raw_id), data[52:]
        elif len(data) >= 36:
            raw_id, status, punch, th = struct.unpack_from("<24sBB6s", data)
            user_id, data = _cstr(raw_id), data[36:]
        elif len(data) >= 32:
            raw_id, status, punch, th = struct.unpack_from("<24sBB6s", data)
            user_id, data = _cstr(raw_id), data[32:]
        else:
            raise ZkProtocolError(f"real-time event of {len(data)} bytes", "bad_event")
        out.append(Record(user_id, decode_timehex(th), status, punch))
    return out


def encode_event(r: Record) -> bytes:
    return struct.pack("<24sBB6s4s", r.user_id.encode(), r.status, r.punch, encode_timehex(r.timestamp), b"")


def record_ids(records: list[Record]) -> list[str]:
    """Stable ids: ``user|local time|verify|punch|n``, ``n`` numbering identical records in the log
    (so two punches in the same second stay two records, and a re-read gives the same ids)."""
    seen: Counter[tuple[str, datetime, int, int]] = Counter()
    ids: list[str] = []
    for r in records:
        key = (r.user_id, r.timestamp, r.status, r.punch)
        n = seen[key]
        seen[key] = n + 1
        ids.append(f"{r.user_id}|{r.timestamp.isoformat()}|{r.status}|{r.punch}|{n}")
    return ids


def free_sizes(users: int, records: int) -> bytes:
    """The CMD_GET_FREE_SIZES answer (20 ints + 3 face ints), as pyzk ``read_sizes`` reads it."""
    fields = [0] * 20
    fields[4], fields[8] = users, records
    fields[15], fields[16] = 10_000, 200_000
    return struct.pack("<20i", *fields) + struct.pack("<3i", 0, 0, 0)


def parse_free_sizes(payload: bytes) -> tuple[int, int]:
    """(users, records) of a CMD_GET_FREE_SIZES answer."""
    if len(payload) < 80:
        raise ZkProtocolError(f"sizes answer of {len(payload)} bytes", "truncated")
    fields = struct.unpack_from("<20i", payload)
    return fields[4], fields[8]
