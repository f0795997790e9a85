"""Sans-I/O codecs for card readers: EM4100-style ASCII readers (ID-12/ID-20, RDM6300),
line-based UID readers and Wiegand-to-serial converters, all driven by a firmware profile."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from device_drivers.card.credentials import normalise_hex, parse_wiegand_text, wiegand_credential
from device_drivers.errors import DeviceError, MalformedFrame
from device_drivers.profiles import wiegand
from device_drivers.profiles.config import FirmwareProfile, WiegandLayout
from device_drivers.profiles.framing import Frame, FrameCodec
from device_drivers.readings import CardRead


@dataclass(frozen=True, slots=True)
class CardData:
    """A card as a reader reported it, before it is stamped with device and time.

    ``credential`` is the normalised card number the roster matches: upper-case hex of the whole
    payload for EM4100 and UID readers, :func:`wiegand_credential` for Wiegand. ``raw_hex`` holds the
    payload bytes as received (for Wiegand: the bits, left-aligned), ``bits`` how many bits count.
    """

    credential: str
    card_format: str
    raw_hex: str
    bits: int
    facility_code: int | None = None
    card_number: int | None = None

    def to_read(self, device_id: str, at: datetime, received_ns: int) -> CardRead:
        """This card as the reading a driver hands to the agent."""
        return CardRead(
            device_id=device_id,
            credential=self.credential,
            card_format=self.card_format,
            facility_code=self.facility_code,
            card_number=self.card_number,
            raw_hex=self.raw_hex,
            bits=self.bits,
            at=at,
            received_ns=received_ns,
        )


class CardCodec:
    """Decode card frames to :class:`CardData` and back, per profile (families card_reader and
    wiegand_converter)."""

    def __init__(self, profile: FirmwareProfile) -> None:
        if profile.family not in ("card_reader", "wiegand_converter"):
            raise ValueError(f"profile {profile.id} is a {profile.family}, not a card reader")
        self.profile = profile
        self.frames = FrameCodec(profile.framing)
        self._layouts = {layout.bits: layout for layout in profile.wiegand.layouts} if profile.wiegand else {}

    def decode(self, buffer: bytes | bytearray | memoryview, start: int = 0) -> tuple[CardData, int]:
        """The first card in ``buffer[start:]`` and the bytes it took (see :meth:`FrameCodec.decode`)."""
        frame, consumed = self.frames.decode(buffer, start)
        try:
            card = self._wiegand(frame.data) if self.profile.wiegand else self._plain(frame.data)
        except _PayloadError as err:
            raise MalformedFrame(
                str(err), code=err.code, consumed=consumed, raw=bytes(buffer[start : start + consumed])
            ) from None
        return card, consumed

    def encode(self, card: CardData) -> bytes:
        """The frame a reader sends for ``card`` (built from ``raw_hex`` and ``bits``)."""
        raw = bytes.fromhex(card.raw_hex)
        data = bytes([card.bits]) + raw if self.profile.wiegand else raw
        return self.frames.encode(Frame(data=data))

    # -- building cards (simulators, tests) ------------------------------------------------------

    def card_from_hex(self, uid: str) -> CardData:
        """The card an EM4100/UID reader reports for this hex payload."""
        if self.profile.wiegand:
            raise ValueError("a Wiegand converter sends layouts: use card_from_fields")
        return self._plain(bytes.fromhex(normalise_hex(uid)))

    def card_from_fields(
        self, card_number: int, facility_code: int | None = None, bits: int = 26
    ) -> CardData:
        """The card a Wiegand converter reports for these fields, with correct parity."""
        layout = self.layout(bits)
        value = wiegand.build(layout, card_number, facility_code)
        return self._wiegand(bytes([bits]) + wiegand.pack(value, bits))

    def card_from_bits(self, bits: int, packed: bytes) -> CardData:
        """The card for raw Wiegand bits (left-aligned in ``packed``), as OSDP or a GPIO reader
        delivers them; :class:`DeviceError` with code ``unknown_layout``, ``parity`` or ``bad_length``."""
        if not 0 < bits < 256:
            raise DeviceError(f"{bits}-bit card data", code="bad_length")
        try:
            return self._wiegand(bytes([bits]) + packed)
        except _PayloadError as err:
            raise DeviceError(str(err), code=err.code) from None

    def layout(self, bits: int) -> WiegandLayout:
        """The profile's Wiegand layout for this bit count."""
        try:
            return self._layouts[bits]
        except KeyError:
            raise ValueError(f"profile {self.profile.id} has no {bits}-bit layout") from None

    # -- payloads ----------------------------------------------------------------------------------

    def _plain(self, data: bytes) -> CardData:
        spec = self.profile.card
        assert spec is not None
        lo, hi = spec.number_bytes or (0, len(data))
        facility = None
        if spec.facility_bytes is not None:
            facility = int.from_bytes(data[spec.facility_bytes[0] : spec.facility_bytes[1]], "big")
        return CardData(
            credential=data.hex().upper(),
            card_format=spec.format,
            raw_hex=data.hex().upper(),
            bits=len(data) * 8,
            facility_code=facility,
            card_number=int.from_bytes(data[lo:hi], "big"),
        )

    def _wiegand(self, data: bytes) -> CardData:
        if not data:
            raise _PayloadError("bad_length", "empty Wiegand payload")
        nbits, packed = data[0], data[1:]
        if len(packed) != (nbits + 7) // 8:
            raise _PayloadError("bad_length", f"{nbits} bits announced, {len(packed)} bytes follow")
        layout = self._layouts.get(nbits)
        if layout is None:
            raise _PayloadError("unknown_layout", f"no layout for {nbits}-bit frames")
        value = wiegand.unpack(packed, nbits)
        bad = wiegand.parity_errors(value, layout)
        if bad:
            raise _PayloadError(
                "parity", f"{layout.name}: parity bit(s) {bad} wrong in {packed.hex().upper()}"
            )
        facility = (
            None if layout.facility_code is None else wiegand.field(value, nbits, *layout.facility_code)
        )
        number = wiegand.field(value, nbits, *layout.card_number)
        return CardData(
            credential=wiegand_credential(facility, number),
            card_format=layout.name,
            raw_hex=packed.hex().upper(),
            bits=nbits,
            facility_code=facility,
            card_number=number,
        )


def card_from_text(codec: CardCodec, text: str) -> CardData:
    """A card written as text: hex for EM4100/UID readers; ``FC:NUMBER`` or ``NUMBER``, optionally
    followed by ``/BITS`` (default 26), for Wiegand layouts. ``ValueError`` if it does not fit."""
    if codec.profile.wiegand is None:
        return codec.card_from_hex(text)
    facility, number, bits = parse_wiegand_text(text)
    return codec.card_from_fields(number, facility, bits)


class _PayloadError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


__all__ = ["CardCodec", "CardData", "card_from_text"]
