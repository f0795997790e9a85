# HELPERS: before editing anything, read /work/main/HELPER_RULES.md (common rules: paths, commits, deadline 15:25 UTC). Remove this line never; the lead removes it.
"""Device protocols: sans-I/O codecs, drivers over pyserial port URLs, and simulators."""

from device_drivers.errors import DeviceError

__all__ = ["DeviceError"]
