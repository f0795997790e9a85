"""One gallery, one key: a key that does not open the gallery is refused at start (the real agent
process) and at enroll (exit code), a legacy gallery without a key-check row is checked against its
rows, and `edge-agent faces rotate-key` re-encrypts atomically: SIGKILLed halfway it leaves the old
gallery whole under the old key; completed, only the new key opens it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.face_templates import (
    FACES_DB,
    ROTATE_PAUSE_ENV,
    ROTATING_DB,
    FaceTemplateStore,
    TemplateKeyError,
    parse_key,
)
from tests.conftest import MosquittoBroker
from tests.support.agent_process import AgentProcess, write_config
from tests.support.wait import wait_until

FACE_CAMERA = {"cameras": [{"device": {"kind": "camera_sim", "id": "cam-7a", "clip_seconds": 2}, "face": {}}]}


def _key() -> bytes:
    return parse_key(secrets.token_hex(32), "k")


def _gallery(data: Path, key: bytes, n: int) -> dict[str, np.ndarray]:
    """``n`` templates (random unit vectors: the store does not care what they show)."""
    rng = np.random.default_rng(n)
    store = FaceTemplateStore(data, key)
    vectors = {}
    try:
        for i in range(n):
            v = rng.normal(size=128).astype(np.float32)
            v /= np.linalg.norm(v)
            tid = store.add(f"P{i:03d}", v, "dlib_resnet_v1", "enrolled")
            vectors[tid] = v
    finally:
        store.close()
    return vectors


def _holds(data: Path, key: bytes) -> dict[str, np.ndarray]:
    store = FaceTemplateStore(data, key)
    try:
        out = {t.id: t.embedding for t in store.templates()}
        assert store.undecryptable == 0
        return out
    finally:
        store.close()


def test_a_key_change_is_detected_even_in_an_empty_gallery(tmp_path: Path) -> None:
    key = _key()
    FaceTemplateStore(tmp_path, key).close()  # created: empty, with its key-check row
    with pytest.raises(TemplateKeyError) as err:
        FaceTemplateStore(tmp_path, _key())
    assert err.value.code == "template_key_mismatch" and "rotate-key" in str(err.value)
    FaceTemplateStore(tmp_path, key).close()


def test_a_legacy_gallery_is_checked_against_its_rows(tmp_path: Path) -> None:
    key = _key()
    vectors = _gallery(tmp_path, key, 3)
    # As a gallery made before the key-check row: only its rows can tell the key.
    db = sqlite3.connect(tmp_path / FACES_DB)
    db.execute("DELETE FROM key_check")
    db.commit()
    db.close()
    with pytest.raises(TemplateKeyError) as err:
        FaceTemplateStore(tmp_path, _key())
    assert err.value.code == "template_key_mismatch"
    db = sqlite3.connect(tmp_path / FACES_DB)
    assert db.execute("SELECT count(*) FROM key_check").fetchone()[0] == 0  # the wrong key wrote nothing
    db.close()
    assert set(_holds(tmp_path, key)) == set(vectors)  # the right key opens it, and writes the row
    with pytest.raises(TemplateKeyError):
        FaceTemplateStore(tmp_path, _key())


def test_the_agent_refuses_a_key_that_does_not_open_the_gallery(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    _gallery(data, _key(), 2)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = write_config(tmp_path / "agent.yaml", extra=FACE_CAMERA)
    agent = AgentProcess(
        config, data, mosquitto.url, env={"EDGE_AGENT_FACE_TEMPLATE_KEY": secrets.token_hex(32)}
    )
    try:
        agent.wait_for_output("face recognition is off: ", timeout=60)
        line = next(line for line in agent.output().splitlines() if "face recognition is off: " in line)
        assert "does not open the gallery" in line and "faces rotate-key" in line, line
        assert "EDGE_AGENT_FACE_TEMPLATE_KEY" in line, line  # where the key goes

        def faces_status() -> dict[str, Any] | None:
            status = json.loads((data / "status.json").read_text())
            return status if status.get("faces", {}).get("error") else None

        status = wait_until(faces_status, 30, 0.1, what="faces in status.json", ignore=(OSError, ValueError))
        assert status is not None and status["faces"]["enabled"] is False
        assert "does not open the gallery" in status["faces"]["error"]
        assert status["devices"]["sim-0"]["running"] is True  # the rest of the agent runs
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
    finally:
        agent.kill()
    # Nothing was written under the wrong key.
    db = sqlite3.connect(data / FACES_DB)
    assert db.execute("SELECT count(*) FROM templates").fetchone()[0] == 2
    db.close()


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"gateway: {{site: s, id: g}}\nagent: {{data_dir: {tmp_path / 'data'}}}\n"
        "mqtt: {url: 'mqtt://127.0.0.1:1'}\n"
    )
    return path


def _rotate(config: Path, old: str, new_file: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "faces",
            "rotate-key",
            "--config",
            str(config),
            "--new-key-file",
            str(new_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGE_AGENT_FACE_TEMPLATE_KEY": old, **env},
    )


def test_rotate_key_killed_halfway_leaves_the_old_gallery_and_completed_opens_with_the_new_key_only(
    tmp_path: Path,
) -> None:
    old_hex, new_hex = secrets.token_hex(32), secrets.token_hex(32)
    old, new = parse_key(old_hex, "k"), parse_key(new_hex, "k")
    data = tmp_path / "data"
    vectors = _gallery(data, old, 40)
    waiting = {
        "actor": "it",
        "role": "admin",
        "via": "cli",
        "action": "enroll",
        "target": "P000",
        "result": "ok",
    }
    store = FaceTemplateStore(data, old)
    store.queue_audit(waiting)  # an enrollment's audit the agent has not published yet
    store.close()
    config = _config(tmp_path)
    new_file = tmp_path / "new.key"
    new_file.write_text(new_hex + "\n")

    # Halfway: the test-only pause makes each row take 50 ms; kill -9 after 20 of 40.
    proc = _rotate(config, old_hex, new_file, **{ROTATE_PAUSE_ENV: "0.05"})
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if line.startswith("re-encrypted 20/40"):
            break
        assert line, f"rotate-key ended early: {seen}"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert (data / ROTATING_DB).exists()  # the half-written new gallery, never used
    held = _holds(data, old)
    assert set(held) == set(vectors) and all(np.array_equal(held[t], vectors[t]) for t in vectors)
    with pytest.raises(TemplateKeyError):
        FaceTemplateStore(data, new)

    # A wrong "old" key is refused; the gallery is unchanged.
    wrong = _rotate(config, secrets.token_hex(32), new_file)
    _, err = wrong.communicate(timeout=120)
    assert wrong.returncode != 0 and "does not open the gallery" in err, err
    assert set(_holds(data, old)) == set(vectors)

    # While another process (the agent) has the gallery open, its writes would go to the old file:
    # refused, unchanged.
    holder = FaceTemplateStore(data, old)
    try:
        busy = _rotate(config, old_hex, new_file)
        _, err = busy.communicate(timeout=120)
    finally:
        holder.close()
    assert busy.returncode == 1 and "Stop the agent" in err, err
    assert set(_holds(data, old)) == set(vectors)

    # Completed: the new key opens every template, the old one nothing.
    done = _rotate(config, old_hex, new_file)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert "re-encrypted 40 face templates" in out and "put the new key in the 'face_template_key'" in out
    assert not (data / ROTATING_DB).exists()
    held = _holds(data, new)
    assert set(held) == set(vectors) and all(np.array_equal(held[t], vectors[t]) for t in vectors)
    # The audit record waiting for the agent went along, and the rotation itself is one more.
    store = FaceTemplateStore(data, new)
    audits: list[dict[str, Any]] = []
    store.take_audits(audits.append)
    store.close()
    assert audits[0] == waiting and audits[1]["action"] == "faces_rotate_key"
    assert "40 templates re-encrypted" in audits[1]["reason"] and len(audits) == 2
    with pytest.raises(TemplateKeyError) as mismatch:
        FaceTemplateStore(data, old)
    assert mismatch.value.code == "template_key_mismatch"
    # `faces list` opens it with the new key: metadata of every template, no vector.
    listed = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "faces", "list", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGE_AGENT_FACE_TEMPLATE_KEY": new_hex},
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert {r[1] for r in rows} == set(vectors) and all(
        r[2:4] == ["enrolled", "dlib_resnet_v1"] for r in rows
    )
