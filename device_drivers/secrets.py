"""Device secrets (keys) from systemd credentials or the environment, never from the YAML."""

from __future__ import annotations

import os
from pathlib import Path

from device_drivers.errors import DeviceError


def load_secret(name: str) -> bytes:
    """A 16-byte key written as 32 hex digits, from ``$CREDENTIALS_DIRECTORY/<name>`` (systemd
    credentials) or else the environment variable ``<name>``."""
    text = None
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / name).is_file():
        text = (Path(directory) / name).read_text()
    elif name in os.environ:
        text = os.environ[name]
    if text is None:
        raise DeviceError(
            f"secret {name} not found in $CREDENTIALS_DIRECTORY or the environment", code="no_key"
        )
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise DeviceError(f"secret {name} is not hex", code="bad_key") from None
    if len(key) != 16:
        raise DeviceError(f"secret {name} holds {len(key)} bytes, an SCBK has 16", code="bad_key")
    return key


__all__ = ["load_secret"]
