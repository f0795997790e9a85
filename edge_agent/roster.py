"""The local roster: master data from the centre, kept in SQLite, decided on from memory.

Gates decide from :class:`RosterIndex`, an immutable in-memory view, so a decision never touches
the disk or waits for a roster update. Snapshots and deltas are validated, checked for consistency,
written in one transaction and only then swapped in; a bad or out-of-order message changes nothing.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlite_utils
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from edge_agent.errors import AgentError
from sync import (
    AccessGroup,
    BlockedCredential,
    Credential,
    FaceTemplate,
    Migration,
    Person,
    RosterContent,
    RosterDelta,
    RosterSnapshot,
    Schedule,
    apply_migrations,
)

log = logging.getLogger(__name__)

ROSTER_DB = "roster.db"

# collection name -> (table, model, key attribute)
_COLLECTIONS: dict[str, tuple[type[BaseModel], str]] = {
    "persons": (Person, "id"),
    "credentials": (Credential, "credential"),
    "access_groups": (AccessGroup, "id"),
    "schedules": (Schedule, "id"),
    "blocklist": (BlockedCredential, "credential"),
}


class RosterError(AgentError):
    """A roster message that cannot be applied; ``result`` is what the reply says."""

    def __init__(
        self, message: str, *, result: Literal["rejected", "resync_needed", "ignored"], code: str
    ) -> None:
        super().__init__(message, code=code)
        self.result = result
        self.kind: str | None = None
        """Which kind of message was refused (snapshot, delta), once it parsed that far."""
        self.requested_version: int | None = None


@dataclass(frozen=True)
class RosterIndex:
    """An immutable view of the roster that decisions read without locks."""

    version: int = 0
    persons: dict[str, Person] = field(default_factory=dict)
    credentials: dict[str, Credential] = field(default_factory=dict)
    access_groups: dict[str, AccessGroup] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    blocklist: dict[str, BlockedCredential] = field(default_factory=dict)

    def check(self) -> None:
        """Referential integrity; raises ValueError naming the first broken reference."""
        for cred in self.credentials.values():
            if cred.person_id not in self.persons:
                raise ValueError(f"card {cred.credential} belongs to unknown person {cred.person_id}")
        for group in self.access_groups.values():
            if group.schedule is not None and group.schedule not in self.schedules:
                raise ValueError(f"access group {group.id} uses unknown schedule {group.schedule}")


def _migration_1(db: sqlite_utils.Database) -> None:
    for name, (_, key) in _COLLECTIONS.items():
        db[name].create({key: str, "data": str}, pk=key)  # type: ignore[union-attr]
    db["meta"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]


MIGRATIONS: list[Migration] = [("0001_roster_initial", _migration_1)]


@dataclass(frozen=True)
class FaceTemplateChange:
    """Face templates in a roster message; they go to the encrypted template store, not to this one."""

    replace_all: bool
    upsert: tuple[FaceTemplate, ...]
    delete: tuple[str, ...]


@dataclass(frozen=True)
class ApplyResult:
    kind: Literal["snapshot", "delta"]
    from_version: int
    version: int
    persons: int
    credentials: int
    removed_persons: tuple[str, ...] = ()


class Roster:
    """The roster store. ``index`` is what decisions use; :meth:`apply_snapshot` and
    :meth:`apply_delta` change it atomically. ``on_person_removed`` lets other stores (face
    templates) delete what belongs to a person who left."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ROSTER_DB
        data_dir.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        apply_migrations(self._conn, MIGRATIONS)
        self.index = self._load()
        self.on_person_removed: list[Callable[[str], None]] = []
        self.on_face_templates: list[Callable[[FaceTemplateChange], None]] = []

    def close(self) -> None:
        self._conn.close()

    @property
    def version(self) -> int:
        return self.index.version

    def _load(self) -> RosterIndex:
        loaded: dict[str, dict[str, BaseModel]] = {}
        for name, (model, _) in _COLLECTIONS.items():
            loaded[name] = {
                key: model.model_validate_json(data)
                for key, data in self._conn.execute(f"SELECT * FROM {name}")
            }
        row = self._conn.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        return RosterIndex(version=int(row[0]) if row else 0, **loaded)  # type: ignore[arg-type]

    def apply_snapshot(self, snapshot: RosterSnapshot) -> ApplyResult:
        """Replace the whole roster with ``snapshot`` (any version; the centre decides)."""
        content = {
            name: {getattr(item, key): item for item in getattr(snapshot, name)}
            for name, (_, key) in _COLLECTIONS.items()
        }
        new = RosterIndex(version=snapshot.version, **content)
        self._check(new, snapshot.face_templates)
        removed = tuple(sorted(set(self.index.persons) - set(new.persons)))
        self._write(new, replace=True, changed=content, deleted={})
        return self._swap(
            new, "snapshot", removed, FaceTemplateChange(True, tuple(snapshot.face_templates), ())
        )

    def apply_delta(self, delta: RosterDelta) -> ApplyResult:
        """Apply one delta; it must continue from the version held, or nothing changes."""
        held = self.index.version
        if delta.version <= held:
            raise RosterError(
                f"delta to version {delta.version} is not newer than version {held}; ignored",
                result="ignored",
                code="stale_delta",
            )
        if delta.from_version != held:
            raise RosterError(
                f"delta {delta.from_version}->{delta.version} does not follow version {held}; "
                "a full snapshot is needed",
                result="resync_needed",
                code="version_gap",
            )
        current = {name: dict(getattr(self.index, name)) for name in _COLLECTIONS}
        deleted: dict[str, set[str]] = {name: set(getattr(delta.delete, name)) for name in _COLLECTIONS}
        removed = tuple(sorted(p for p in deleted["persons"] if p in current["persons"]))
        # A person who leaves takes every card with them.
        for cred in current["credentials"].values():
            if cred.person_id in deleted["persons"]:
                deleted["credentials"].add(cred.credential)
        changed: dict[str, dict[str, BaseModel]] = {}
        for name, (_, key) in _COLLECTIONS.items():
            for k in deleted[name]:
                current[name].pop(k, None)
            changed[name] = {getattr(item, key): item for item in getattr(delta.upsert, name)}
            current[name].update(changed[name])
        new = RosterIndex(version=delta.version, **current)
        self._check(new, delta.upsert.face_templates)
        self._write(new, replace=False, changed=changed, deleted=deleted)
        faces = FaceTemplateChange(
            False, tuple(delta.upsert.face_templates), tuple(delta.delete.face_templates)
        )
        return self._swap(new, "delta", removed, faces)

    def _check(self, new: RosterIndex, templates: list[FaceTemplate]) -> None:
        try:
            new.check()
            for template in templates:
                if template.person_id not in new.persons:
                    raise ValueError(
                        f"face template {template.id} belongs to unknown person {template.person_id}"
                    )
        except ValueError as err:
            raise RosterError(str(err), result="rejected", code="inconsistent_roster") from err

    def _write(
        self,
        new: RosterIndex,
        *,
        replace: bool,
        changed: dict[str, dict[str, BaseModel]],
        deleted: dict[str, set[str]],
    ) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for name, (_, key) in _COLLECTIONS.items():
                if replace:
                    conn.execute(f"DELETE FROM {name}")
                elif deleted.get(name):
                    conn.executemany(f"DELETE FROM {name} WHERE {key}=?", [(k,) for k in deleted[name]])
                rows = [(k, item.model_dump_json()) for k, item in changed.get(name, {}).items()]
                conn.executemany(f"INSERT OR REPLACE INTO {name} ({key}, data) VALUES (?, ?)", rows)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('version', ?)", (str(new.version),)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _swap(
        self,
        new: RosterIndex,
        kind: Literal["snapshot", "delta"],
        removed: tuple[str, ...],
        faces: FaceTemplateChange,
    ) -> ApplyResult:
        old = self.index
        self.index = new
        if faces.replace_all or faces.upsert or faces.delete:
            for face_hook in self.on_face_templates:
                try:
                    face_hook(faces)
                except Exception:
                    log.exception("face templates of roster version %d were not stored", new.version)
        for person_id in removed:
            for hook in self.on_person_removed:
                try:
                    hook(person_id)
                except Exception:
                    log.exception("clean-up for person %s who left the roster failed", person_id)
        log.info(
            "roster %s applied: version %d -> %d (%d persons, %d cards)",
            kind,
            old.version,
            new.version,
            len(new.persons),
            len(new.credentials),
        )
        return ApplyResult(kind, old.version, new.version, len(new.persons), len(new.credentials), removed)


def person_data(person: Person) -> dict[str, Any]:
    """The person as events carry it: id, name, role and class group (one identity everywhere)."""
    return {"id": person.id, "name": person.name, "role": person.role, "group": person.group}


_ROSTER_MESSAGE: TypeAdapter[RosterSnapshot | RosterDelta] = TypeAdapter(
    Annotated[RosterSnapshot | RosterDelta, Field(discriminator="kind")]
)


def parse_roster_message(payload: bytes) -> RosterSnapshot | RosterDelta:
    """Validate a roster message; raises :class:`RosterError` (rejected) with the first problem."""
    try:
        return _ROSTER_MESSAGE.validate_json(payload)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RosterError(
            f"invalid roster message at {where or '<root>'}: {first['msg']} ({err.error_count()} problem(s))",
            result="rejected",
            code="invalid_roster",
        ) from err


__all__ = [
    "ApplyResult",
    "FaceTemplateChange",
    "Roster",
    "RosterContent",
    "RosterError",
    "RosterIndex",
    "parse_roster_message",
]
