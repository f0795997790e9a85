"""Device protocols: sans-I/O codecs, drivers over pyserial port URLs, and simulators."""

from device_drivers.errors import DeviceError

__all__ = ["DeviceError"]
