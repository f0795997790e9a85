"""The central ingest's errors; their root :class:`CentralError` is a :class:`sync.SyncError`."""

from __future__ import annotations

from sync.errors import SyncError


class CentralError(SyncError):
    """Anything that stops the central ingest from doing its job (bad settings, database refused).

    ``code`` is a short, stable, machine-readable reason, also used as a counter label. Bad *messages*
    never raise out of the consumer: they are dead-lettered and counted (see ``classify``).
    """

    def __init__(self, message: str, *, code: str = "central_error") -> None:
        super().__init__(message, code=code)


class MigrationError(CentralError):
    """A schema migration failed; the database is left as it was before that migration."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="migration_failed")


__all__ = ["CentralError", "MigrationError"]
