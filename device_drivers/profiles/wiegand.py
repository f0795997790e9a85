"""Wiegand bit layouts: pure functions over an integer holding the bits.

Bit 0 is the first bit received and the most significant bit of the integer, which is how
Wiegand frames are written in datasheets (`P FFFFFFFF NNNNNNNNNNNNNNNN P` for H10301).
"""

from __future__ import annotations

from device_drivers.profiles.config import ParitySpec, WiegandLayout


def field(value: int, nbits: int, lo: int, hi: int) -> int:
    """The bits ``lo..hi`` (inclusive) of an ``nbits``-bit frame, as an unsigned integer."""
    return (value >> (nbits - 1 - hi)) & ((1 << (hi - lo + 1)) - 1)


def with_field(value: int, nbits: int, lo: int, hi: int, content: int) -> int:
    """``value`` with the bits ``lo..hi`` replaced by ``content`` (``ValueError`` if it does not fit)."""
    width = hi - lo + 1
    if not 0 <= content < 1 << width:
        raise ValueError(f"{content} does not fit in {width} bits")
    shift = nbits - 1 - hi
    mask = ((1 << width) - 1) << shift
    return (value & ~mask) | (content << shift)


def parity_bit(value: int, nbits: int, spec: ParitySpec) -> int:
    """The bit the parity at ``spec.bit`` must have for its range."""
    ones = bin(field(value, nbits, *spec.over)).count("1")
    return ones % 2 if spec.kind == "even" else 1 - ones % 2


def parity_errors(value: int, layout: WiegandLayout) -> list[int]:
    """Positions of the parity bits that do not match."""
    nbits = layout.bits
    return [p.bit for p in layout.parity if field(value, nbits, p.bit, p.bit) != parity_bit(value, nbits, p)]


def build(layout: WiegandLayout, card_number: int, facility_code: int | None = None) -> int:
    """The frame for these fields, with correct parity."""
    value = with_field(0, layout.bits, *layout.card_number, card_number)
    if layout.facility_code is not None:
        value = with_field(value, layout.bits, *layout.facility_code, facility_code or 0)
    elif facility_code:
        raise ValueError(f"layout {layout.name} has no facility code")
    for spec in layout.parity:
        value = with_field(value, layout.bits, spec.bit, spec.bit, parity_bit(value, layout.bits, spec))
    return value


def pack(value: int, nbits: int) -> bytes:
    """The bits left-aligned in whole bytes (first bit in the top bit of the first byte), zero padded."""
    size = (nbits + 7) // 8
    return (value << (size * 8 - nbits)).to_bytes(size, "big")


def unpack(data: bytes, nbits: int) -> int:
    """Inverse of :func:`pack` (padding bits are ignored)."""
    return int.from_bytes(data, "big") >> (len(data) * 8 - nbits)


__all__ = ["build", "field", "pack", "parity_bit", "parity_errors", "unpack", "with_field"]
