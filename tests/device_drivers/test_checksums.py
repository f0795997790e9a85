"""Checksums against the catalogue check values (the CRC of b"123456789")."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_drivers.profiles.checksums import CHECKSUMS, crc16_ccitt, crc16_modbus, sum8, xor8

CHECK = b"123456789"


def test_crc16_modbus_check_value() -> None:
    assert crc16_modbus(CHECK) == 0x4B37


def test_crc16_ccitt_false_check_value() -> None:
    assert crc16_ccitt(CHECK) == 0x29B1


def test_crc16_modbus_of_a_real_request() -> None:
    # Read holding registers, slave 1, address 0, 1 register: 01 03 00 00 00 01 84 0A (CRC low byte first).
    assert crc16_modbus(bytes.fromhex("010300000001")).to_bytes(2, "little") == bytes.fromhex("840a")


def test_xor_and_sum8() -> None:
    assert xor8(CHECK) == 0x31
    assert sum8(CHECK) == 0xDD
    # ID-12 datasheet example: card 62 E3 08 6C ED has checksum 08.
    assert xor8(bytes.fromhex("62E3086CED")) == 0x08
    assert xor8(b"") == 0 and sum8(b"") == 0


@pytest.mark.parametrize("name", sorted(CHECKSUMS))
def test_empty_input_and_width(name: str) -> None:
    checksum = CHECKSUMS[name]
    assert 0 <= checksum.function(b"") < 256**checksum.width


@settings(deadline=None)  # shared CI machine: no per-example time limit
@given(st.binary(max_size=64))
def test_crc_detects_every_single_bit_flip(data: bytes) -> None:
    for function in (crc16_modbus, crc16_ccitt):
        value = function(data)
        for index in range(len(data)):
            flipped = bytearray(data)
            flipped[index] ^= 1 << (index % 8)
            assert function(bytes(flipped)) != value


@settings(deadline=None)  # shared CI machine: no per-example time limit
@given(st.binary(max_size=64))
def test_xor_appended_gives_zero(data: bytes) -> None:
    assert xor8(data + bytes([xor8(data)])) == 0
