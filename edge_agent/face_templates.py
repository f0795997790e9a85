"""Face templates at rest: embeddings only, AES-256-GCM encrypted, deleted with their person.

Templates are biometric data of minors. The key comes from credentials (``face_template_key``:
64 hex digits or 32 bytes base64), never from the configuration file; without it the gateway does
not store or load templates at all. Each ciphertext is bound to its row (template id, person and
model as associated data), so rows cannot be swapped between people on disk.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
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


MIGRATIONS: list[Migration] = [("0001_faces_initial", _migration_1)]


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
    ) -> None:
        self.path = data_dir / FACES_DB
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
            (template_id, person_id, model_id, source, nonce, ciphertext, time.time()),
        )
        return template_id

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


__all__ = ["FaceTemplateStore", "StoredTemplate", "TemplateKeyError", "parse_key"]
