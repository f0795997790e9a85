"""JPEG test pictures for the camera tests: real encodes, and a packet broken in a known way."""

from __future__ import annotations

SOS = b"\xff\xda"
"""The start-of-scan marker: the picture's data follows it."""


def without_scan(data: bytes) -> bytes:
    """A JPEG's headers only, cut before its scan: the header still gives the size, the picture
    does not decode (how a packet truncated in transit looks to the camera driver)."""
    return data[: data.index(SOS)]


def declaring(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF) changed to declare ``width`` x ``height``: a few
    kilobytes that claim a huge picture (a decompression bomb, or a camera's firmware bug)."""
    out = bytearray(data)
    i = 2
    while out[i + 1] not in (0xC0, 0xC1, 0xC2):  # walk the segments up to the frame header
        i += 2 + int.from_bytes(out[i + 2 : i + 4], "big")
    out[i + 5 : i + 7] = height.to_bytes(2, "big")
    out[i + 7 : i + 9] = width.to_bytes(2, "big")
    return bytes(out)
