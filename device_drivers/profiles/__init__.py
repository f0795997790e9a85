"""Firmware profiles: the validated model of ``firmware_profiles/*.yaml``, the frame envelope codec
it drives, the checksums and Wiegand bit layouts. Pure: no I/O beyond reading profile files, no
asyncio, so device configs and codecs of every family can import it."""

from device_drivers.profiles.checksums import CHECKSUMS, Checksum, ChecksumName
from device_drivers.profiles.config import Direction, FirmwareProfile, Transport, WiegandLayout
from device_drivers.profiles.framing import Codec, Frame, FrameCodec, drain
from device_drivers.profiles.loader import load_profile, parse_profile, resolve_profile

__all__ = [
    "CHECKSUMS",
    "Checksum",
    "ChecksumName",
    "Codec",
    "Direction",
    "FirmwareProfile",
    "Frame",
    "FrameCodec",
    "Transport",
    "WiegandLayout",
    "drain",
    "load_profile",
    "parse_profile",
    "resolve_profile",
]
