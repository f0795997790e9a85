"""The one root exception of the agent."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration the agent cannot run with; ``code`` is a stable machine-readable reason."""

    def __init__(self, message: str, *, code: str = "config_error") -> None:
        super().__init__(message)
        self.code = code
