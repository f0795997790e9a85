"""Sans-I/O frame codec driven by a profile's :class:`~device_drivers.profiles.config.Framing`.

It knows only the frame envelope (start, address, length, code, payload, checksum, end); what the
payload means is for the family codecs built on it. No I/O and no asyncio here.

Resynchronisation: when the bytes at the start of the buffer are not a valid frame, decode raises
:class:`MalformedFrame` whose ``consumed`` reaches the next place a frame may start (the next start
marker, the byte after the next end marker of a line protocol, or the next known code byte of a
protocol without markers), and is always at least 1, so a decode loop cannot spin.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from device_drivers.errors import IncompleteFrame, MalformedFrame
from device_drivers.profiles.checksums import CHECKSUMS
from device_drivers.profiles.config import Framing


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

    # -- decoding ---------------------------------------------------------------------------------

    def decode(self, buffer: bytes | bytearray | memoryview) -> tuple[Frame, int]:
        """The first frame in ``buffer`` and how many bytes it took.

        Raises :class:`IncompleteFrame` when more bytes are needed, :class:`MalformedFrame` (with
        ``consumed`` >= 1) when the leading bytes must be dropped.
        """
        buf = bytes(buffer)
        if not buf:
            raise IncompleteFrame()
        if self._start:
            index = buf.find(self._start)
            if index < 0:
                drop = len(buf) - self._partial_suffix(buf, self._start)
                if drop == 0:
                    raise IncompleteFrame()
                raise MalformedFrame(
                    f"{drop} bytes before any start marker", code="garbage", consumed=drop, raw=buf[:drop]
                )
            if index > 0:
                raise MalformedFrame(
                    f"{index} bytes before the start marker", code="garbage", consumed=index, raw=buf[:index]
                )
        elif self._line_mode:
            # Line protocol: the line is the frame, whatever is wrong inside it.
            index = buf.find(self._end)
            if index < 0:
                if len(buf) >= self.framing.max_frame:
                    raise MalformedFrame(
                        f"no end marker within {len(buf)} bytes",
                        code="bad_length",
                        consumed=len(buf),
                        raw=buf,
                    )
                raise IncompleteFrame()
            buf = buf[: index + len(self._end)]
        try:
            return self._parse(buf)
        except _More:
            if self._line_mode:
                raise MalformedFrame(
                    "line shorter than a frame", code="bad_length", consumed=len(buf), raw=buf
                ) from None
            if len(buf) >= self.framing.max_frame:
                consumed = self._resync(buf)
                raise MalformedFrame(
                    f"no complete frame within {len(buf)} bytes",
                    code="bad_length",
                    consumed=consumed,
                    raw=buf[:consumed],
                ) from None
            raise IncompleteFrame() from None
        except _Bad as bad:
            # Even a frame whose markers line up may be a false start (a cut frame followed by the
            # next one): resynchronise on the next possible start rather than trust its extent.
            consumed = len(buf) if self._line_mode else self._resync(buf)
            raise MalformedFrame(str(bad), code=bad.code, consumed=consumed, raw=buf[:consumed]) from None

    @staticmethod
    def _partial_suffix(buf: bytes, marker: bytes) -> int:
        """Length of the longest tail of ``buf`` that is a proper prefix of ``marker``."""
        for size in range(min(len(marker) - 1, len(buf)), 0, -1):
            if marker.startswith(buf[-size:]):
                return size
        return 0

    def _resync(self, buf: bytes) -> int:
        """Offset (>= 1) of the next place a frame may start."""
        if self._start:
            index = buf.find(self._start, 1)
            if index > 0:
                return index
            return max(1, len(buf) - self._partial_suffix(buf, self._start))
        code_at = 1 if self.framing.address else 0
        for offset in range(1, len(buf)):
            if offset + code_at >= len(buf) or buf[offset + code_at] in self.code_sizes:
                return offset
        return len(buf)

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
    """What every codec offers: ``decode(buffer) -> (value, consumed)`` and ``encode(value) -> bytes``."""

    def decode(self, buffer: bytes | bytearray | memoryview) -> tuple[Any, int]: ...

    def encode(self, value: Any) -> bytes: ...


def drain(codec: Codec, buffer: bytearray) -> Iterator[Any]:
    """Decode every complete frame in ``buffer``, deleting the bytes consumed as it goes.

    Yields decoded values and, for bytes that had to be dropped, the :class:`MalformedFrame` itself
    (not raised), so a caller can log and count it and go on. Stops at an incomplete frame, whose
    bytes stay in ``buffer``. Each step consumes at least one byte, so this always ends.
    """
    while buffer:
        try:
            value, consumed = codec.decode(buffer)
        except IncompleteFrame:
            return
        except MalformedFrame as err:
            del buffer[: err.consumed]
            yield err
            continue
        del buffer[:consumed]
        yield value


__all__ = ["Codec", "Frame", "FrameCodec", "drain"]
