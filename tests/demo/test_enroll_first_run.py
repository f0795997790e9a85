"""`edge-agent enroll` on day one, before the agent ever ran: the configured roster seed is applied
first (or the error says what to run first), and a photo path that does not exist is reported as not
found. Real subprocesses, real files, the real face models."""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from edge_agent.demo import ENROLLED_FACES, enrollment_photo
from edge_agent.face_templates import FACES_DB
from edge_agent.resources import project_file
from tests.support.agent_process import run_enroll

DEMO_ROSTER = project_file("config", "demo-roster.json")


def enroll(config: Path, person: str, *photos: Path, key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env["EDGE_AGENT_FACE_TEMPLATE_KEY"] = key
    return run_enroll(config, person, *photos, env=env, cwd=config.parent)


def write_config(tmp_path: Path, *, seed: bool) -> Path:
    data = tmp_path / "data"
    config = tmp_path / "gateway.yaml"
    # The seed named relative to the configuration file, as the demo names its own.
    seed_line = "  roster_seed: roster-seed.json\n" if seed else ""
    config.write_text(f"gateway: {{site: s, id: gw-1}}\nagent:\n  data_dir: {data}\n{seed_line}")
    if seed:
        shutil.copyfile(DEMO_ROSTER, tmp_path / "roster-seed.json")
    return config


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A demo student and a real head-and-shoulders photo of them."""
    person = next(iter(ENROLLED_FACES))
    path = tmp_path_factory.mktemp("photos") / f"{person}.jpg"
    path.write_bytes(enrollment_photo(person))
    return person, path


def test_enroll_before_the_first_run_applies_the_roster_seed(tmp_path: Path, photo: tuple[str, Path]) -> None:
    person, picture = photo
    config = write_config(tmp_path, seed=True)
    missing = tmp_path / "no-such-photo.jpg"
    key = secrets.token_hex(32)
    result = enroll(config, person, picture, missing, key=key)
    assert result.returncode == 0, result.stderr
    assert "applied the roster seed roster-seed.json" in result.stdout
    assert "stored template t-" in result.stdout and f"for {person}" in result.stdout
    # The missing file is named as such, not as an empty image.
    assert f"rejected {missing.name}: not_found: {missing} not found" in result.stderr
    assert "empty_image" not in result.stderr
    db = sqlite3.connect(tmp_path / "data" / FACES_DB)
    try:
        assert db.execute("SELECT person_id FROM templates").fetchall() == [(person,)]
    finally:
        db.close()

    # The seed is applied once: the second enrollment (same key: the gallery has one) finds the roster.
    again = enroll(config, person, picture, key=key)
    assert again.returncode == 0, again.stderr
    assert "roster seed" not in again.stdout


def test_enroll_without_a_roster_or_a_seed_says_what_to_run_first(
    tmp_path: Path, photo: tuple[str, Path]
) -> None:
    person, picture = photo
    config = write_config(tmp_path, seed=False)
    result = enroll(config, person, picture, key=secrets.token_hex(32))
    assert result.returncode == 1
    assert "the local roster in" in result.stderr and "is empty" in result.stderr
    assert f"edge-agent run --config {config}" in result.stderr and "agent.roster_seed" in result.stderr
    assert "unknown_person" not in result.stderr and "stored template" not in result.stdout


def test_photos_that_cannot_be_read_are_named_and_nothing_is_stored(
    tmp_path: Path, photo: tuple[str, Path]
) -> None:
    person, _ = photo
    config = write_config(tmp_path, seed=True)
    (tmp_path / "a-folder.jpg").mkdir()
    result = enroll(
        config, person, tmp_path / "gone.jpg", tmp_path / "a-folder.jpg", key=secrets.token_hex(32)
    )
    assert result.returncode == 1
    assert "rejected gone.jpg: not_found" in result.stderr
    assert "rejected a-folder.jpg: not_a_file" in result.stderr
    db = sqlite3.connect(tmp_path / "data" / FACES_DB)
    try:
        assert db.execute("SELECT count(*) FROM templates").fetchone() == (0,)
    finally:
        db.close()
