"""The one root exception of the device drivers package."""

from __future__ import annotations


class DeviceError(Exception):
    """Anything that went wrong talking to a device.

    ``device_id`` names the device (as configured) where known; ``code`` is a short, stable,
    machine-readable reason used as a metric label (``bad_checksum``, ``parity``, ``timeout``...).
    """

    def __init__(self, message: str, *, device_id: str | None = None, code: str = "device_error") -> None:
        super().__init__(message)
        self.device_id = device_id
        self.code = code
