"""Bearer tokens with roles, read from a credential, checked in constant time.

The credential holds one token per line: ``role:token`` or ``role:token:name`` (``#`` starts a
comment). Roles are ordered: an ``admin`` may do what an ``operator`` may, who may do what a
``viewer`` may. The name (or, without one, a short fingerprint of the token) is who the audit
events say acted; the token itself is never logged or audited.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Literal

from edge_agent.errors import ConfigError
from edge_agent.secrets import read_credential

log = logging.getLogger(__name__)

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}
# Shorter tokens are guessable from the LAN; 16 characters of token_urlsafe are 96 bits.
MIN_TOKEN_CHARS = 16


class TokenFileError(ConfigError):
    """The tokens credential has a line that is not ``role:token[:name]`` with a known role."""


@dataclass(frozen=True)
class Principal:
    """Who made a request: their role and the name audit events give them."""

    role: Role
    name: str

    def may(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


class TokenTable:
    """The tokens the API accepts. Lookup compares against every entry, so timing tells nothing."""

    def __init__(self, entries: list[tuple[Role, str, str]]) -> None:
        self._entries = [
            _Entry(
                hashlib.sha256(token.encode()).digest(),
                Principal(role, name or f"{role}-{fingerprint(token)}"),
            )
            for role, token, name in entries
        ]

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def parse(cls, text: str) -> TokenTable:
        """Parse the credential text; raises :class:`TokenFileError` naming the bad line (never the token)."""
        entries: list[tuple[Role, str, str]] = []
        seen: set[str] = set()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(":", 2)
            if len(parts) < 2 or parts[0] not in ROLE_RANK:
                raise TokenFileError(
                    f"tokens line {number}: expected 'role:token[:name]' with role viewer, operator or admin",
                    code="bad_token_line",
                )
            role, token = parts[0], parts[1].strip()
            name = parts[2].strip() if len(parts) == 3 else ""
            if len(token) < MIN_TOKEN_CHARS:
                raise TokenFileError(
                    f"tokens line {number}: token shorter than {MIN_TOKEN_CHARS} characters",
                    code="weak_token",
                )
            if token in seen:
                raise TokenFileError(f"tokens line {number}: duplicate token", code="duplicate_token")
            seen.add(token)
            entries.append((role, token, name))  # type: ignore[arg-type]
        return cls(entries)

    @classmethod
    def from_credential(cls, name: str) -> TokenTable:
        """The table from credential ``name``; empty (everything but health and metrics refused) if unset."""
        text = read_credential(name)
        if text is None:
            log.warning("no API tokens (credential %s is not set): the API refuses every request", name)
            return cls([])
        return cls.parse(text)

    def lookup(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        # Comparing fixed-length digests of every entry, without stopping at a match, keeps the
        # response time independent of which token (or how much of one) was right.
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        return found


__all__ = ["ROLE_RANK", "Principal", "Role", "TokenFileError", "TokenTable", "fingerprint"]
