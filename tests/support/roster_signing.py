"""The centre's roster signing key for tests, and how a test agent comes to trust it.

A fixed Ed25519 key pair (derived from a constant seed, so a failing signature is reproducible),
the trusted keys credential that lists its public half, and :func:`signed`, which signs a roster
message the way the centre publishes it (``sync.signing.sign_roster_message``).

A gateway requires signed roster messages by default and reads the keys from the credential
``roster_keys`` (``agent.roster_keys_credential``): an in-process agent finds it in the environment
(:func:`trust_roster_keys` with pytest's ``monkeypatch``), an agent process in the environment it
is given (:func:`roster_keys_env`) or in a credentials directory (:func:`write_roster_keys`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge_agent.secrets import credential_env_name
from sync.signing import sign_roster_message

ROSTER_KEYS_CREDENTIAL = "roster_keys"
"""The credential's default name (``agent.roster_keys_credential``)."""
TEST_KEY_ID = "centre-roster-test"
TEST_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"campus-edge test roster key 1").digest())
"""The centre's roster key in tests; its public half is what :func:`roster_keys_json` lists."""
OTHER_KEY_ID = "centre-roster-next"
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"campus-edge test roster key 2").digest())
"""A second key: the next key of a rotation, or (not listed) a forger's."""
DEFAULT_VALID_FOR_S = 3600.0


def key_entry(key_id: str = TEST_KEY_ID, key: Ed25519PrivateKey = TEST_KEY) -> dict[str, Any]:
    """One entry of the trusted keys credential: the public half of ``key``."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"id": key_id, "algorithm": "ed25519", "public_key": base64.b64encode(raw).decode()}


def roster_keys_json(*entries: dict[str, Any]) -> str:
    """The trusted keys credential: ``entries``, or the test key alone when none are given."""
    return json.dumps({"keys": list(entries) or [key_entry()]})


def trust_roster_keys(monkeypatch: pytest.MonkeyPatch, *entries: dict[str, Any]) -> None:
    """An in-process agent (and any agent process started with this environment) trusts
    ``entries`` (default: the test key) for roster messages."""
    monkeypatch.setenv(credential_env_name(ROSTER_KEYS_CREDENTIAL), roster_keys_json(*entries))


def roster_keys_env(*entries: dict[str, Any]) -> dict[str, str]:
    """The environment that makes an agent process trust ``entries`` (default: the test key)."""
    return {credential_env_name(ROSTER_KEYS_CREDENTIAL): roster_keys_json(*entries)}


def write_roster_keys(credentials_dir: Path, *entries: dict[str, Any]) -> Path:
    """Write the credential into ``credentials_dir`` (``$CREDENTIALS_DIRECTORY``, as systemd's
    ``LoadCredential=`` gives it, or a directory updated in place); a rotation test rewrites it and
    sends SIGHUP."""
    credentials_dir.mkdir(parents=True, exist_ok=True)
    path = credentials_dir / ROSTER_KEYS_CREDENTIAL
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(roster_keys_json(*entries))
    tmp.replace(path)
    return path


def signed(
    topic: str,
    body: bytes,
    *,
    key: Ed25519PrivateKey = TEST_KEY,
    key_id: str = TEST_KEY_ID,
    valid_for_s: float = DEFAULT_VALID_FOR_S,
    now: datetime | None = None,
    nonce: str | None = None,
) -> bytes:
    """``body`` (an unsigned roster message) signed for ``topic`` as the centre publishes it."""
    return sign_roster_message(
        topic, body, key_id=key_id, ed25519_private_key=key, valid_for_s=valid_for_s, now=now, nonce=nonce
    )


__all__ = [
    "OTHER_KEY",
    "OTHER_KEY_ID",
    "ROSTER_KEYS_CREDENTIAL",
    "TEST_KEY",
    "TEST_KEY_ID",
    "key_entry",
    "roster_keys_env",
    "roster_keys_json",
    "signed",
    "trust_roster_keys",
    "write_roster_keys",
]
