"""The one root exception of the device drivers package, and its children."""

from __future__ import annotations

from pathlib import Path


class DeviceError(Exception):
    """Anything that went wrong talking to a device.

    ``device_id`` names the device (as configured) where known; ``code`` is a short, stable,
    machine-readable reason used as a metric label (``bad_checksum``, ``parity``, ``timeout``...).
    """

    def __init__(self, message: str, *, device_id: str | None = None, code: str = "device_error") -> None:
        super().__init__(message)
        self.device_id = device_id
        self.code = code


class IncompleteFrame(DeviceError):
    """The buffer holds the beginning of a frame (or nothing): feed more bytes and decode again."""

    def __init__(self, message: str = "incomplete frame", *, device_id: str | None = None) -> None:
        super().__init__(message, device_id=device_id, code="incomplete")


class MalformedFrame(DeviceError):
    """The bytes at the start of the buffer are not a valid frame.

    ``consumed`` (always at least 1) is how many bytes to drop before decoding again, so a decode loop
    always makes progress; ``raw`` holds the first of those bytes (64 at most: a drop can span a
    megabyte of noise) for the log. ``code`` is one of ``garbage``,
    ``bad_checksum``, ``bad_length``, ``bad_framing``, ``bad_data``, ``parity``, ``unknown_code``,
    ``unknown_layout``.
    """

    def __init__(
        self, message: str, *, code: str, consumed: int, raw: bytes = b"", device_id: str | None = None
    ) -> None:
        super().__init__(message, device_id=device_id, code=code)
        if consumed < 1:
            raise ValueError("a malformed frame must consume at least one byte")
        self.consumed = consumed
        self.raw = raw


class ProfileError(DeviceError):
    """A firmware profile that cannot be read or does not validate; the message names the file,
    the field path and, where known, the YAML line."""

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message, code="bad_profile")
        self.path = None if path is None else Path(path)


class CameraError(DeviceError):
    """A camera configuration or source that cannot work (code ``bad_camera_url``...)."""


__all__ = ["CameraError", "DeviceError", "IncompleteFrame", "MalformedFrame", "ProfileError"]
