"""JPEG test pictures for the camera tests: real encodes, and a packet broken in a known way."""

from __future__ import annotations

SOS = b"\xff\xda"
"""The start-of-scan marker: the picture's data follows it."""


def without_scan(data: bytes) -> bytes:
    """A JPEG's headers only, cut before its scan: the header still gives the size, the picture
    does not decode (how a packet truncated in transit looks to the camera driver)."""
    return data[: data.index(SOS)]
