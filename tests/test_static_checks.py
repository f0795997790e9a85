"""The house rules that tools can check (STYLE.md 12): ruff over the repository, mypy --strict over
the four packages. Run as tests so the one test command keeps them true.

Both run in the background from the end of collection on (tests/support/static_checks.py); these
tests wait for their results."""

from __future__ import annotations

from tests.support import static_checks


def test_ruff_is_clean() -> None:
    code, out = static_checks.result("ruff")
    assert code == 0, out


def test_mypy_strict_is_clean() -> None:
    code, out = static_checks.result("mypy")
    assert code == 0, out
