"""Sans-I/O frame codec driven by a profile's :class:`~device_drivers.profiles.config.Framing`.

It knows only the frame envelope (start, address, length, code, payload, checksum, end); what the
payload means is for the family codecs built on it. No I/O and no asyncio here.

Resynchronisation is done in bulk, so a megabyte of line noise costs milliseconds (up to a hundred
for a framing without a start marker), not a decode step per byte: the framing is compiled into a
regular expression of a frame's shape (markers, sizes, hex digits where the payload is ASCII hex),
and when the bytes at ``start`` are not a valid frame, decode raises :class:`MalformedFrame` whose
``consumed`` reaches the next place the shape matches (a frame that may be valid), or else the
last ``max_frame`` bytes, where a frame may still be arriving. Without a start marker, noise has
that shape every few dozen bytes, so there the checksum is checked too before a place counts; and
a run of one byte value (a stuck line) is skipped at once. A line protocol resynchronises on its
end marker instead: a bad line is dropped whole. ``consumed`` is always at least 1, so a decode
loop cannot spin; what is left undecoded is always shorter than ``max_frame``, so a line without
any frame boundary cannot grow a buffer.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from device_drivers.errors import IncompleteFrame, MalformedFrame
from device_drivers.profiles.checksums import CHECKSUMS
from device_drivers.profiles.config import Framing

_RAW_SAMPLE = 64
"""At most this many dropped bytes ride in a :class:`MalformedFrame` (for the log)."""
_HEX = rb"[0-9A-Fa-f]"
_ANY = rb"."  # compiled with DOTALL: any byte


def _times(unit: bytes, count: int) -> bytes:
    return b"%s{%d}" % (unit, count) if count else b""


def _frame_shape(framing: Framing, code_sizes: Mapping[int, int], checksum_width: int) -> re.Pattern[bytes]:
    """A pattern that matches exactly the byte strings laid out as a frame of ``framing`` (every
    size and marker right, hex digits where ASCII hex is sent), whatever their checksum says: the
    places where decoding may find a frame."""
    f = framing
    hex_data = f.data.encoding == "ascii_hex"
    sum_chars = checksum_width * (2 if f.checksum and f.checksum.encoding == "ascii_hex" else 1)
    head = re.escape(f.start or b"") + (_ANY if f.address else b"")
    tail = _times(_HEX if f.checksum and f.checksum.encoding == "ascii_hex" else _ANY, sum_chars)
    tail += re.escape(f.end or b"")
    length_size = f.length.size if f.length else 0
    markers = len(f.start or b"") + len(f.end or b"")
    room = f.max_frame - markers - f.address - length_size - f.code - sum_chars
    per_byte = 2 if hex_data else 1

    def data(size: int) -> bytes:
        return _times(_HEX if hex_data else _ANY, size * per_byte)

    allowed = [n for n in range(room // per_byte + 1) if f.data.sizes is None or n in f.data.sizes]
    code = _ANY if f.code else b""
    if f.size_from == "fixed":
        assert f.data.size is not None
        bodies = [code + data(f.data.size)]
    elif f.size_from == "length":
        assert f.length is not None
        bodies = []
        extra = sum(1 for p in ("address", "code") if p in f.length.counts)
        extra += checksum_width if "checksum" in f.length.counts else 0
        for size in allowed:
            value = size + extra + f.length.adjust
            if 0 <= value < 256**f.length.size:
                field = value.to_bytes(f.length.size, f.length.byteorder)
                bodies.append(re.escape(field) + code + data(size))
    elif f.size_from == "code":
        bodies = [re.escape(bytes([c])) + data(n) for c, n in sorted(code_sizes.items()) if n in allowed]
    else:
        bodies = [data(n) for n in allowed]
    # No body at all (a profile whose codes cannot fit max_frame): a pattern that never matches.
    body = b"(?:" + b"|".join(bodies) + b")" if bodies else rb"(?!)"
    return re.compile(head + body + tail, re.DOTALL)


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame's envelope fields and its payload (decoded from ASCII hex where the profile says so)."""

    data: bytes
    code: int | None = None
    address: int | None = None


class _Bad(Exception):
    """Internal: the frame at offset 0 is bad."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _More(Exception):
    """Internal: the frame at offset 0 needs more bytes."""


class FrameCodec:
    """Decode and encode frames of one framing.

    ``code_sizes`` gives the payload size of each code where the framing takes it from the code
    (protocols such as ``addr cmd data crc`` with neither markers nor length).
    """

    def __init__(self, framing: Framing, code_sizes: Mapping[int, int] | None = None) -> None:
        self.framing = framing
        self.code_sizes = dict(code_sizes or {})
        if framing.size_from == "code" and not self.code_sizes:
            raise ValueError("this framing takes the payload size from the code: give code_sizes")
        self._start = framing.start or b""
        self._end = framing.end or b""
        # Without a start marker, the end marker delimits lines: a bad line is dropped whole.
        self._line_mode = not self._start and bool(self._end)
        self._checksum = CHECKSUMS[framing.checksum.algorithm] if framing.checksum else None
        self._shape = _frame_shape(framing, self.code_sizes, self._checksum.width if self._checksum else 0)
        self._code_at = 1 if framing.address else 0
        self._runs: dict[int, re.Pattern[bytes]] = {}  # byte value -> a pattern of a run of it
        # Without a start marker, noise holds a place of frame shape every few dozen bytes, where
        # the marker of a framing with one would be rare. Where the checksum covers one contiguous
        # run of binary bytes, resynchronising checks it at once and skips the places it fails.
        present = ["address"] * framing.address + ["length"] * (framing.length is not None)
        present += ["code"] * framing.code + ["data"]
        self._check_on_resync = (
            not self._start
            and framing.checksum is not None
            and framing.checksum.encoding == "binary"
            and framing.data.encoding == "binary"
            and list(framing.checksum.covers) == present
        )

    # -- decoding ---------------------------------------------------------------------------------

    def decode(self, buffer: bytes | bytearray | memoryview, start: int = 0) -> tuple[Frame, int]:
        """The first frame in ``buffer[start:]`` and how many bytes it took.

        Raises :class:`IncompleteFrame` when more bytes are needed, :class:`MalformedFrame` (with
        ``consumed`` >= 1) when the leading bytes must be dropped. ``start`` lets a decode loop walk
        a large buffer without copying or deleting per frame.
        """
        buf = buffer.tobytes() if isinstance(buffer, memoryview) else buffer
        size = len(buf) - start
        if size <= 0:
            raise IncompleteFrame()
        if self._line_mode:
            return self._decode_line(buf, start)
        if self._start:
            index = buf.find(self._start, start)
            if index < 0:
                drop = size - self._partial_suffix(buf, self._start)
                if drop == 0:
                    raise IncompleteFrame()
                raise self._malformed(buf, start, drop, "garbage", f"{drop} bytes before any start marker")
            if index > start:
                drop = index - start
                raise self._malformed(buf, start, drop, "garbage", f"{drop} bytes before the start marker")
        try:
            # No frame is longer than max_frame: parse a copy of that much, never of the buffer.
            return self._parse(bytes(buf[start : start + self.framing.max_frame]))
        except _More:
            if size < self.framing.max_frame:
                raise IncompleteFrame() from None
            consumed = self._next_frame(buf, self._past_run(buf, start)) - start
            raise self._malformed(
                buf, start, consumed, "bad_length", f"no complete frame within {size} bytes"
            ) from None
        except _Bad as bad:
            # Even a frame whose markers line up may be a false start (a cut frame followed by the
            # next one): resynchronise on the next possible frame rather than trust its extent.
            consumed = self._next_frame(buf, self._past_run(buf, start)) - start
            raise self._malformed(buf, start, consumed, bad.code, str(bad)) from None

    def _decode_line(self, buf: bytes | bytearray, start: int) -> tuple[Frame, int]:
        """Line protocol: the line is the frame, whatever is wrong inside it."""
        index = buf.find(self._end, start)
        if index < 0:
            size = len(buf) - start
            if size < self.framing.max_frame:
                raise IncompleteFrame()
            # Too long for a frame: drop it, but keep what may be the first bytes of the end marker.
            drop = max(1, size - self._partial_suffix(buf, self._end))
            raise self._malformed(buf, start, drop, "bad_length", f"no end marker within {size} bytes")
        line_size = index + len(self._end) - start
        if line_size > self.framing.max_frame:
            raise self._malformed(buf, start, line_size, "bad_length", f"line of {line_size} bytes")
        line = bytes(buf[start : start + line_size])
        try:
            return self._parse(line)
        except _More:
            raise self._malformed(buf, start, line_size, "bad_length", "line shorter than a frame") from None
        except _Bad as bad:
            raise self._malformed(buf, start, line_size, bad.code, str(bad)) from None

    @staticmethod
    def _malformed(
        buf: bytes | bytearray, start: int, consumed: int, code: str, message: str
    ) -> MalformedFrame:
        raw = bytes(buf[start : start + min(consumed, _RAW_SAMPLE)])
        return MalformedFrame(message, code=code, consumed=consumed, raw=raw)

    @staticmethod
    def _partial_suffix(buf: bytes | bytearray, marker: bytes) -> int:
        """Length of the longest tail of ``buf`` that is a proper prefix of ``marker``."""
        for size in range(min(len(marker) - 1, len(buf)), 0, -1):
            if marker.startswith(buf[-size:]):
                return size
        return 0

    def _past_run(self, buf: bytes | bytearray, start: int) -> int:
        """The first offset after ``start`` that can hold a frame other than the bad one at
        ``start``. A stuck line (floating, shorted, in break) reads as a run of one byte value, and
        every offset whose ``max_frame`` bytes lie inside the run holds the same bytes, so the same
        bad frame: a protocol without a start marker would otherwise try each of them in turn."""
        if start + 1 >= len(buf) or buf[start + 1] != buf[start]:
            return start + 1
        run = self._runs.get(buf[start])
        if run is None:
            run = self._runs[buf[start]] = re.compile(re.escape(bytes([buf[start]])) + b"+")
        match = run.match(buf, start)
        assert match is not None
        return max(start + 1, match.end() - self.framing.max_frame + 1)

    def _next_frame(self, buf: bytes | bytearray, offset: int) -> int:
        """The first place at or after ``offset`` where a frame may start: where the frame shape
        matches, or else where a frame cut off by the end of ``buf`` may begin."""
        position = offset
        while (match := self._shape.search(buf, position)) is not None:
            if not self._check_on_resync or self._checksum_holds(buf, match):
                return match.start()
            position = self._past_run(buf, match.start())
        # No complete frame: only the last max_frame - 1 bytes can hold the start of one.
        low = max(offset, len(buf) - self.framing.max_frame + 1)
        if self._start:
            index = buf.find(self._start, low)
            return index if index >= 0 else max(low, len(buf) - self._partial_suffix(buf, self._start))
        for candidate in range(low, len(buf)):
            at = candidate + self._code_at
            if at >= len(buf) or buf[at] in self.code_sizes:
                return candidate
        return len(buf)

    def _checksum_holds(self, buf: bytes | bytearray, match: re.Match[bytes]) -> bool:
        """Whether the frame-shaped bytes of ``match`` carry the right checksum (binary parts, one
        contiguous run covered: see ``_check_on_resync``)."""
        assert self._checksum is not None and self.framing.checksum is not None
        end = match.end() - len(self._end)
        width = self._checksum.width
        received = int.from_bytes(buf[end - width : end], self.framing.checksum.byteorder)
        return self._checksum.function(bytes(buf[match.start() : end - width])) == received

    @staticmethod
    def _take(buf: bytes, pos: int, size: int) -> bytes:
        if pos + size > len(buf):
            raise _More()
        return buf[pos : pos + size]

    def _unhex(self, text: bytes, what: str) -> bytes:
        try:
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise _Bad("bad_data", f"{what} is not ASCII hex: {text!r}") from None

    def _parse(self, buf: bytes) -> tuple[Frame, int]:
        f = self.framing
        pos = len(self._start)
        address = code = None
        length_raw = b""
        if f.address:
            address = self._take(buf, pos, 1)[0]
            pos += 1
        data_size: int | None = f.data.size
        if f.length is not None:
            length_raw = self._take(buf, pos, f.length.size)
            pos += f.length.size
            counted = int.from_bytes(length_raw, f.length.byteorder) - f.length.adjust
            for part, size in (("address", 1), ("code", 1)):
                if part in f.length.counts:
                    counted -= size
            if "checksum" in f.length.counts and self._checksum is not None:
                counted -= self._checksum.width
            max_data = f.max_frame - pos - len(self._end)
            if not 0 <= counted <= max_data:
                raise _Bad(
                    "bad_length", f"length field {length_raw.hex()} gives a payload of {counted} bytes"
                )
            data_size = counted
        if f.code:
            code = self._take(buf, pos, 1)[0]
            pos += 1
            if f.size_from == "code":
                if code not in self.code_sizes:
                    raise _Bad("unknown_code", f"unknown code 0x{code:02X}")
                data_size = self.code_sizes[code]

        checksum_chars = 0
        if self._checksum is not None:
            checksum_chars = self._checksum.width * (
                2 if f.checksum and f.checksum.encoding == "ascii_hex" else 1
            )
        hex_payload = f.data.encoding == "ascii_hex"
        if data_size is None:
            # Size given by the end marker: everything up to it, less the checksum.
            index = buf.find(self._end, pos)
            if index < 0:
                raise _More()
            if index - checksum_chars < pos:
                raise _Bad("bad_length", "frame too short for its checksum")
            raw_data = buf[pos : index - checksum_chars]
        else:
            raw_data = self._take(buf, pos, data_size * (2 if hex_payload else 1))
        pos += len(raw_data)
        data = self._unhex(raw_data, "payload") if hex_payload else raw_data
        if f.data.sizes is not None and len(data) not in f.data.sizes:
            raise _Bad("bad_length", f"payload of {len(data)} bytes (allowed: {f.data.sizes})")

        received: int | None = None
        if self._checksum is not None and f.checksum is not None:
            raw_sum = self._take(buf, pos, checksum_chars)
            pos += checksum_chars
            sum_bytes = self._unhex(raw_sum, "checksum") if f.checksum.encoding == "ascii_hex" else raw_sum
            received = int.from_bytes(sum_bytes, f.checksum.byteorder)
        if self._end:
            end = self._take(buf, pos, len(self._end))
            if end != self._end:
                raise _Bad(
                    "bad_framing", f"expected end marker {self._end.hex()} at byte {pos}, got {end.hex()}"
                )
            pos += len(self._end)
        if received is not None and f.checksum is not None and self._checksum is not None:
            parts = {
                "address": b"" if address is None else bytes([address]),
                "length": length_raw,
                "code": b"" if code is None else bytes([code]),
                "data": data,
            }
            expected = self._checksum.function(b"".join(parts[p] for p in f.checksum.covers))
            if expected != received:
                raise _Bad(
                    "bad_checksum", f"{f.checksum.algorithm} is 0x{received:X}, computed 0x{expected:X}"
                )
        return Frame(data=data, code=code, address=address), pos

    # -- encoding ---------------------------------------------------------------------------------

    def encode(self, frame: Frame) -> bytes:
        """The bytes of ``frame``; raises ``ValueError`` for a frame this framing cannot carry."""
        f = self.framing
        if f.address != (frame.address is not None):
            raise ValueError(
                "address given but not in the framing" if frame.address is not None else "address missing"
            )
        if f.code != (frame.code is not None):
            raise ValueError(
                "code given but not in the framing" if frame.code is not None else "code missing"
            )
        expected_size = f.data.size
        if f.size_from == "code" and frame.code is not None:
            expected_size = self.code_sizes.get(frame.code)
            if expected_size is None:
                raise ValueError(f"unknown code 0x{frame.code:02X}")
        if expected_size is not None and len(frame.data) != expected_size:
            raise ValueError(f"payload of {len(frame.data)} bytes, the framing wants {expected_size}")
        if f.data.sizes is not None and len(frame.data) not in f.data.sizes:
            raise ValueError(f"payload of {len(frame.data)} bytes (allowed: {f.data.sizes})")
        parts: dict[str, bytes] = {
            "address": b"" if frame.address is None else bytes([frame.address]),
            "code": b"" if frame.code is None else bytes([frame.code]),
            "data": frame.data,
            "length": b"",
        }
        checksum = b""
        if f.length is not None:
            width = self._checksum.width if self._checksum is not None else 0
            sizes = {
                "address": len(parts["address"]),
                "code": len(parts["code"]),
                "data": len(frame.data),
                "checksum": width,
            }
            counted = sum(sizes[p] for p in f.length.counts) + f.length.adjust
            parts["length"] = counted.to_bytes(f.length.size, f.length.byteorder)
        if self._checksum is not None and f.checksum is not None:
            value = self._checksum.function(b"".join(parts[p] for p in f.checksum.covers))
            checksum = value.to_bytes(self._checksum.width, f.checksum.byteorder)
            if f.checksum.encoding == "ascii_hex":
                checksum = self._hex(checksum)
        payload = self._hex(frame.data) if f.data.encoding == "ascii_hex" else frame.data
        out = b"".join(
            (self._start, parts["address"], parts["length"], parts["code"], payload, checksum, self._end)
        )
        if len(out) > f.max_frame:
            raise ValueError(f"frame of {len(out)} bytes exceeds max_frame {f.max_frame}")
        return out

    def _hex(self, data: bytes) -> bytes:
        text = data.hex().encode("ascii")
        return text.upper() if self.framing.data.hex_case == "upper" else text


class Codec(Protocol):
    """What every codec offers: ``decode(buffer, start=0) -> (value, consumed)`` (the value at
    ``buffer[start:]``) and ``encode(value) -> bytes``."""

    def decode(self, buffer: bytes | bytearray | memoryview, start: int = 0) -> tuple[Any, int]: ...

    def encode(self, value: Any) -> bytes: ...


def drain(codec: Codec, buffer: bytearray) -> Iterator[Any]:
    """Decode every complete frame in ``buffer``; the bytes consumed are deleted from it when the
    loop ends (or is left), in one step, so a large buffer costs no copy per frame.

    Yields decoded values and, for bytes that had to be dropped, the :class:`MalformedFrame` itself
    (not raised), so a caller can count it and go on. Stops at an incomplete frame, whose bytes stay
    in ``buffer``. Each step consumes at least one byte, so this always ends. ``buffer`` must not be
    changed by the caller while the loop runs.
    """
    pos = 0
    try:
        while pos < len(buffer):
            try:
                value, consumed = codec.decode(buffer, pos)
            except IncompleteFrame:
                return
            except MalformedFrame as err:
                pos += err.consumed
                yield err
                continue
            pos += consumed
            yield value
    finally:
        del buffer[:pos]


__all__ = ["Codec", "Frame", "FrameCodec", "drain"]
