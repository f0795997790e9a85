"""Face templates at rest: embeddings only, AES-256-GCM encrypted, deleted with their person.

Templates are biometric data of minors. The key comes from credentials (``face_template_key``:
64 hex digits or 32 bytes base64), never from the configuration file; without it the gateway does
not store or load templates at all. Each ciphertext is bound to its row (template id, person and
model as associated data), so rows cannot be swapped between people on disk.

One gallery, one key: a key-check row (a constant encrypted under the key, written when the store is
created) makes a store opened with another key fail at once with ``template_key_mismatch``, even
when it holds no template yet, instead of mixing templates under two keys. :func:`rotate_key`
re-encrypts the whole gallery under a new key into a new file and renames it over the old one, so a
crash at any moment leaves either the old gallery (old key) or the new one (new key), never a mix.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import sqlite_utils
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from ulid import ULID

from edge_agent.errors import ConfigError
from sync import DamagedRows, Migration, open_store, utc_now

log = logging.getLogger(__name__)

FACES_DB = "faces.db"
ROTATING_DB = "faces.db.rotating"
"""Where :func:`rotate_key` writes the re-encrypted gallery before renaming it over ``faces.db``."""

_KEY_CHECK_PLAIN = b"edge-agent face templates key check v1"
_KEY_CHECK_AAD = b"key-check"
ROTATE_PAUSE_ENV = "EDGE_AGENT_TEST_ROTATE_PAUSE_S"
"""TEST ONLY: seconds :func:`rotate_key` sleeps after each re-encrypted row, so a test can SIGKILL it
halfway deterministically. Never set it on a gateway."""


class TemplateKeyError(ConfigError):
    """The template key is missing or malformed."""


def parse_key(text: str | None, credential: str) -> bytes:
    """A 32-byte key from 64 hex digits or base64; raises :class:`TemplateKeyError` saying why."""
    if not text:
        raise TemplateKeyError(
            f"face templates need the {credential!r} credential (32 random bytes as 64 hex digits): "
            "put it in "
            f"$CREDENTIALS_DIRECTORY/{credential} or the environment; generate one with "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`",
            code="template_key_missing",
        )
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as err:
        raise TemplateKeyError(
            f"the {credential!r} credential is neither hex nor base64", code="template_key_bad"
        ) from err
    if len(key) != 32:
        raise TemplateKeyError(
            f"the {credential!r} credential must be 32 bytes, not {len(key)}", code="template_key_bad"
        )
    return key


@dataclass(frozen=True, slots=True)
class StoredTemplate:
    id: str
    person_id: str
    model_id: str
    source: Literal["enrolled", "centre"]
    embedding: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """What may be shown of a template: never its vector."""

    id: str
    person_id: str
    model_id: str
    source: str
    created_at: float


def _migration_1(db: sqlite_utils.Database) -> None:
    db["templates"].create(  # type: ignore[union-attr]
        {
            "id": str,
            "person_id": str,
            "model_id": str,
            "source": str,
            "nonce": bytes,
            "ciphertext": bytes,
            "created_at": float,
        },
        pk="id",
        not_null={"person_id", "model_id", "source", "nonce", "ciphertext", "created_at"},
    )
    db["templates"].create_index(["person_id"])  # type: ignore[union-attr]


def _migration_2(db: sqlite_utils.Database) -> None:
    # One row: a constant encrypted under the key (see the module docstring). Written at the first
    # open after this migration; a legacy store is checked against its rows first.
    db["key_check"].create({"id": int, "nonce": bytes, "ciphertext": bytes}, pk="id")  # type: ignore[union-attr]
    # Audit records of enrollments made outside the agent (``edge-agent enroll --force``): the
    # running agent publishes them as gateway.audit events at its next start or reload, then deletes them.
    db["audit_pending"].create({"id": int, "data": str}, pk="id")  # type: ignore[union-attr]


MIGRATIONS: list[Migration] = [("0001_faces_initial", _migration_1), ("0002_faces_key_check", _migration_2)]


def _mismatch(path: Path) -> TemplateKeyError:
    return TemplateKeyError(
        f"the face template key does not open the gallery in {path}: it was made under another key. "
        "Put the key the gallery was made with back in the credential, or move the gallery aside to "
        "start empty (every face must then be enrolled again); to change keys use "
        "`edge-agent faces rotate-key`",
        code="template_key_mismatch",
    )


def key_opens(conn: sqlite3.Connection, aead: AESGCM) -> bool | None:
    """Whether the key of ``aead`` opens the gallery in ``conn`` (read only): its key-check row, or,
    in a store made before that row, its template rows (one that opens is enough: others may be
    damaged). None when there is nothing to tell by (no key-check row, no template)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    row = (
        conn.execute("SELECT nonce, ciphertext FROM key_check WHERE id=1").fetchone()
        if ("key_check" in tables)
        else None
    )
    if row is not None:
        try:
            return bool(aead.decrypt(row[0], row[1], _KEY_CHECK_AAD) == _KEY_CHECK_PLAIN)
        except (InvalidTag, TypeError, ValueError):
            return False
    if "templates" not in tables:
        return None
    tried = False
    for tid, person, model, nonce, ciphertext in conn.execute(
        "SELECT id, person_id, model_id, nonce, ciphertext FROM templates"
    ):
        tried = True
        try:
            aead.decrypt(nonce, ciphertext, FaceTemplateStore._aad(tid, person, model))
        except (InvalidTag, TypeError, ValueError):
            continue
        return True
    return False if tried else None


class FaceTemplateStore:
    """Encrypted template rows in ``faces.db``; ``undecryptable`` counts rows the key cannot open.

    A corrupt ``faces.db`` is moved aside at open and the store starts empty (``recovery`` says so);
    the centre's templates come back with the next roster snapshot, enrolled ones must be enrolled
    again. The file moved aside still holds only ciphertext.
    """

    def __init__(
        self,
        data_dir: Path,
        key: bytes,
        *,
        synchronous: Literal["full", "normal"] = "full",
        now: Callable[[], datetime] = utc_now,
        filename: str = FACES_DB,
    ) -> None:
        """Raises :class:`TemplateKeyError` ``template_key_mismatch`` when ``key`` does not open the
        gallery already in the file (no template or key-check row is written then)."""
        self.path = data_dir / filename
        self._aead = AESGCM(key)
        self._conn, self.recovery = open_store(
            "faces",
            self.path,
            MIGRATIONS,
            synchronous=synchronous,
            now=now,
            # Deleted templates are overwritten on disk, not just unlinked from the b-tree.
            pragmas=("secure_delete=ON",),
        )
        self.damaged = DamagedRows("faces")
        """Rows the key cannot open (wrong key, tampered or damaged on disk): counted and skipped."""
        try:
            self._check_key()
        except BaseException:
            self._conn.close()
            raise

    def _check_key(self) -> None:
        opens = key_opens(self._conn, self._aead)
        if opens is False:
            raise _mismatch(self.path)
        if opens is True and self._conn.execute("SELECT 1 FROM key_check WHERE id=1").fetchone():
            return
        nonce = os.urandom(12)
        self._conn.execute(
            "INSERT INTO key_check (id, nonce, ciphertext) VALUES (1, ?, ?)",
            (nonce, self._aead.encrypt(nonce, _KEY_CHECK_PLAIN, _KEY_CHECK_AAD)),
        )

    @property
    def undecryptable(self) -> int:
        return self.damaged.count

    def close(self) -> None:
        self._conn.close()

    @staticmethod
    def _aad(template_id: str, person_id: str, model_id: str) -> bytes:
        return f"{template_id}\0{person_id}\0{model_id}".encode()

    def add(
        self,
        person_id: str,
        embedding: npt.NDArray[np.floating] | list[float],
        model_id: str,
        source: Literal["enrolled", "centre"],
        template_id: str | None = None,
        *,
        created_at: float | None = None,
    ) -> str:
        """Store one template (replacing a template with the same id); returns its id."""
        template_id = template_id or f"t-{ULID()}"
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        nonce = os.urandom(12)
        ciphertext = self._aead.encrypt(nonce, vector.tobytes(), self._aad(template_id, person_id, model_id))
        self._conn.execute(
            "INSERT OR REPLACE INTO templates "
            "(id, person_id, model_id, source, nonce, ciphertext, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                template_id,
                person_id,
                model_id,
                source,
                nonce,
                ciphertext,
                time.time() if created_at is None else created_at,
            ),
        )
        return template_id

    def info(self, person_id: str) -> list[TemplateInfo]:
        """Metadata of a person's templates, oldest first (for listing: no vector, no decryption)."""
        rows = self._conn.execute(
            "SELECT id, person_id, model_id, source, created_at FROM templates WHERE person_id=? "
            "ORDER BY created_at, id",
            (person_id,),
        )
        return [TemplateInfo(*row) for row in rows]

    def count_person(self, person_id: str) -> int:
        return int(
            self._conn.execute("SELECT count(*) FROM templates WHERE person_id=?", (person_id,)).fetchone()[0]
        )

    def queue_audit(self, data: dict[str, object]) -> None:
        """Keep an audit record of an enrollment made outside the agent, for the agent to publish."""
        self._conn.execute("INSERT INTO audit_pending (data) VALUES (?)", (json.dumps(data),))

    def take_audits(self, publish: Callable[[dict[str, object]], None]) -> int:
        """Hand each queued audit record to ``publish`` (which must not raise once it has it), then
        delete it; returns how many."""
        rows = self._conn.execute("SELECT id, data FROM audit_pending ORDER BY id").fetchall()
        for row_id, data in rows:
            publish(json.loads(data))
            self._conn.execute("DELETE FROM audit_pending WHERE id=?", (row_id,))
        return len(rows)

    def delete_person(self, person_id: str) -> int:
        cur = self._conn.execute("DELETE FROM templates WHERE person_id=?", (person_id,))
        if cur.rowcount:
            log.info("deleted %d face templates of person %s", cur.rowcount, person_id)
        return cur.rowcount

    def delete(self, template_ids: Iterable[str]) -> int:
        cur = self._conn.executemany("DELETE FROM templates WHERE id=?", [(t,) for t in template_ids])
        return cur.rowcount

    def delete_source(self, source: Literal["enrolled", "centre"]) -> int:
        return self._conn.execute("DELETE FROM templates WHERE source=?", (source,)).rowcount

    def templates(self, model_id: str | None = None) -> list[StoredTemplate]:
        """Decrypted templates (of one model, or all); rows the key cannot open are counted and skipped."""
        query = "SELECT id, person_id, model_id, source, nonce, ciphertext FROM templates"
        args: tuple[str, ...] = ()
        if model_id is not None:
            query += " WHERE model_id=?"
            args = (model_id,)
        out = []
        for tid, person, model, source, nonce, ciphertext in self._conn.execute(query, args):
            # A row garbled on disk fails here like a tampered one: the tag binds nonce, row and key.
            try:
                plain = self._aead.decrypt(nonce, ciphertext, self._aad(tid, person, model))
            except InvalidTag:
                self.damaged.note(str(tid), ValueError("not decryptable: wrong key, or a tampered row"))
                continue
            except (TypeError, ValueError) as err:  # a nonce or ciphertext of the wrong type or size
                self.damaged.note(str(tid), err)
                continue
            out.append(
                StoredTemplate(tid, person, model, source, np.frombuffer(plain, dtype=np.float32).copy())
            )
        return out

    def count_by_model(self) -> dict[str, int]:
        return dict(
            self._conn.execute("SELECT model_id, count(*) FROM templates GROUP BY model_id").fetchall()
        )

    def person_ids(self) -> set[str]:
        """The persons holding at least one template on disk (any model, decryptable or not): what
        the status digest proves deletions by. Read from the index, no decryption."""
        return {row[0] for row in self._conn.execute("SELECT DISTINCT person_id FROM templates")}

    def held(self) -> set[tuple[str, str]]:
        """``(template id, person id)`` of every template on disk, from the index (no decryption)."""
        return {(tid, pid) for tid, pid in self._conn.execute("SELECT id, person_id FROM templates")}


class RotationError(TemplateKeyError):
    """A key rotation that was refused or could not finish; the old gallery is untouched."""


@dataclass(frozen=True, slots=True)
class RotationResult:
    templates: int
    dropped_damaged: int


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rotate_key(
    data_dir: Path,
    old_key: bytes,
    new_key: bytes,
    *,
    drop_damaged: bool = False,
    progress: Callable[[int, int], None] | None = None,
    actor: str = "unknown",
) -> RotationResult:
    """Re-encrypt the gallery in ``data_dir`` from ``old_key`` to ``new_key``, atomically.

    The new gallery (templates, the audit records waiting for the agent, and one of this rotation by
    ``actor``) is written to :data:`ROTATING_DB` beside ``faces.db``, checkpointed, closed and
    fsynced, then renamed over ``faces.db`` (and the directory fsynced): a SIGKILL before the rename
    leaves the old gallery as it was (the half-written file is ignored and replaced by the next
    rotation), after it the new one. Refused (:class:`RotationError`, or ``template_key_mismatch``)
    when the old key does not open the gallery, when rows cannot be decrypted (unless
    ``drop_damaged``), or while another process (the agent) has the gallery open: its writes
    would go to the old file.
    """
    path = data_dir / FACES_DB
    if not path.exists():
        raise RotationError(f"no face gallery in {data_dir} to rotate", code="no_gallery")
    old = FaceTemplateStore(data_dir, old_key)
    try:
        rows = old._conn.execute(
            "SELECT id, person_id, model_id, source, nonce, ciphertext, created_at FROM templates ORDER BY id"
        ).fetchall()
        plain: list[tuple[str, str, str, str, bytes, float]] = []
        damaged = 0
        for tid, person, model, source, nonce, ciphertext, created_at in rows:
            try:
                vector = old._aead.decrypt(nonce, ciphertext, old._aad(tid, person, model))
            except (InvalidTag, TypeError, ValueError):
                damaged += 1
                continue
            plain.append((tid, person, model, source, vector, created_at))
        # Audit records the CLI left for the agent to publish go along (they are not secret).
        audits = [json.loads(d) for (d,) in old._conn.execute("SELECT data FROM audit_pending ORDER BY id")]
        if damaged and not drop_damaged:
            raise RotationError(
                f"{damaged} of {len(rows)} face templates cannot be decrypted with the old key (damaged "
                "or tampered rows); rotate with --drop-damaged to leave them behind",
                code="template_rows_damaged",
            )
    finally:
        old.close()
    # Our connection was the last one if closing it checkpointed and removed the WAL file.
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        raise RotationError(
            f"{wal} is still there: another process (the running agent?) has the face gallery open. "
            "Stop the agent, then rotate the key",
            code="gallery_in_use",
        )
    for leftover in data_dir.glob(ROTATING_DB + "*"):  # a rotation killed before its rename
        leftover.unlink()
    pause = float(os.environ.get(ROTATE_PAUSE_ENV) or 0)
    new = FaceTemplateStore(data_dir, new_key, filename=ROTATING_DB)
    try:
        for n, (tid, person, model, source, vector, created_at) in enumerate(plain, start=1):
            embedding = np.frombuffer(vector, dtype=np.float32)
            new.add(person, embedding, model, source, tid, created_at=created_at)  # type: ignore[arg-type]
            if progress is not None:
                progress(n, len(plain))
            if pause:
                time.sleep(pause)
        for record in audits:
            new.queue_audit(record)
        # The rotation itself, published by the agent at its next start like the others.
        left = f", {damaged} damaged left behind" if damaged else ""
        new.queue_audit(
            {
                "actor": actor,
                "role": "admin",
                "via": "cli",
                "action": "faces_rotate_key",
                "target": FACES_DB,
                "result": "ok",
                "reason": f"{len(plain)} templates re-encrypted under a new key{left}",
            }
        )
    except BaseException:
        new.close()
        raise
    new.close()  # checkpoints the WAL into the file and removes it
    rotating = data_dir / ROTATING_DB
    _fsync(rotating)
    os.replace(rotating, path)
    _fsync(data_dir)
    log.warning("face gallery %s re-encrypted under a new key: %d templates", path, len(plain))
    return RotationResult(len(plain), damaged)


__all__ = [
    "FACES_DB",
    "ROTATE_PAUSE_ENV",
    "FaceTemplateStore",
    "RotationError",
    "RotationResult",
    "StoredTemplate",
    "TemplateInfo",
    "TemplateKeyError",
    "key_opens",
    "parse_key",
    "rotate_key",
]
