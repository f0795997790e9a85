"""The tokens credential: its format, its refusals, and lookups by role."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.api.auth import TokenFileError, TokenTable, fingerprint

GOOD = "a" * 20


def test_parse_roles_names_comments_and_lookup() -> None:
    table = TokenTable.parse(
        f"# tokens for gw-1\n\nviewer:{GOOD}:desk  \n"
        f"operator:{'b' * 20}   # night shift\nadmin:{'c' * 24}:it\n"
    )
    assert len(table) == 3
    viewer, operator, admin = (table.lookup(t) for t in (GOOD, "b" * 20, "c" * 24))
    assert viewer is not None and (viewer.role, viewer.name) == ("viewer", "desk")
    # Without a name the audit trail gets a fingerprint of the token, never the token.
    assert operator is not None and operator.name == f"operator-{fingerprint('b' * 20)}"
    assert admin is not None and admin.may("operator") and admin.may("viewer")
    assert not viewer.may("operator") and operator.may("operator") and not operator.may("admin")
    assert table.lookup("a" * 19) is None and table.lookup(GOOD + "a") is None and table.lookup("") is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (f"root:{GOOD}", "bad_token_line"),
        (GOOD, "bad_token_line"),
        ("viewer:tiny1", "weak_token"),
        (f"viewer:{GOOD}\noperator:{GOOD}", "duplicate_token"),
    ],
)
def test_bad_lines_are_refused_with_a_code_and_no_token(text: str, code: str) -> None:
    with pytest.raises(TokenFileError) as err:
        TokenTable.parse(text)
    assert err.value.code == code
    assert GOOD not in str(err.value) and "tiny1" not in str(err.value)


def test_from_credential_directory_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_API_TOKENS", f"viewer:{GOOD}")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "api_tokens").write_text(f"admin:{'d' * 20}\n")
    table = TokenTable.from_credential("api_tokens")
    assert table.lookup("d" * 20) is not None and table.lookup(GOOD) is None
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert TokenTable.from_credential("api_tokens").lookup(GOOD) is not None
    monkeypatch.delenv("EDGE_AGENT_API_TOKENS")
    assert len(TokenTable.from_credential("api_tokens")) == 0


def test_bound_socket_says_tcp_so_asyncio_sets_nodelay() -> None:
    # asyncio enables TCP_NODELAY on accepted connections only when the listening socket's proto is
    # IPPROTO_TCP; with proto 0 every small response waited ~40 ms on Nagle and delayed ACKs.
    import socket

    from edge_agent.api.server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_the_configuration_does_not_load_the_app() -> None:
    # The app imports edge_agent.config (config validation); the configuration holds ApiSettings in
    # its leaf edge_agent.config.api. Loading the configuration must not pull in the app or FastAPI,
    # or the two would cycle (tests/test_import_rules.py checks the same statically).
    import subprocess
    import sys

    code = (
        "import sys, edge_agent.config.api, edge_agent.config; "
        "print(sorted(m for m in sys.modules if m in ('edge_agent.api.app', 'fastapi')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    from edge_agent.api import create_app, serve_api
    from edge_agent.config import ApiSettings

    assert callable(create_app) and callable(serve_api) and ApiSettings().port == 8080
