"""Device secrets (keys) from systemd credentials or the environment, never from the YAML."""

from __future__ import annotations

import os
import re
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


def load_password(name: str) -> str:
    """A device's password (or comm key) as text, found where the agent finds its credentials:
    ``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``), else the environment variable
    ``EDGE_AGENT_<NAME>`` (``hik_gate_password`` -> ``EDGE_AGENT_HIK_GATE_PASSWORD``); the file's
    trailing newline is dropped."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / name).is_file():
        return (Path(directory) / name).read_text().rstrip("\r\n")
    env = "EDGE_AGENT_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    if env in os.environ:
        return os.environ[env]
    raise DeviceError(f"password {name} not found in $CREDENTIALS_DIRECTORY or ${env}", code="no_password")


__all__ = ["load_password", "load_secret"]
