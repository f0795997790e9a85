"""The one root exception of the sync package."""

from __future__ import annotations


class SyncError(Exception):
    """Anything that went wrong in the outbox, the envelope or the MQTT link.

    ``code`` is a short, stable, machine-readable reason used as a metric label.
    """

    def __init__(self, message: str, *, code: str = "sync_error") -> None:
        super().__init__(message)
        self.code = code
