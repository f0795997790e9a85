"""Frame checksums used by device firmware: pure functions over bytes.

Each algorithm is named as the firmware profiles name it (``xor``, ``sum8``, ``crc16_modbus``,
``crc16_ccitt``); :data:`CHECKSUMS` maps the name to the function and its width in bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from device_drivers.profiles.config import ChecksumName


def xor8(data: bytes) -> int:
    """XOR of every byte (EM4100 readers, many turnstile protocols)."""
    value = 0
    for byte in data:
        value ^= byte
    return value


def sum8(data: bytes) -> int:
    """Sum of every byte modulo 256."""
    return sum(data) & 0xFF


def _reflected_table(poly: int) -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def _msb_first_table(poly: int) -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n << 8
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


# 0xA001 is 0x8005 bit-reversed: MODBUS processes bits least significant first.
_MODBUS_TABLE = _reflected_table(0xA001)
_CCITT_TABLE = _msb_first_table(0x1021)


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: poly 0x8005 reflected, init 0xFFFF, no final XOR (check value 0x4B37).

    On the wire it is sent low byte first.
    """
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _MODBUS_TABLE[(crc ^ byte) & 0xFF]
    return crc


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (a.k.a. CRC-16/IBM-3740): poly 0x1021, init 0xFFFF, not reflected,
    no final XOR (check value 0x29B1). On the wire it is usually sent high byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CCITT_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


@dataclass(frozen=True, slots=True)
class Checksum:
    """A named checksum: the function and how many bytes its value takes."""

    name: ChecksumName
    function: Callable[[bytes], int]
    width: int


CHECKSUMS: dict[str, Checksum] = {
    "xor": Checksum("xor", xor8, 1),
    "sum8": Checksum("sum8", sum8, 1),
    "crc16_modbus": Checksum("crc16_modbus", crc16_modbus, 2),
    "crc16_ccitt": Checksum("crc16_ccitt", crc16_ccitt, 2),
}

__all__ = ["CHECKSUMS", "Checksum", "ChecksumName", "crc16_ccitt", "crc16_modbus", "sum8", "xor8"]
