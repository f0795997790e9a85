"""Firmware profiles: the pydantic model of ``firmware_profiles/*.yaml`` (read by
:mod:`device_drivers.profiles.loader`). A config leaf: pydantic and the stdlib only.

A profile describes one device model/firmware completely enough that the generic codecs
(:mod:`device_drivers.profiles.framing`, :mod:`device_drivers.card.codec`,
:mod:`device_drivers.turnstile.codec`) speak its bytes without vendor-specific code: serial settings,
framing, checksum, commands as byte templates, event and status codes, timing, and golden frames
that the test suite decodes and re-encodes.

A frame is always laid out in this order, each part optional except ``data``::

    start | address | length | code | data | checksum | end
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

ChecksumName = Literal["xor", "sum8", "crc16_modbus", "crc16_ccitt"]
"""The checksums :mod:`device_drivers.profiles.checksums` implements, as profiles name them."""


def _parse_hex(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        # An unquoted 02 in YAML is the integer 2: refuse rather than guess.
        raise ValueError("hex bytes must be a quoted string such as '02' or '0d 0a'")
    text = re.sub(r"\s+|0x|:", "", value.strip(), flags=re.IGNORECASE)
    if len(text) % 2:
        raise ValueError(f"odd number of hex digits in {value!r}")
    try:
        return bytes.fromhex(text)
    except ValueError as err:
        raise ValueError(f"not hex: {value!r}") from err


HexBytes = Annotated[bytes, BeforeValidator(_parse_hex)]
"""Bytes written in YAML as a quoted hex string; spaces, ``:`` and ``0x`` are ignored."""

Byte = Annotated[int, Field(ge=0, le=255)]
Part = Literal["address", "length", "code", "data", "checksum"]
Direction = Literal["entry", "exit"]
Family = Literal["card_reader", "wiegand_converter", "turnstile"]
CommandName = Literal["open", "hold_open", "lock", "normal"]
EventName = Literal[
    "passage_done",
    "passage_timeout",
    "forced",
    "tailgating",
    "fire_alarm",
    "door_held_open",
    "fault",
    "ack",
    "nak",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RS485Settings(_Model):
    """RS-485 bus settings."""

    address: Byte = Field(description="The device's address on the bus (the first byte of addressed frames).")
    turnaround_ms: float = Field(
        default=0.0,
        ge=0,
        description="Pause after the last byte sent before the device may answer (half duplex).",
    )


class Transport(_Model):
    """Serial line settings, passed to pyserial."""

    baudrate: int = Field(default=9600, gt=0, description="Line speed in bits per second.")
    bytesize: Literal[5, 6, 7, 8] = Field(default=8, description="Data bits per character.")
    parity: Literal["N", "E", "O", "M", "S"] = Field(
        default="N", description="Parity bit: pyserial's letter."
    )
    stopbits: float = Field(default=1, description="Stop bits per character: 1, 1.5 or 2.")
    rs485: RS485Settings | None = Field(default=None, description="Present for RS-485 multi-drop devices.")

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stop bits are 1, 1.5 or 2")
        return value


class LengthSpec(_Model):
    """A length prefix: how many bytes it takes and which parts it counts."""

    size: Literal[1, 2] = Field(default=1, description="Bytes taken by the length field.")
    byteorder: Literal["big", "little"] = Field(default="big", description="Byte order of a two-byte length.")
    counts: list[Literal["address", "code", "data", "checksum"]] = Field(
        description="The parts whose byte count the length field holds (at least `data`)."
    )
    adjust: int = Field(
        default=0, description="Added to the counted size before it is written (some firmware adds 1)."
    )


class DataSpec(_Model):
    """The payload part of the frame."""

    encoding: Literal["binary", "ascii_hex"] = Field(
        default="binary", description="`ascii_hex`: every payload byte is sent as two ASCII hex digits."
    )
    size: int | None = Field(
        default=None,
        ge=0,
        description="Fixed payload size in (decoded) bytes. Omit when a length prefix, the command/event "
        "code, or the end marker gives it.",
    )
    sizes: list[int] | None = Field(
        default=None,
        description="Allowed payload sizes in (decoded) bytes when the size varies (line-based readers).",
    )
    hex_case: Literal["upper", "lower"] = Field(
        default="upper", description="Case used when encoding ASCII hex."
    )


class ChecksumSpec(_Model):
    """The frame check."""

    algorithm: ChecksumName = Field(description="One of " + ", ".join(sorted(get_args(ChecksumName))) + ".")
    covers: list[Literal["address", "length", "code", "data"]] = Field(
        description="Parts fed to the checksum, in frame order; ASCII hex parts are fed decoded."
    )
    encoding: Literal["binary", "ascii_hex"] = Field(default="binary", description="How the value is sent.")
    byteorder: Literal["big", "little"] = Field(
        default="big",
        description="Byte order of a 16-bit value (CRC-16/MODBUS goes low byte first: `little`).",
    )


class Framing(_Model):
    """How frames are delimited on the wire."""

    start: HexBytes | None = Field(
        default=None, description="Start marker (STX), hex; decoding resynchronises on it."
    )
    address: bool = Field(default=False, description="A one-byte RS-485 address follows the start marker.")
    length: LengthSpec | None = Field(default=None, description="A length prefix, if the protocol has one.")
    code: bool = Field(default=False, description="A one-byte command/event code precedes the payload.")
    data: DataSpec = Field(description="The payload.")
    checksum: ChecksumSpec | None = Field(default=None, description="The frame check, if any.")
    end: HexBytes | None = Field(
        default=None, description="End marker, hex: ETX, a line delimiter (CR LF) or both (`0d0a03`)."
    )
    max_frame: int = Field(
        default=64, gt=0, le=4096, description="No valid frame is longer; bounds buffering."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Framing:
        present = {"data"} | {p for p in ("address", "code") if getattr(self, p)}
        if self.length is not None:
            present.add("length")
            if "data" not in self.length.counts:
                raise ValueError("length.counts must include data")
            missing = set(self.length.counts) - present - {"checksum"}
            if missing or ("checksum" in self.length.counts and self.checksum is None):
                raise ValueError(f"length.counts names parts the frame does not have: {sorted(missing)}")
        if self.checksum is not None and set(self.checksum.covers) - present:
            raise ValueError(
                "checksum.covers names parts the frame does not have: "
                f"{sorted(set(self.checksum.covers) - present)}"
            )
        if self.data.size is not None and self.length is not None:
            raise ValueError("give data.size or a length prefix, not both")
        if self.data.encoding == "ascii_hex" and self.length is not None:
            raise ValueError("a length prefix with an ASCII hex payload is not supported")
        if self.data.size is None and self.length is None and not self.code and self.end is None:
            raise ValueError(
                "the payload size is unknown: give data.size, a length prefix, a code or an end marker"
            )
        if self.start is None and self.end is None and not self.code:
            raise ValueError("a frame without start or end marker needs a code to resynchronise on")
        return self

    @property
    def size_from(self) -> Literal["fixed", "length", "code", "end"]:
        """Where the payload size comes from."""
        if self.data.size is not None:
            return "fixed"
        if self.length is not None:
            return "length"
        if self.end is not None and not self.code:
            return "end"
        return "code"


class CardSpec(_Model):
    """How a serial card reader's payload becomes a card number."""

    format: str = Field(description="The card format label put on every read (`em4100`, `uid`...).")
    facility_bytes: tuple[int, int] | None = Field(
        default=None, description="Payload byte slice [from, to) holding the facility/version code, if any."
    )
    number_bytes: tuple[int, int] | None = Field(
        default=None,
        description="Payload byte slice [from, to) holding the card number; default: the whole payload.",
    )


class ParitySpec(_Model):
    """One parity bit of a Wiegand layout (bit 0 is the first bit received)."""

    bit: int = Field(ge=0, description="Position of the parity bit.")
    kind: Literal["even", "odd"] = Field(
        description="Even: the covered bits plus this one hold an even count of ones."
    )
    over: tuple[int, int] = Field(description="Inclusive range of bit positions the parity covers.")


class WiegandLayout(_Model):
    """A Wiegand card layout: fields and parity as bit ranges."""

    name: str = Field(description="Card format label (`H10301`...).")
    bits: int = Field(gt=0, le=128, description="Frame length in bits; selects the layout.")
    facility_code: tuple[int, int] | None = Field(
        default=None, description="Inclusive bit range of the facility code."
    )
    card_number: tuple[int, int] = Field(description="Inclusive bit range of the card number.")
    parity: list[ParitySpec] = Field(default_factory=list, description="Parity bits, checked on decode.")

    @model_validator(mode="after")
    def _in_range(self) -> WiegandLayout:
        ranges = [self.card_number, *(p.over for p in self.parity)]
        if self.facility_code is not None:
            ranges.append(self.facility_code)
        for lo, hi in ranges:
            if not 0 <= lo <= hi < self.bits:
                raise ValueError(f"bit range [{lo}, {hi}] outside a {self.bits}-bit frame")
        for parity in self.parity:
            if parity.bit >= self.bits or parity.over[0] <= parity.bit <= parity.over[1]:
                raise ValueError(f"parity bit {parity.bit} outside the frame or inside its own range")
        return self


class WiegandSpec(_Model):
    """A Wiegand-to-serial converter: the payload is one bit-count byte, then the bits, first bit
    received in the most significant bit of the first byte, padded with zeros to whole bytes."""

    layouts: list[WiegandLayout] = Field(min_length=1, description="Known layouts, selected by bit count.")

    @model_validator(mode="after")
    def _unique(self) -> WiegandSpec:
        counts = [layout.bits for layout in self.layouts]
        if len(counts) != len(set(counts)):
            raise ValueError("two layouts with the same bit count")
        return self


_TEMPLATE_TOKEN = re.compile(r"^(?:[0-9a-fA-F]{2}|\{direction\}|\{value\})$")


class MessageSpec(_Model):
    """One command or event: its code and its payload as a byte template.

    The template is space-separated tokens: a literal hex byte (`01`), `{direction}` (one byte from
    the profile's direction table) or `{value}` (one byte, e.g. a fault code).
    """

    name: str = Field(description="What it means.")
    code: Byte = Field(description="The code byte.")
    direction: Direction | None = Field(
        default=None, description="A direction fixed by this code (open A / open B)."
    )
    data: str = Field(default="", description="Payload template.")

    @model_validator(mode="after")
    def _template(self) -> MessageSpec:
        for token in self.tokens:
            if not _TEMPLATE_TOKEN.match(token):
                raise ValueError(f"bad template token {token!r} (hex byte, {{direction}} or {{value}})")
        if self.direction is not None and "{direction}" in self.tokens:
            raise ValueError("a fixed direction and a {direction} placeholder")
        return self

    @property
    def tokens(self) -> list[str]:
        return self.data.split()


class CommandSpec(MessageSpec):
    name: CommandName = Field(description="open, hold_open, lock or normal.")


class EventSpec(MessageSpec):
    name: EventName = Field(description="Event kind reported to the agent.")


class TurnstileSpec(_Model):
    """Commands the gateway sends and events the turnstile reports."""

    directions: dict[Direction, Byte] = Field(
        description="Byte used for each passage direction (A = entry, B = exit)."
    )
    commands: list[CommandSpec] = Field(description="Commands, as byte templates.")
    events: list[EventSpec] = Field(description="Events and status replies.")
    fault_codes: dict[int, str] = Field(
        default_factory=dict, description="Names of the `{value}` byte of a fault event."
    )

    @model_validator(mode="after")
    def _complete(self) -> TurnstileSpec:
        for direction in self.directions:
            if not any(
                c.name == "open" and (c.direction == direction or "{direction}" in c.tokens)
                for c in self.commands
            ):
                raise ValueError(f"no open command for direction {direction}")
        for name in ("lock", "hold_open"):
            if not any(c.name == name for c in self.commands):
                raise ValueError(f"no {name} command")
        if not any(e.name == "passage_done" for e in self.events):
            raise ValueError("no passage_done event")
        sizes: dict[int, int] = {}
        seen: set[tuple[int, str]] = set()
        for message in [*self.commands, *self.events]:
            if sizes.setdefault(message.code, len(message.tokens)) != len(message.tokens):
                raise ValueError(f"code 0x{message.code:02X} has templates of different lengths")
            literal = " ".join(t if not t.startswith("{") else "??" for t in message.tokens).lower()
            if (message.code, literal) in seen:
                raise ValueError(f"code 0x{message.code:02X} with template {message.data!r} is ambiguous")
            seen.add((message.code, literal))
        return self

    def code_sizes(self) -> dict[int, int]:
        """Payload size of every known code."""
        return {m.code: len(m.tokens) for m in [*self.commands, *self.events]}


class Timing(_Model):
    """Timing the device expects or guarantees."""

    pulse_ms: int = Field(
        default=500, gt=0, description="Length of an open/unlock pulse (relays, door strikes)."
    )
    passage_window_s: float = Field(default=8.0, gt=0, description="Time a person has to pass after an open.")
    response_timeout_ms: int = Field(
        default=200, gt=0, description="How long the device may take to acknowledge."
    )
    inter_byte_timeout_ms: int = Field(
        default=50, gt=0, description="A silence this long inside a frame means the frame was cut."
    )


class GoldenFrame(_Model):
    """A frame as captured from the device (or its manual) and what it must decode to."""

    hex: HexBytes = Field(description="The frame bytes, hex.")
    expect: dict[str, str | int | None] = Field(description="Fields of the decoded value and their values.")
    note: str = Field(default="", description="Where the frame comes from.")


class BadFrame(_Model):
    """A frame the codec must reject, and the error code it must give."""

    hex: HexBytes = Field(description="The bytes, hex.")
    error: str = Field(description="Expected MalformedFrame code (bad_checksum, parity...).")
    note: str = Field(default="", description="What is wrong with it.")


class FirmwareProfile(_Model):
    """One device model/firmware."""

    id: str = Field(pattern=r"^[a-z0-9_]+$", description="Profile id; by convention the file's stem.")
    family: Family = Field(description="Which codec speaks it.")
    vendor: str = Field(description="Manufacturer or protocol family.")
    model: str = Field(description="Device model(s) this profile fits.")
    firmware: str = Field(default="any", description="Firmware versions this profile was written against.")
    description: str = Field(default="", description="Free text.")
    transport: Transport = Field(default=Transport(), description="Serial line settings.")
    framing: Framing = Field(description="Frame layout.")
    card: CardSpec | None = Field(default=None, description="Card reader payload (family card_reader).")
    wiegand: WiegandSpec | None = Field(
        default=None, description="Wiegand layouts (family wiegand_converter)."
    )
    turnstile: TurnstileSpec | None = Field(
        default=None, description="Commands and events (family turnstile)."
    )
    timing: Timing = Field(default=Timing(), description="Timing.")
    golden: list[GoldenFrame] = Field(
        min_length=1, description="Frames that must decode and re-encode exactly."
    )
    bad_frames: list[BadFrame] = Field(default_factory=list, description="Frames that must be rejected.")

    @model_validator(mode="after")
    def _family_section(self) -> FirmwareProfile:
        needed = {"card_reader": "card", "wiegand_converter": "wiegand", "turnstile": "turnstile"}[
            self.family
        ]
        for section in ("card", "wiegand", "turnstile"):
            if (getattr(self, section) is not None) != (section == needed):
                raise ValueError(f"family {self.family} needs the `{needed}` section and no other")
        if self.framing.size_from == "code" and (self.turnstile is None or not self.framing.code):
            raise ValueError("payload size by code needs a turnstile section and framing.code")
        if self.family == "turnstile" and not self.framing.code:
            raise ValueError("turnstile frames need a code byte")
        return self


__all__ = [
    "BadFrame",
    "CardSpec",
    "ChecksumName",
    "ChecksumSpec",
    "CommandSpec",
    "DataSpec",
    "Direction",
    "EventSpec",
    "FirmwareProfile",
    "Framing",
    "GoldenFrame",
    "LengthSpec",
    "MessageSpec",
    "ParitySpec",
    "RS485Settings",
    "Timing",
    "Transport",
    "TurnstileSpec",
    "WiegandLayout",
    "WiegandSpec",
]
