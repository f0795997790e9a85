"""The agent's errors: one root, :class:`AgentError`, with a stable machine-readable ``code``."""

from __future__ import annotations


class AgentError(Exception):
    """Anything the agent refuses or cannot do; ``code`` is a stable machine-readable reason."""

    def __init__(self, message: str, *, code: str = "agent_error") -> None:
        super().__init__(message)
        self.code = code


class ConfigError(AgentError):
    """A configuration (file, credential, key, token table) the agent cannot run with."""

    def __init__(self, message: str, *, code: str = "config_error") -> None:
        super().__init__(message, code=code)
