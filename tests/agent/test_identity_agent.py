"""One identity on the real agent: `edge-agent roster show/forget` on a data dir holding a person's
cards, face templates (enrolled from real photos with `edge-agent enroll`), attendance records and
alerts; the running agent (a real process, real Mosquitto) drops them at once on the forget, publishes
the audit, and its status digest changes. The in-process gateway deletes a leaver's data and a
withdrawn consent's templates, audited, with the digest in the published status."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edge_agent.access import DenyReason
from edge_agent.alerts import AlertBook
from edge_agent.config import parse_config
from edge_agent.face_templates import FaceTemplateStore, parse_key
from edge_agent.identity import mask_card
from sync import RosterDelta, utc_now
from sync.contract import validate, validate_event
from sync.messages import templates_digest
from tests.agent import identity_data as data
from tests.conftest import MosquittoBroker
from tests.mqtt_helpers import Collector
from tests.support.agent_harness import build_gateway
from tests.support.agent_process import AgentProcess
from tests.support.wait import async_wait_until, wait_until

SITE, GW = "id-site", "gw-id"
STATUS_SCHEMA = Path(__file__).parents[2] / "sync" / "schemas" / "status.json"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return data.enrollment_photos(tmp_path_factory.mktemp("photos"))


def _empty_room(path: Path) -> Path:
    """A still clip with nobody in it: the camera runs face analysis, no face is ever seen."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5, (320, 240))
    for _ in range(10):
        writer.write(np.full((240, 320, 3), 127, np.uint8))
    writer.release()
    return path


def _config(tmp_path: Path, url: str, seed: Path) -> dict[str, Any]:
    return {
        "gateway": {"site": SITE, "id": GW, "timezone": "UTC"},
        "agent": {
            "data_dir": str(tmp_path / "data"),
            "roster_seed": str(seed),
            "shutdown_timeout_s": 3,
            "heartbeat_interval_s": 1.0,
        },
        "mqtt": {"url": url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "status_interval_s": 1.0},
        "cameras": [
            {
                "device": {
                    "kind": "camera_sim",
                    "id": "cam-7a",
                    "video": str(_empty_room(tmp_path / "room.avi")),
                    "loop": True,
                    "analysis_fps": 2,
                },
                "face": {"point": "room-7a"},
            }
        ],
    }


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def _status(data_dir: Path) -> dict[str, Any]:
    try:
        status: dict[str, Any] = json.loads((data_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return status


def test_roster_show_and_forget_a_person_with_cards_templates_attendance_and_alerts(
    tmp_path: Path, mosquitto: MosquittoBroker, photos: dict[str, Path]
) -> None:
    key = secrets.token_hex(32)
    env = {**os.environ, "EDGE_AGENT_FACE_TEMPLATE_KEY": key}
    data_dir = tmp_path / "data"
    seed = tmp_path / "roster.json"
    roster = data.snapshot([data.person("alice"), data.person("carol")])
    roster["credentials"].append({"credential": "0012AB34CD", "format": "em4100", "person_id": "alice"})
    seed.write_text(json.dumps(roster))
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, mosquitto.url, seed)))

    # Templates from real photos, through `edge-agent enroll` (two photos of alice, one of carol).
    second = tmp_path / "alice-2.jpg"
    cv2.imwrite(str(second), cv2.resize(cv2.imread(str(photos["alice"])), None, fx=0.8, fy=0.8))
    stored: dict[str, int] = {}
    for person_id, files in (("alice", [photos["alice"], second]), ("carol", [photos["carol"]])):
        done = _cli("enroll", "--config", str(config), "--person", person_id, *map(str, files), env=env)
        assert done.returncode == 0, done.stderr
        stored[person_id] = done.stdout.count("stored template")
    assert stored["alice"] >= 1 and stored["carol"] == 1
    # No raw enrollment photo is kept: no image file, and no file holds a photo's bytes or the start
    # of any JPEG/PNG (alerts, the only store that keeps images, hold none yet).
    kept = [p for p in data_dir.rglob("*") if p.is_file()]
    assert not [p for p in kept if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    heads = [photos[p].read_bytes()[:2048] for p in ("alice", "carol")] + [second.read_bytes()[:2048]]
    for path in kept:
        raw = path.read_bytes()
        assert not any(head in raw for head in heads), path
        assert b"\xff\xd8\xff" not in raw and b"\x89PNG\r\n" not in raw, path

    now = utc_now()
    book = AlertBook(data_dir)
    acked, open_alert = data.alerts_naming(book, "alice", now)
    book.close()
    data.attendance_rows(data_dir, "alice", [now.date().isoformat()])

    shown = _cli("roster", "show", "alice", "--config", str(config), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    dossier = json.loads(shown.stdout)
    assert dossier["in_roster"] and dossier["person"]["consent"]["guardian_name"] == "A. Parent"
    assert dossier["person"]["consent_now"] == {"attendance": "allowed", "access": "consent_scope"}
    assert sorted(c["card"] for c in dossier["cards"]) == sorted(
        [mask_card(data.card_of("alice")), "******34CD"]
    )
    assert "0012AB34CD" not in shown.stdout
    assert len(dossier["face_templates"]) == stored["alice"]
    assert {t["source"] for t in dossier["face_templates"]} == {"enrolled"}
    assert all("embedding" not in t for t in dossier["face_templates"])
    assert [r["point"] for r in dossier["attendance_records"]] == ["room-7a"]
    assert {a["id"]: a["acknowledged"] for a in dossier["alerts"]} == {acked: True, open_alert: False}
    assert dossier["face_crops"]["alert_snapshots"] == 2
    text = _cli("roster", "show", "alice", "--config", str(config), env=env)
    assert text.returncode == 0 and "consent: by guardian (A. Parent)" in text.stdout, text.stdout

    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    agent = AgentProcess(config, data_dir, mosquitto.url, env={"EDGE_AGENT_FACE_TEMPLATE_KEY": key})
    try:
        wait_until(
            lambda: (
                _status(data_dir).get("faces", {}).get("templates_digest")
                == templates_digest(["alice", "carol"])
            ),
            60,
            0.1,
            what="the status digest of alice and carol",
        )
        forgot = _cli(
            "roster", "forget", "alice", "--config", str(config), "--reason", "request DSR-42", env=env
        )
        assert forgot.returncode == 0, forgot.stderr
        assert f"told the running agent (pid {agent.proc.pid})" in forgot.stdout, forgot.stdout
        assert "kept 1 OPEN alert" in forgot.stdout and "still in the roster" in forgot.stdout
        # The running agent drops her at once: gallery, status digest, the audit published.
        wait_until(
            lambda: _status(data_dir).get("faces", {}).get("templates_digest") == templates_digest(["carol"]),
            20,
            0.1,
            what="the digest without alice",
        )
        assert _status(data_dir)["faces"]["templates"] == 1

        def audit() -> dict[str, Any] | None:
            for event in collector.events():
                if event["type"] == "edu.campus.gateway.audit.v1" and event["data"]["action"] == (
                    "delete_person_data"
                ):
                    return event
            return None

        wait_until(audit, 20, 0.1, what="the audit of the forget")
        event = audit()
        assert event is not None
        validate_event(event)
        assert event["data"]["target"] == "alice" and event["data"]["via"] == "cli"
        assert event["subject"] == "alice"
        assert event["data"]["reason"] == "local_forget: request DSR-42"
        assert event["data"]["deleted"] == {
            "templates": stored["alice"],
            "attendance_records": 1,
            "alerts": 1,
            "snapshots": 1,
            "open_alerts_kept": 1,
        }
        published = [m.json() for m in collector.snapshot("/status")]
        assert published, "no status published"
        validate(published[-1], STATUS_SCHEMA)
        wait_until(
            lambda: any(
                m.json().get("faces", {}).get("templates_digest") == templates_digest(["carol"])
                for m in collector.snapshot("/status")
            ),
            20,
            0.1,
            what="the published status digest without alice",
        )
    finally:
        agent.signal(__import__("signal").SIGTERM)
        assert agent.wait(30) == 0, agent.output()[-3000:]
        collector.close()

    after = json.loads(_cli("roster", "show", "alice", "--config", str(config), "--json", env=env).stdout)
    assert after["face_templates"] == [] and after["attendance_records"] == []
    assert [a["id"] for a in after["alerts"]] == [open_alert]
    assert after["cards"], "the roster record and cards are the centre's: they stay"
    # The carol's template is untouched, and still opens with the key.
    store = FaceTemplateStore(data_dir, parse_key(key, "k"))
    try:
        assert store.person_ids() == {"carol"}
    finally:
        store.close()
    # Forget refuses without the key: it could not delete templates nor keep the audit record.
    no_key = _cli(
        "roster",
        "forget",
        "carol",
        "--config",
        str(config),
        env={k: v for k, v in env.items() if k != "EDGE_AGENT_FACE_TEMPLATE_KEY"},
    )
    assert no_key.returncode == 2 and "face_template_key" in no_key.stderr


def test_the_gateway_deletes_a_leavers_data_and_withdrawn_consent_at_once(
    tmp_path: Path, mosquitto: MosquittoBroker, photos: dict[str, Path]
) -> None:
    key = secrets.token_hex(32)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    seed = tmp_path / "roster.json"
    seed.write_text(json.dumps(data.snapshot([data.person(p) for p in ("alice", "bob", "carol")])))
    store = FaceTemplateStore(data_dir, parse_key(key, "k"))
    data.store_templates(store, data.embeddings(photos), "alice", "bob", "carol")
    store.close()
    now = utc_now()
    book = AlertBook(data_dir)
    acked, open_alert = data.alerts_naming(book, "alice", now)
    book.close()
    config = parse_config(yaml.safe_dump(_config(tmp_path, mosquitto.url, seed)))
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    os.environ["EDGE_AGENT_FACE_TEMPLATE_KEY"] = key
    try:

        async def scenario() -> None:
            gw = build_gateway(config, data_dir=data_dir)
            task = asyncio.create_task(gw.run())
            try:
                await async_wait_until(
                    lambda: (
                        gw.status().get("faces", {}).get("templates_digest")
                        == templates_digest(["alice", "bob", "carol"])
                    ),
                    timeout=60,
                )
                assert gw.roster is not None and gw.cameras.faces is not None
                withdrawn = data.person("bob", consent=data.consent(withdrawn_at=utc_now().isoformat()))
                delta = {"kind": "delta", "from_version": 1, "version": 2, "upsert": {"persons": [withdrawn]}}
                await asyncio.to_thread(gw.roster.apply_delta, RosterDelta.model_validate(delta))
                faces = gw.status()["faces"]
                assert faces["templates_digest"] == templates_digest(["alice", "carol"])
                assert faces["persons_with_templates"] == 2
                assert "bob" not in gw.cameras.faces.current_gallery()
                leave = {"kind": "delta", "from_version": 2, "version": 3, "delete": {"persons": ["alice"]}}
                await asyncio.to_thread(gw.roster.apply_delta, RosterDelta.model_validate(leave))
                assert gw.status()["faces"]["templates_digest"] == templates_digest(["carol"])
                assert gw.alert_book is not None
                assert gw.alert_book.get(acked) is None and gw.alert_book.get(open_alert) is not None
                # Her card is denied as a leaver's, the event names no one.
                assert gw.identity is not None and gw.identity.person("alice") is None
                decision = data.decide_card(gw.roster.index, data.card_of("alice"))
                assert decision.reason is DenyReason.PERSON_NOT_IN_ROSTER and decision.person is None
                await async_wait_until(
                    lambda: (
                        len(
                            [
                                e
                                for e in collector.events()
                                if e["type"] == "edu.campus.gateway.audit.v1"
                                and e["data"]["action"] == "delete_person_data"
                            ]
                        )
                        == 2
                    ),
                    timeout=20,
                )
                await async_wait_until(
                    lambda: any(
                        m.json().get("faces", {}).get("templates_digest") == templates_digest(["carol"])
                        for m in collector.snapshot("/status")
                    ),
                    timeout=20,
                )
            finally:
                gw.request_stop()
                assert await asyncio.wait_for(task, 30) == 0

        asyncio.run(scenario())
    finally:
        os.environ.pop("EDGE_AGENT_FACE_TEMPLATE_KEY", None)
        collector.close()
    audits = {
        e["subject"]: e
        for e in collector.events()
        if e["type"] == "edu.campus.gateway.audit.v1" and e["data"]["action"] == "delete_person_data"
    }
    for event in audits.values():
        validate_event(event)
    assert audits["bob"]["data"]["reason"] == "consent_withdrawn"
    assert audits["bob"]["data"]["deleted"] == {"templates": 1}
    assert audits["alice"]["data"]["reason"] == "roster_delta"
    assert audits["alice"]["data"]["deleted"]["templates"] == 1
    assert audits["alice"]["data"]["deleted"]["alerts"] == 1
    assert audits["alice"]["data"]["deleted"]["open_alerts_kept"] == 1


def test_a_card_of_a_person_who_left_is_denied_with_a_reason_at_a_real_gate(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    from tests.support.agent_harness import running_gate

    collector = Collector(mosquitto.url, "campus/v1/gate-site/gw-gate/#")

    def of(event_type: str) -> list[dict[str, Any]]:
        return [e for e in collector.events() if e["type"] == event_type]

    async def scenario() -> None:
        async with running_gate(tmp_path, mosquitto.url) as gate:
            gate.reader.present("0012AB34CD")
            await async_wait_until(lambda: of("edu.campus.access.granted.v1"), timeout=20)
            assert gate.agent.roster is not None
            leave = {"kind": "delta", "from_version": 1, "version": 2, "delete": {"persons": ["S1"]}}
            await asyncio.to_thread(gate.agent.roster.apply_delta, RosterDelta.model_validate(leave))
            gate.reader.present("0012AB34CD")
            await async_wait_until(lambda: of("edu.campus.access.denied.v1"), timeout=20)
            await async_wait_until(lambda: of("edu.campus.gateway.audit.v1"), timeout=20)

    try:
        asyncio.run(scenario())
    finally:
        collector.close()
    [granted] = of("edu.campus.access.granted.v1")
    [denied] = of("edu.campus.access.denied.v1")
    for event in (granted, denied):
        validate_event(event)
    # One identity: the card, the event's subject and its person are the roster's S1...
    assert granted["subject"] == "S1" and granted["data"]["person"]["id"] == "S1"
    # ...until S1 leaves: the card is denied with a reason and attributed to no one.
    assert denied["data"]["reason"] == "person_not_in_roster"
    assert "subject" not in denied and "person" not in denied["data"]
    [audit] = [e for e in of("edu.campus.gateway.audit.v1") if e["data"]["action"] == "delete_person_data"]
    validate_event(audit)
    assert audit["subject"] == "S1" and audit["data"]["reason"] == "roster_delta"
