"""The local roster: master data from the centre, kept in SQLite, decided on from memory.

Gates decide from :class:`RosterIndex`, an immutable in-memory view, so a decision never touches
the disk or waits for a roster update. Snapshots and deltas are validated, checked for consistency,
written in one transaction and only then swapped in; a bad or out-of-order message changes nothing.

``roster.db`` is opened through :func:`sync.open_store`. A corrupt file (SQLite's check fails, or a
row does not decode) is moved aside and the roster comes back from ``roster.db.last-good``, a copy
made with SQLite's backup API after applied versions (:meth:`Roster.save_last_good`); when that
copy is unusable too, the roster starts empty and every card is denied until the centre resends it.

Large rosters (a 30 MB snapshot: ~166,000 people) must not pause the gates while they are taken in.
Three things held Python's GIL for long (measured in docs/performance/roster.md): validating the
message in one pydantic call (1.4 s), full passes of the cycle collector over the new objects
(0.5 s), and freeing the replaced index in one go (57 ms). So big messages are parsed in a child
process (:class:`IsolatedParser`), big builds run with the collector paused and their result frozen
out of its later passes (:func:`collector_paused`), and a replaced index is freed in small batches.
A snapshot sent in parts is taken in part by part (:class:`SnapshotStaging`) and applied like one
in a single message (:meth:`Roster.apply_staged`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import orjson
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
    RosterDeletes,
    RosterDelta,
    RosterSnapshot,
    Schedule,
    StoreRecovery,
    apply_migrations,
    check_integrity,
    move_aside,
    open_store,
    synchronous_of,
    utc_now,
)

log = logging.getLogger(__name__)

ROSTER_DB = "roster.db"
LAST_GOOD = ROSTER_DB + ".last-good"

ISOLATED_PARSE_BYTES = 32 * 1024
"""Roster messages larger than this are parsed in a child process. pydantic validates a message in
one call that holds the GIL throughout, about 60 ms per MB here: up to this size that is ~2 ms, a
delta of a few cards is far below it, and the child (~0.4 s to start) is paid only by big messages."""

_RETIRE_WAIT_S = 1.0
"""How long freeing a replaced index waits for readers (a decision, an API page) to let go of it;
after that it is freed whenever the last reader drops it."""
_RETIRE_POLL_S = 0.002
_YIELD_EVERY = 256
"""Items taken in between two pauses of a big intake (~1 ms of work at ~4 µs an item)."""
_YIELD_S = 0.0005
DEPARTED_MAX = 100_000
"""Most cards of departed persons :attr:`RosterIndex.departed` remembers (a few MB at most)."""


def _yield_gil() -> None:
    """Pause a big intake briefly. On a busy box the OS may deschedule a thread while it holds the
    GIL, and the whole process waits for it; a thread that holds the GIL only part of the time is
    caught holding it less often (measured: docs/performance/roster.md)."""
    time.sleep(_YIELD_S)


# collection name -> (table, model, key attribute)
_COLLECTIONS: dict[str, tuple[type[BaseModel], str]] = {
    "persons": (Person, "id"),
    "credentials": (Credential, "credential"),
    "access_groups": (AccessGroup, "id"),
    "schedules": (Schedule, "id"),
    "blocklist": (BlockedCredential, "credential"),
}
# The sections of a roster message, as the child process streams them back, item by item.
_CONTENT_MODELS: dict[str, type[BaseModel]] = {
    **{name: model for name, (model, _) in _COLLECTIONS.items()},
    "face_templates": FaceTemplate,
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
    departed: dict[str, str] = field(default_factory=dict)
    """Cards of persons who left the roster (card number -> their former person id), so a leaver's
    swipe is denied as ``person_not_in_roster`` rather than as a card never seen. Kept in memory
    only (a restart forgets it: the card is then an unknown one, still denied), at most
    :data:`DEPARTED_MAX` of them, the most recent."""

    @functools.cached_property
    def terminal_users(self) -> dict[str, str]:
        """``{terminal user id: person id}``, built on first use: plain ids (``4711``) and ids
        scoped to one terminal (``zk-office-1:17``), as master data lists them per person."""
        out: dict[str, str] = {}
        for person in self.persons.values():
            for user_id in person.terminal_user_ids:
                out.setdefault(user_id, person.id)
        return out

    def person_for_terminal_user(self, device_id: str, user_id: str) -> Person | None:
        """The person enrolled as ``user_id`` on terminal ``device_id``: the id scoped to this
        terminal first, then the plain id; None when no person holds it (never a guess)."""
        person_id = self.terminal_users.get(f"{device_id}:{user_id}") or self.terminal_users.get(user_id)
        return self.persons.get(person_id) if person_id is not None else None

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


Encoded = dict[str, dict[str, str]]
"""Rows of a message as ``roster.db`` stores them: collection -> key -> the item's JSON."""


class RosterCorrupt(Exception):
    """A roster file whose rows do not decode, or do not hang together (a damaged page SQLite's
    check did not see)."""


@dataclass(frozen=True)
class RosterRecovery:
    """``roster.db`` was corrupt at open: moved aside; the roster came from the last-known-good copy
    (``restored_version``) or, when that was unusable too, started empty (``restored_version`` None)."""

    storage: StoreRecovery
    restored_version: int | None
    last_good_error: str | None = None
    """Why the last-known-good copy was not used (missing, corrupt, ...), when it was not."""

    def event_data(self, *, resync_requested: bool) -> dict[str, object]:
        """The payload of ``edu.campus.gateway.storage_recovered.v1``."""
        return {
            **self.storage.event_data(),
            "restored_version": self.restored_version,
            "resync_requested": resync_requested,
        }


class Roster:
    """The roster store. ``index`` is what decisions use; :meth:`apply_snapshot` and
    :meth:`apply_delta` change it atomically (in the agent they run in a worker thread). ``on_person_removed``
    lets other stores (face templates) delete what belongs to a person who left. ``recovery`` says
    whether the file was found corrupt at open and what the roster came back from."""

    def __init__(self, data_dir: Path, *, now: Callable[[], datetime] = utc_now) -> None:
        self.on_applied: list[Callable[[ApplyResult], None]] = []
        """Called after every applied snapshot or delta, before ``on_person_removed`` (in the thread
        that applied it), with the persons who left: their data, and templates whose consent lapsed
        or was withdrawn, are deleted here (edge_agent.identity)."""
        self.path = data_dir / ROSTER_DB
        self.last_good_path = data_dir / LAST_GOOD
        self._now = now
        self._copying = threading.Lock()  # one copy at a time: a stop may overlap a copy under way
        self.recovery: RosterRecovery | None = None
        self.on_person_removed: list[Callable[[str], object]] = []  # what a hook returns is ignored
        self.on_face_templates: list[Callable[[FaceTemplateChange], None]] = []
        self._conn, moved = self._open()
        index: RosterIndex | None = None
        if moved is None:
            try:
                index = _load(self._conn)
            except RosterCorrupt as err:
                self._conn.close()
                moved_to = move_aside(self.path, now())
                log.error("roster store %s is corrupt (%s); moved it to %s", self.path, err, moved_to)
                moved = StoreRecovery("roster", self.path, moved_to, str(err))
                self._conn, _ = self._open()
        if moved is not None:
            index, why = self._restore_last_good()
            self.recovery = RosterRecovery(moved, index.version if index else None, why)
        self.index = index or RosterIndex()

    def _open(self) -> tuple[sqlite3.Connection, StoreRecovery | None]:
        # Master data: its durability does not follow the outbox's setting (sync.STORES).
        return open_store(
            "roster",
            self.path,
            MIGRATIONS,
            synchronous=synchronous_of("roster", "full"),
            now=self._now,
            # A person deleted (a leaver, a minor) is overwritten on disk, not left in free pages
            # that the last-known-good copy would carry along.
            pragmas=("secure_delete=ON",),
        )

    def close(self) -> None:
        self._conn.close()

    @property
    def version(self) -> int:
        return self.index.version

    # -- the last-known-good copy ------------------------------------------------------------------

    def _restore_last_good(self) -> tuple[RosterIndex | None, str | None]:
        """Copy a verified ``roster.db.last-good`` into the fresh store; returns the index, or None
        (and why) when there is no usable copy: then the roster is empty and every card is denied."""
        lkg = self.last_good_path
        if not lkg.exists():
            why = f"there is no last-known-good copy ({lkg.name})"
        else:
            try:
                index = self._copy_in(lkg)
            except (sqlite3.DatabaseError, RosterCorrupt) as err:
                moved_to = move_aside(lkg, self._now())
                why = f"the last-known-good copy is unusable too ({err}); moved it to {moved_to.name}"
            else:
                log.warning(
                    "roster restored from %s: version %d (%d persons, %d cards); a resync is requested",
                    lkg,
                    index.version,
                    len(index.persons),
                    len(index.credentials),
                )
                return index, None
        log.critical(
            "roster: %s. The roster starts EMPTY: every card is denied until the centre resends "
            "the snapshot (a resync is requested)",
            why,
        )
        return None, why

    def _copy_in(self, lkg: Path) -> RosterIndex:
        # Read-only and checked like the store itself before a single page of it is trusted.
        src = sqlite3.connect(f"file:{lkg}?mode=ro", uri=True, isolation_level=None)
        try:
            check_integrity(src)
            index = _load(src)
            src.backup(self._conn)
        finally:
            src.close()
        # A copy made by an older agent may lack later migrations.
        apply_migrations(self._conn, MIGRATIONS)
        return index

    def save_last_good(self) -> int:
        """Copy the committed roster to ``roster.db.last-good``; returns the version copied.

        SQLite's backup API copies one consistent committed version even while another is being
        written (a separate read connection), without holding the GIL. The copy is written beside
        it, checked, synced and renamed over the old one, so a crash leaves the old copy or the new
        one, never half of one. It is kept in rollback-journal mode: a single file, readable
        read-only without ``-wal``/``-shm`` files.
        """
        with self._copying:
            return self._save_last_good()

    def _save_last_good(self) -> int:
        lkg = self.last_good_path
        tmp = lkg.with_name(lkg.name + ".tmp")
        tmp.unlink(missing_ok=True)
        src = sqlite3.connect(self.path, isolation_level=None)
        try:
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
                check_integrity(dst)
                version = _stored_version(dst)
            finally:
                dst.close()
        finally:
            src.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, lkg)
        dir_fd = os.open(lkg.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        log.debug("roster version %d copied to %s", version, lkg)
        return version

    def last_good_version(self) -> int | None:
        """The version the last-known-good copy holds; None when there is none or it is unreadable."""
        if not self.last_good_path.exists():
            return None
        try:
            conn = sqlite3.connect(f"file:{self.last_good_path}?mode=ro", uri=True)
            try:
                return _stored_version(conn)
            finally:
                conn.close()
        except (sqlite3.DatabaseError, ValueError):
            return None

    def apply_snapshot(self, snapshot: RosterSnapshot, *, encoded: Encoded | None = None) -> ApplyResult:
        """Replace the whole roster with ``snapshot`` (any version; the centre decides). ``encoded``:
        its rows as stored, when already serialised (:class:`IsolatedParser`); consumed."""
        content = {
            name: {getattr(item, key): item for item in getattr(snapshot, name)}
            for name, (_, key) in _COLLECTIONS.items()
        }
        return self._replace(snapshot.version, content, snapshot.face_templates, encoded)

    def apply_staged(self, staged: SnapshotStaging) -> ApplyResult:
        """Replace the whole roster with a snapshot taken in part by part; the same checks, write
        and swap as :meth:`apply_snapshot`, from the staging's own tables (consumed)."""
        content, templates, encoded = staged.take()
        return self._replace(staged.version, content, templates, encoded)

    def _replace(
        self,
        version: int,
        content: dict[str, dict[str, Any]],
        templates: list[FaceTemplate],
        encoded: Encoded | None,
    ) -> ApplyResult:
        new = RosterIndex(version=version, **content)
        self._check(new, templates)
        # Item by item, not as set differences: one C call over 166,000 keys holds the GIL for it all.
        removed = tuple(sorted(p for p in self.index.persons if p not in new.persons))
        new.departed.update(_departed(self.index, new, set(removed)))
        self._write(new, replace=True, changed=content, deleted={}, encoded=encoded)
        return self._swap(new, "snapshot", removed, FaceTemplateChange(True, tuple(templates), ()))

    def apply_delta(self, delta: RosterDelta, *, encoded: Encoded | None = None) -> ApplyResult:
        """Apply one delta; it must continue from the version held, or nothing changes. ``encoded``:
        its upserted rows as stored, when already serialised."""
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
        new.departed.update(_departed(self.index, new, set(removed)))
        self._check(new, delta.upsert.face_templates)
        self._write(new, replace=False, changed=changed, deleted=deleted, encoded=encoded)
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
        encoded: Encoded | None,
    ) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for name, (_, key) in _COLLECTIONS.items():
                if replace:
                    conn.execute(f"DELETE FROM {name}")
                elif deleted.get(name):
                    conn.executemany(f"DELETE FROM {name} WHERE {key}=?", [(k,) for k in deleted[name]])
                insert = f"INSERT OR REPLACE INTO {name} ({key}, data) VALUES (?, ?)"
                for n, rows in enumerate(_row_batches(name, changed.get(name, {}), encoded)):
                    if n:
                        _yield_gil()
                    conn.executemany(insert, rows)
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
        from_version = self.index.version
        retired = [self.index]
        self.index = new
        if kind == "snapshot":  # after a delta the entries live on in the new index: only dicts go
            _retire(retired)
        if faces.replace_all or faces.upsert or faces.delete:
            for face_hook in self.on_face_templates:
                try:
                    face_hook(faces)
                except Exception:
                    log.exception("face templates of roster version %d were not stored", new.version)
        result = ApplyResult(kind, from_version, new.version, len(new.persons), len(new.credentials), removed)
        for applied_hook in self.on_applied:
            try:
                applied_hook(result)
            except Exception:
                log.exception("a follow-up of roster version %d failed", new.version)
        for person_id in removed:
            for hook in self.on_person_removed:
                try:
                    hook(person_id)
                except Exception:
                    log.exception("clean-up for person %s who left the roster failed", person_id)
        log.info(
            "roster %s applied: version %d -> %d (%d persons, %d cards)",
            kind,
            from_version,
            new.version,
            len(new.persons),
            len(new.credentials),
        )
        return result


class SnapshotStaging:
    """A snapshot sent in parts, taken in one part after another until the last has arrived.

    The entries are kept as they will be in the new index (the tables become its tables, nothing is
    copied), with their rows as ``roster.db`` stores them; what the parts hold counts against
    ``max_bytes`` like one message. Entries are checked per part by the parse; here only what spans
    parts: an entry given in two parts. Whether the parts come in order is the caller's concern.
    """

    def __init__(self, part_id: str, version: int, count: int, *, max_bytes: int) -> None:
        self.part_id = part_id
        self.version = version
        self.count = count
        self.next_index = 0
        self.max_bytes = max_bytes
        self.received_bytes = 0
        self._content: dict[str, dict[str, Any]] = {name: {} for name in _COLLECTIONS}
        self._templates: dict[str, FaceTemplate] = {}
        self._encoded: Encoded = {name: {} for name in _COLLECTIONS}

    @property
    def complete(self) -> bool:
        return self.next_index == self.count

    def add(self, part: RosterSnapshot, encoded: Encoded | None, size: int) -> None:
        """Take in the next part (``encoded``: its rows as stored, when the child serialised them;
        ``size``: the message's length). Raises :class:`RosterError` (rejected) when the parts grow
        over the limit or repeat an entry; the staging is then to be dropped."""
        self.received_bytes += size
        if self.received_bytes > self.max_bytes:
            raise RosterError(
                f"snapshot {self.part_id!r} in parts is over the limit of {self.max_bytes:,} bytes "
                f"(agent.roster_max_message_bytes) at part {self.next_index + 1} of {self.count}",
                result="rejected",
                code="too_large",
            )
        taken = 0
        for name, (_, key) in _COLLECTIONS.items():
            table, rows = self._content[name], self._encoded[name]
            given = encoded.get(name, {}) if encoded is not None else None
            for item in getattr(part, name):
                k = getattr(item, key)
                if k in table:
                    raise _repeated(name, k, self.next_index)
                table[k] = item
                rows[k] = given[k] if given is not None else item.model_dump_json()
                taken += 1
                if taken % _YIELD_EVERY == 0:
                    _yield_gil()
        for template in part.face_templates:
            if template.id in self._templates:
                raise _repeated("face_templates", template.id, self.next_index)
            self._templates[template.id] = template
        self.next_index += 1

    def take(self) -> tuple[dict[str, dict[str, Any]], list[FaceTemplate], Encoded]:
        """The tables, templates and rows, handed over (the staging is empty afterwards)."""
        taken = self._content, list(self._templates.values()), self._encoded
        self._content, self._templates, self._encoded = {}, {}, {}
        return taken


def _departed(old: RosterIndex, new: RosterIndex, removed: set[str]) -> dict[str, str]:
    """The departed cards the new index remembers: the old ones and those of the persons who left
    now, less any card the new roster gives out again, the newest :data:`DEPARTED_MAX`."""
    out = {c: p for c, p in old.departed.items() if c not in new.credentials}
    if removed:
        for number, cred in old.credentials.items():
            if cred.person_id in removed and number not in new.credentials:
                out.pop(number, None)  # re-inserted: the most recent departure last
                out[number] = cred.person_id
    if len(out) > DEPARTED_MAX:
        out = dict(itertools.islice(out.items(), len(out) - DEPARTED_MAX, None))
    return out


def _repeated(name: str, key: str, index: int) -> RosterError:
    return RosterError(
        f"invalid roster message: {name} entry {key!r} of part {index + 1} was given in an earlier part",
        result="rejected",
        code="invalid_roster",
    )


def _retire(box: list[RosterIndex]) -> None:
    """Free a replaced index (``box`` holds the only reference the caller keeps) a batch at a time.

    Dropped in one go, a 166,000-person index is freed in one C-level cascade that holds the GIL for
    57–164 ms. Its dicts and entries are kept alive here first; once no reader (a decision, an API
    page, an enrollment) holds the index any more, the dicts go one by one and then the entries in
    batches. The index is never modified: a reader still holding it sees it whole.
    """
    old = box.pop()
    if len(old.persons) + len(old.credentials) < _YIELD_EVERY:
        return
    entries = [list(getattr(old, name).values()) for name in _COLLECTIONS]
    tables = [getattr(old, name) for name in _COLLECTIONS]
    gone = weakref.ref(old)
    del old
    for _ in range(int(_RETIRE_WAIT_S / _RETIRE_POLL_S)):
        if gone() is None:
            break
        time.sleep(_RETIRE_POLL_S)
    while tables:  # one dict at a time; each only lets go of entries still held above
        tables.pop()
        _yield_gil()
    for batch in entries:
        while batch:
            del batch[-_YIELD_EVERY:]
            _yield_gil()


def _row_batches(
    name: str, changed: dict[str, BaseModel], encoded: Encoded | None
) -> Iterator[list[tuple[str, str]]]:
    """The rows of ``name`` to write, a batch at a time, built (and freed) a batch at a time: a list
    of 166,000 rows, made or dropped in one go, holds the GIL for ~10 ms. ``encoded`` rows are
    consumed."""
    done = encoded.pop(name, None) if encoded is not None else None
    if done is not None:
        while done:
            yield [done.popitem() for _ in range(min(_YIELD_EVERY, len(done)))]
        return
    items = iter(changed.items())
    while batch := [(k, item.model_dump_json()) for k, item in itertools.islice(items, _YIELD_EVERY)]:
        yield batch


def _stored_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key='version'").fetchone()
    return int(row[0]) if row else 0


def _load(conn: sqlite3.Connection) -> RosterIndex:
    """Read the whole roster into an index; raises :class:`RosterCorrupt` when a row does not
    decode, is filed under another key than its own, or the whole does not hang together."""
    loaded: dict[str, dict[str, BaseModel]] = {}
    with collector_paused():
        try:
            for name, (model, key) in _COLLECTIONS.items():
                rows: dict[str, BaseModel] = {}
                for k, data in conn.execute(f"SELECT {key}, data FROM {name}"):
                    item = model.model_validate_json(data)
                    if getattr(item, key) != k:
                        raise ValueError(f"{name} row {k!r} holds {getattr(item, key)!r}")
                    rows[k] = item
                loaded[name] = rows
            index = RosterIndex(version=_stored_version(conn), **loaded)  # type: ignore[arg-type]
            index.check()
        except (ValidationError, ValueError, TypeError) as err:
            raise RosterCorrupt(f"a roster row does not decode: {err}".splitlines()[0]) from err
    return index


class _Collector:
    """Pauses Python's cycle collector while big indexes are built (see :func:`collector_paused`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = True

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1
        built = False
        try:
            yield
            built = True
        finally:
            with self._lock:
                if built:
                    gc.freeze()
                self._holders -= 1
                if self._holders == 0 and self._was_enabled:
                    gc.enable()


_COLLECTOR = _Collector()


def collector_paused() -> contextlib.AbstractContextManager[None]:
    """Build a big index without the cycle collector's full passes, and keep it out of later ones.

    A full pass over a 30 MB roster's ~2 million new objects held the GIL for ~0.5 s. Roster
    models form no reference cycles, so reference counting frees them anyway; what is alive when
    the build succeeds is frozen (``gc.freeze``), so later passes skip it. The cost: a reference
    cycle alive at that moment and dropped later is never collected (a few objects per big
    roster update, not per message).
    """
    return _COLLECTOR.paused()


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


_CHILD = [sys.executable, "-c", "from edge_agent.roster import stage_main; stage_main()"]


class IsolatedParser:
    """Parses roster messages in a child process, so this process never holds the GIL for long.

    The child runs :func:`parse_roster_message` (the same validation, the same errors) and streams
    each validated message back one item per line (:func:`stage_main`); here each item is decoded by
    itself, a call of microseconds, and the message is put together without validating it again.
    The child serves one message after another until :meth:`close` (a snapshot in parts would pay
    its ~0.4 s start for every part otherwise). :meth:`kill` (from another thread, when the agent
    stops) ends a parse under way.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None

    def parse(self, payload: bytes) -> tuple[RosterSnapshot | RosterDelta, Encoded]:
        """The message and its rows as stored (the child's JSON of each item: serialising 330,000
        items again took ~1.2 s of GIL). Blocking (call it in a worker thread); raises
        :class:`RosterError` like the in-process parse."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(_CHILD, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(len(payload).to_bytes(8, "big"))
            proc.stdin.write(payload)
            proc.stdin.flush()
            staged = _read_staged(proc.stdout)  # a RosterError: the child said why, and serves on
        except OSError:
            staged = None  # the child is gone; its exit status says why
        if staged is None:
            self.close()
            raise RosterError(
                f"the roster parser process failed (exit status {proc.returncode}); nothing changed",
                result="rejected",
                code="parser_failed",
            )
        return staged

    @property
    def running(self) -> bool:
        """Whether a child process is up (parsing or waiting for the next message)."""
        return self._proc is not None

    def close(self) -> None:
        """End the child (blocking: from a worker thread); the next parse starts a new one."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        proc.wait()

    def kill(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.kill()


def _read_staged(stream: IO[bytes]) -> tuple[RosterSnapshot | RosterDelta, Encoded] | None:
    """The message :func:`stage_main` streamed; None when the stream ends early (the child died)."""
    try:
        header = orjson.loads(stream.readline())
    except orjson.JSONDecodeError:
        return None
    if "error" in header:
        raise RosterError(header["error"], result=header["result"], code=header["code"])
    items: dict[str, list[Any]] = {}
    encoded: Encoded = {}
    complete = False
    for n, line in enumerate(stream):
        if line == b"end\n":
            complete = True
            break
        if n % _YIELD_EVERY == 0:
            _yield_gil()
        tag, _, body = line.rstrip(b"\n").partition(b"\t")
        section, _, name = tag.decode().partition(".")
        bucket = items.setdefault(f"{section}.{name}", [])
        if section == "delete":
            bucket.append(orjson.loads(body))
            continue
        item = _CONTENT_MODELS[name].model_validate_json(body)
        bucket.append(item)
        if name in _COLLECTIONS:
            encoded.setdefault(name, {})[getattr(item, _COLLECTIONS[name][1])] = body.decode()
    if not complete:
        return None

    def content(section: str) -> dict[str, Any]:
        return {name: items.get(f"{section}.{name}", []) for name in _CONTENT_MODELS}

    # Validated whole by the child; validating the assembled lists again would hold the GIL for it all.
    message: RosterSnapshot | RosterDelta
    if header["kind"] == "snapshot":
        shell = RosterSnapshot.model_validate(header)  # the header alone: its part, if any
        message = RosterSnapshot.model_construct(
            kind="snapshot", version=shell.version, part=shell.part, **content("content")
        )
    else:
        message = RosterDelta.model_construct(
            kind="delta",
            from_version=header["from_version"],
            version=header["version"],
            upsert=RosterContent.model_construct(**content("upsert")),
            delete=RosterDeletes.model_construct(**content("delete")),
        )
    return message, encoded


def stage_main() -> None:
    """The child of :class:`IsolatedParser`: roster messages on stdin, each an 8-byte big-endian
    length and the message; for each, on stdout, a header line (the message's kind, versions and
    part, or its error), one ``section.collection<TAB>json`` line per item, and ``end``. Exits when
    stdin closes."""
    # Below the agent's threads: on a busy box the CPU goes to the gates first.
    os.nice(10)
    source, out = sys.stdin.buffer, sys.stdout.buffer
    while len(size := source.read(8)) == 8:
        payload = source.read(int.from_bytes(size, "big"))
        _stage(payload, out)
        out.flush()


def _stage(payload: bytes, out: IO[bytes]) -> None:
    try:
        message = parse_roster_message(payload)
    except RosterError as err:
        out.write(orjson.dumps({"error": str(err), "result": err.result, "code": err.code}) + b"\n")
        return
    sections: list[tuple[str, RosterContent]]
    if isinstance(message, RosterSnapshot):
        header: dict[str, Any] = {"kind": "snapshot", "version": message.version}
        if message.part is not None:
            header["part"] = message.part.model_dump()
        out.write(orjson.dumps(header) + b"\n")
        sections = [("content", message)]
    else:
        header = {"kind": "delta", "from_version": message.from_version, "version": message.version}
        out.write(orjson.dumps(header) + b"\n")
        sections = [("upsert", message.upsert)]
        for name in _CONTENT_MODELS:
            for key in getattr(message.delete, name):
                out.write(f"delete.{name}\t".encode() + orjson.dumps(key) + b"\n")
    for section, content in sections:
        for name in _CONTENT_MODELS:
            tag = f"{section}.{name}\t".encode()
            for item in getattr(content, name):
                out.write(tag + item.model_dump_json().encode() + b"\n")
    out.write(b"end\n")


__all__ = [
    "DEPARTED_MAX",
    "ISOLATED_PARSE_BYTES",
    "LAST_GOOD",
    "ApplyResult",
    "Encoded",
    "FaceTemplateChange",
    "IsolatedParser",
    "Roster",
    "RosterContent",
    "RosterError",
    "RosterIndex",
    "RosterRecovery",
    "SnapshotStaging",
    "collector_paused",
    "parse_roster_message",
    "stage_main",
]
