"""Secrets come from systemd credentials or the environment, never from the YAML file."""

from __future__ import annotations

import os
import re
from pathlib import Path

from edge_agent.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def credential_env_name(name: str) -> str:
    """``mqtt_password`` → ``EDGE_AGENT_MQTT_PASSWORD``."""
    return "EDGE_AGENT_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def read_credential(name: str) -> str | None:
    """The secret called ``name``: ``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``)
    first, then the environment variable ``EDGE_AGENT_<NAME>``; None when neither has it."""
    if not _NAME.match(name):
        raise ConfigError(f"credential name {name!r} is not a plain file name", code="bad_credential_name")
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        path = Path(directory) / name
        if path.is_file():
            return path.read_text().rstrip("\r\n")
    return os.environ.get(credential_env_name(name))


def credential_path(name: str) -> str | None:
    """A credential that a library wants as a file (a TLS key): its path in the credentials directory."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and _NAME.match(name) and (Path(directory) / name).is_file():
        return str(Path(directory) / name)
    return None
