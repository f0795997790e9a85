"""`edge-agent enroll` as an admin uses it: a look-alike of another person and a person without
consent are refused (exit 1), `--force --reason` stores the look-alike and leaves an audit record
that the agent publishes as a gateway.audit event when it starts. Real photos, models, SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

from edge_agent.config import parse_config
from edge_agent.face_templates import FACES_DB
from sync.contract import validate_event
from tests.agent.test_face_attendance import face_scene  # noqa: F401  (a fixture)
from tests.api.test_api import outbox_events
from tests.conftest import MosquittoBroker
from tests.support.agent_harness import build_gateway
from tests.support.agent_process import run_enroll
from tests.support.wait import async_wait_until

CONSENT = {"granted_by": "self", "granted_at": "2026-01-01T00:00:00Z", "scopes": ["attendance"]}


def _setup(tmp_path: Path, url: str) -> Path:
    persons: list[dict[str, Any]] = [
        {"id": "alice", "name": "Alice", "role": "student", "consent": CONSENT},
        {"id": "carol", "name": "Carol", "role": "student", "consent": CONSENT},
        {"id": "erin", "name": "Erin", "role": "student"},  # no consent on record
    ]
    seed = tmp_path / "roster.json"
    seed.write_text(json.dumps({"kind": "snapshot", "version": 1, "persons": persons}))
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"gateway: {{site: cli-site, id: gw-cli, timezone: UTC}}\n"
        f"agent: {{data_dir: {tmp_path / 'data'}, roster_seed: {seed}, shutdown_timeout_s: 3}}\n"
        f'mqtt: {{url: "{url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5}}\n'
        "cameras:\n  - device: {kind: camera_sim, id: cam-7a, clip_seconds: 2}\n    face: {}\n"
    )
    return config


def test_enroll_refuses_a_look_alike_and_no_consent_and_audits_a_forced_one(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    face_scene: dict[str, Any],  # noqa: F811
) -> None:
    key = secrets.token_hex(32)
    env = {**os.environ, "EDGE_AGENT_FACE_TEMPLATE_KEY": key}
    config = _setup(tmp_path, mosquitto.url)
    alice = face_scene["dir"] / "alice.jpg"
    assert run_enroll(config, "alice", alice, env=env).returncode == 0
    look_alike = run_enroll(config, "carol", alice, env=env)
    assert look_alike.returncode == 1, look_alike.stderr
    assert "rejected alice.jpg: matches_other_person" in look_alike.stderr
    assert "from alice's template" in look_alike.stderr and "--force --reason" in look_alike.stderr
    no_consent = run_enroll(config, "erin", face_scene["dir"] / "carol.jpg", env=env)
    assert no_consent.returncode == 1 and "consent_missing" in no_consent.stderr, no_consent.stderr
    no_reason = run_enroll(config, "carol", alice, "--force", env=env)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    forced = run_enroll(
        config, "carol", alice, "--force", "--reason", "twin sister, checked by the office", env=env
    )
    assert forced.returncode == 0, forced.stderr
    assert "stored template" in forced.stdout and "twin sister" in forced.stderr
    db = sqlite3.connect(tmp_path / "data" / FACES_DB)
    persons = sorted(r[0] for r in db.execute("SELECT person_id FROM templates"))
    assert persons == ["alice", "carol"]
    # alice's enrollment and carol's override, each to be audited (refusals store nothing to audit).
    assert db.execute("SELECT count(*) FROM audit_pending").fetchone()[0] == 2
    db.close()

    os.environ["EDGE_AGENT_FACE_TEMPLATE_KEY"] = key
    try:

        async def scenario() -> list[dict[str, Any]]:
            agent = build_gateway(parse_config(config.read_text()), data_dir=tmp_path / "data")
            task = asyncio.create_task(agent.run())
            try:
                await async_wait_until(lambda: agent.cameras.faces is not None, 120, what="face service")
                await agent.outbox.flush()
                await async_wait_until(
                    lambda: any(
                        a["data"]["action"] == "enroll_forced"
                        for a in outbox_events(agent, "edu.campus.gateway.audit.v1")
                    ),
                    30,
                    what="the forced enrollment's audit event",
                )
                return outbox_events(agent, "edu.campus.gateway.audit.v1")
            finally:
                agent.request_stop("test")
                await asyncio.wait_for(task, 30)

        audits = asyncio.run(scenario())
    finally:
        os.environ.pop("EDGE_AGENT_FACE_TEMPLATE_KEY", None)
    [plain] = [a for a in audits if a["data"]["action"] == "enroll"]
    assert (plain["data"]["target"], plain["data"]["via"], plain["data"]["result"]) == ("alice", "cli", "ok")
    [event] = [a for a in audits if a["data"]["action"] == "enroll_forced"]
    validate_event(event)
    data = event["data"]
    assert (data["via"], data["role"], data["target"], data["result"]) == ("cli", "admin", "carol", "ok")
    assert "twin sister, checked by the office" in data["reason"] and "matches_other_person" in data["reason"]
    db = sqlite3.connect(tmp_path / "data" / FACES_DB)
    assert db.execute("SELECT count(*) FROM audit_pending").fetchone()[0] == 0  # published once
    db.close()
