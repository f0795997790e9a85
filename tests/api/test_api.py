"""The local API against a real agent: real gate devices on ptys, real SQLite, real Mosquitto,
uvicorn on a free port in the agent's loop, httpx over loopback."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from edge_agent.api.routers import config as config_router
from edge_agent.config import parse_config
from edge_agent.gateway import Gateway
from sync.contract import validate_event
from tests.api.conftest import ApiGate, Tokens, jpeg, raise_test_alert, running_api, until
from tests.conftest import MosquittoBroker
from tests.support.agent_harness import build_gateway


def outbox_events(agent: Gateway, event_type: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{agent.outbox.path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT payload FROM events WHERE type=? ORDER BY seq", (event_type,)).fetchall()
    finally:
        conn.close()
    return [json.loads(r[0]) for r in rows]


async def wait_outbox(agent: Gateway, event_type: str, n: int = 1) -> list[dict[str, Any]]:
    await until(lambda: len(outbox_events(agent, event_type)) >= n, f"{n} x {event_type} in the outbox")
    return outbox_events(agent, event_type)


def test_read_endpoints_against_a_running_gate(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, mosquitto.url) as gate:
            anon, viewer = gate.client(), gate.client("viewer", tokens)
            async with anon, viewer:
                assert (await anon.get("/health")).json()["status"] == "ok"
                await until(lambda: gate.agent.link is not None, "link")
                ready = (await anon.get("/ready")).json()
                assert ready["ready"] is True, ready
                assert ready["checks"]["outbox"] and ready["checks"]["devices"]

                # A real card through the real reader driver: a grant, then the passage.
                gate.reader.present("0012AB34CD")
                granted = await wait_outbox(gate.agent, "edu.campus.access.granted.v1")
                await wait_outbox(gate.agent, "edu.campus.access.passage.v1")

                status = (await viewer.get("/api/v1/status")).json()
                assert status["gateway"] == "gw-api" and status["roster_version"] == 1
                assert status["outbox"]["appended"] >= 2
                assert set(status["outbox"]["lanes"]) == {"alert", "access", "telemetry"}

                devices = (await viewer.get("/api/v1/devices")).json()
                by_id = {d["id"]: d for d in devices["devices"]}
                assert by_id["reader-in"]["online"] is True and by_id["reader-in"]["gate"] == "gate-1"
                assert by_id["reader-in"]["counters"].get("frames", 0) >= 1, by_id["reader-in"]
                assert "reader-lab" in devices["offline"] and "reader-in" not in devices["offline"]

                page = (
                    await viewer.get("/api/v1/events", params={"type": "edu.campus.access.granted.v1"})
                ).json()
                assert [e["id"] for e in page["events"]] == [granted[0]["id"]]
                assert page["events"][0]["subject"] == "S1"
                access = (await viewer.get("/api/v1/events", params={"area": "access", "limit": 50})).json()
                assert access["events"] and all(".access." in e["type"] for e in access["events"])
                seqs = [e["seq"] for e in access["events"]]
                assert seqs == sorted(seqs)
                # Paging forward from a seq gives only later events, oldest first.
                first = (await viewer.get("/api/v1/events", params={"limit": 1, "after_seq": 0})).json()
                after = (
                    await viewer.get(
                        "/api/v1/events", params={"after_seq": first["next_after_seq"], "limit": 3}
                    )
                ).json()
                assert first["events"][0]["seq"] == 1
                assert [e["seq"] for e in after["events"]] == [2, 3, 4][: len(after["events"])]
                bad = await viewer.get("/api/v1/events", params={"area": "ACCESS;--"})
                assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"
                capped = await viewer.get("/api/v1/events", params={"limit": 100_000})
                assert capped.status_code == 200 and len(capped.json()["events"]) <= 500

                persons = (await viewer.get("/api/v1/roster/persons", params={"group": "7A"})).json()
                assert {p["id"] for p in persons["persons"]} == {"S1", "B1"}
                s1 = (await viewer.get("/api/v1/roster/persons/S1")).json()
                assert s1["name"] == "Student One"
                # Card numbers are masked: the desk sees the last four digits only.
                assert {c["credential"] for c in s1["credentials"]} == {"******34CD", "******CCCC"}
                missing = await viewer.get("/api/v1/roster/persons/NOBODY")
                assert missing.status_code == 404 and missing.json()["code"] == "unknown_person"

                link = gate.agent.link
                await until(lambda: link is not None and link.state == "connected", "broker connected")
                metrics = (await anon.get("/metrics")).text
                assert 'edge_gate_decisions_total{gate="gate-1",result="granted"} 1.0' in metrics
                assert 'edge_outbox_pending{lane="alert"}' in metrics
                assert 'edge_device_online{device="reader-lab",kind="card_reader"} 0.0' in metrics
                assert 'edge_mqtt_state{state="connected"} 1.0' in metrics
                assert "edge_gate_decision_seconds_bucket" in metrics
                assert 'edge_commands_total{result="received"} 0.0' in metrics
                assert (
                    'edge_api_requests_total{method="GET",route="/api/v1/status",status="200"} 1.0' in metrics
                )

                doc = (await anon.get("/api/openapi.json")).json()
                assert "/api/v1/alerts/{alert_id}/ack" in doc["paths"]
                assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"

    asyncio.run(scenario())


def test_auth_ack_snapshot_stream_and_limits(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, mosquitto.url) as gate:
            await alerts_and_acks(gate, tokens)
            await limits_and_config(gate, tokens)
            await gate.agent.outbox.flush()  # the last audit events were submitted, not yet committed
            audits = outbox_events(gate.agent, "edu.campus.gateway.audit.v1")
            for event in audits + outbox_events(gate.agent, "edu.campus.security.alert_acknowledged.v1"):
                validate_event(event)
            outcomes = [(a["data"]["action"], a["data"]["result"], a["data"]["role"]) for a in audits]
            assert ("acknowledge_alert", "refused", "viewer") in outcomes  # the 403
            assert ("acknowledge_alert", "ok", "operator") in outcomes
            assert ("acknowledge_alert", "refused", "operator") in outcomes  # 404 and 409
            # 401s are counted, never audited (anyone could flood the never-dropped lane).
            assert all(a["data"]["actor"] != "unknown" for a in audits)

    asyncio.run(scenario())


async def alerts_and_acks(gate: ApiGate, tokens: Tokens) -> None:
    anon, viewer, operator = gate.client(), gate.client("viewer", tokens), gate.client("operator", tokens)
    async with anon, viewer, operator:
        none = await anon.get("/api/v1/alerts")
        assert none.status_code == 401 and none.json()["code"] == "missing_token"
        assert none.headers["www-authenticate"] == "Bearer"
        wrong = await anon.get("/api/v1/alerts", headers={"Authorization": "Bearer " + "x" * 24})
        assert wrong.status_code == 401 and wrong.json()["code"] == "unknown_token"

        # Subscribe to the live stream first, then raise alerts the real ways.
        async with viewer.stream("GET", "/api/v1/alerts/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            gate.turnstile.raise_event("forced", "entry")
            snap = jpeg()
            test_alert = raise_test_alert(gate.agent, "api test", attachment=snap)
            received = await asyncio.wait_for(read_sse(lines, 2), 10)
        kinds = [(k, d["alert"]["type"]) for k, d in received]
        assert ("alert", "edu.campus.access.forced.v1") in kinds
        assert ("alert", "edu.campus.security.test_alert.v1") in kinds

        listed = (await viewer.get("/api/v1/alerts", params={"severity": "critical"})).json()["alerts"]
        assert [a["type"] for a in listed] == ["edu.campus.access.forced.v1"]
        forced = listed[0]
        assert forced["device"] == "turnstile-1" and forced["acknowledged_at"] is None

        image = await viewer.get(f"/api/v1/alerts/{test_alert.id}/snapshot")
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content == snap
        no_snap = await viewer.get(f"/api/v1/alerts/{forced['id']}/snapshot")
        assert no_snap.status_code == 404 and no_snap.json()["code"] == "no_snapshot"

        refused = await viewer.post(f"/api/v1/alerts/{forced['id']}/ack", json={"note": "x"})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        done = await operator.post(f"/api/v1/alerts/{forced['id']}/ack", json={"note": "checked on camera"})
        assert done.status_code == 200, done.text
        assert done.json()["acknowledged_by"] == "guard-1" and done.json()["note"] == "checked on camera"
        again = await operator.post(f"/api/v1/alerts/{forced['id']}/ack")
        assert again.status_code == 409 and again.json()["code"] == "already_acknowledged"
        unknown = await operator.post("/api/v1/alerts/01JUNKNOWNALERT000000000000/ack")
        assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_alert"

        acked = await wait_outbox(gate.agent, "edu.campus.security.alert_acknowledged.v1")
        assert acked[0]["data"]["alert_id"] == forced["id"] and acked[0]["data"]["by"] == "guard-1"
        assert acked[0]["data"]["via"] == "api"
        open_now = (await viewer.get("/api/v1/alerts", params={"acknowledged": "false"})).json()["alerts"]
        assert forced["id"] not in {a["id"] for a in open_now}


async def read_sse(lines: Any, n: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    async for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            out.append((kind, json.loads(line[6:])))
            if len(out) >= n:
                return out
    return out


async def limits_and_config(gate: ApiGate, tokens: Tokens) -> None:
    admin, operator = gate.client("admin", tokens), gate.client("operator", tokens)
    async with admin, operator:
        big = b"a: 1\n" * (gate.settings.max_body_bytes // 5 + 10)
        too_big = await admin.post("/api/v1/config/validate", content=big)
        assert too_big.status_code == 413 and too_big.json()["code"] == "body_too_large"

        # Chunked upload without Content-Length: counted as it arrives, refused all the same.
        async def chunks() -> Any:
            for _ in range(8):
                yield b"#" * (1024 * 1024)

        chunked = await admin.post("/api/v1/config/validate", content=chunks())
        assert chunked.status_code == 413

        bad = "gateway: {site: s, id: g}\nmqtt:\n  url: 'mqtt://x'\n  keepalive_s: 1\nbogus: 3\n"
        result = await admin.post(
            "/api/v1/config/validate", content=bad, headers={"Content-Type": "application/yaml"}
        )
        assert result.status_code == 200
        body = result.json()
        assert body["valid"] is False
        located = {(i["path"], i["line"]) for i in body["issues"]}
        assert ("mqtt.keepalive_s", 4) in located and ("bogus", 5) in located, body
        good = gate.agent.config_path  # None here: the agent was built from text, so post our own
        assert good is None
        fine = await admin.post(
            "/api/v1/config/validate",
            content="gateway: {site: s, id: g}\nmqtt: {url: 'mqtt://127.0.0.1:1883'}\n",
        )
        assert fine.json() == {"valid": True, "issues": []}
        # Parsed off the event loop (the agent's loop runs in this thread): a file near the body
        # limit takes seconds to parse and check, and the gates share the loop.
        parsed_on_the_loop: list[bool] = []

        def watched(text: str, source: str = "<config>") -> Any:
            parsed_on_the_loop.append(threading.current_thread() is threading.main_thread())
            return parse_config(text, source)

        with mock.patch.object(config_router, "parse_config", watched):
            again = await admin.post("/api/v1/config/validate", content=fine.request.content)
        assert again.json() == {"valid": True, "issues": []} and parsed_on_the_loop == [False]
        not_yaml = await admin.post("/api/v1/config/validate", content="a: [1,\n")
        assert not_yaml.json()["issues"][0]["message"].startswith("not valid YAML")
        not_text = await admin.post("/api/v1/config/validate", content=b"\xff\xfe\x00")
        assert not_text.status_code == 400 and not_text.json()["code"] == "not_utf8"

        forbidden = await operator.post("/api/v1/config/validate", content=bad)
        assert forbidden.status_code == 403

        no_faces = await admin.post(
            "/api/v1/enrollments",
            data={"person_id": "S1"},
            files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))],
        )
        assert no_faces.status_code == 409 and no_faces.json()["code"] == "faces_disabled"


def test_server_stops_with_open_streams_and_refuses_a_busy_port(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens
) -> None:
    from edge_agent.api import ApiStartError, serve_api
    from edge_agent.config import ApiSettings

    async def scenario() -> None:
        async with running_api(tmp_path, mosquitto.url) as gate:
            viewer = gate.client("viewer", tokens)
            async with viewer, viewer.stream("GET", "/api/v1/alerts/stream") as stream:
                assert stream.status_code == 200
                # An open stream and a half-sent upload hold no request slot (the default is one):
                # other requests still get through.
                _, writer = await asyncio.open_connection("127.0.0.1", gate.settings.port)
                writer.write(
                    b"POST /api/v1/config/validate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                    b"Content-Type: text/plain\r\nAuthorization: Bearer "
                    + tokens.admin.encode()
                    + b"\r\n\r\n"
                    b"gateway: {site: s"
                )
                await writer.drain()
                assert gate.settings.max_concurrent_requests == 1
                status = await asyncio.wait_for(viewer.get("/api/v1/status"), 10)
                assert status.status_code == 200
                writer.close()
                # Same port again: a clear error, not uvicorn's sys.exit inside the agent.
                try:
                    assert gate.agent.services is not None
                    await serve_api(gate.agent.services, ApiSettings(port=gate.settings.port))
                except ApiStartError as err:
                    assert err.code == "api_bind_failed"
                else:
                    raise AssertionError("a second server on the same port started")
        # running_api cancelled the server while this stream was open: it returned in time.

    asyncio.run(asyncio.wait_for(scenario(), 60))
    _ = httpx  # imported for the type of the clients above


def test_not_ready_before_start_and_private_metrics(tmp_path: Path, tokens: Tokens) -> None:
    """A gateway whose start stopped after its local stores (no outbox writer, no link, no
    devices): /ready says 503 and why; metrics still scrape."""
    from edge_agent.api import create_app
    from edge_agent.config import ApiSettings, parse_config

    config = parse_config(
        f"gateway: {{site: s, id: g}}\nagent: {{data_dir: {tmp_path}}}\nmqtt: {{url: 'mqtt://127.0.0.1:9'}}\n"
    )
    agent = build_gateway(config, data_dir=tmp_path)

    async def scenario() -> None:
        # Only the "stores" component of the start table: the services exist, nothing runs.
        stores = next(spec.component for spec in agent.components() if spec.name == "stores")
        await stores.start()
        assert agent.services is not None
        try:
            app = create_app(agent.services, ApiSettings(metrics_public=False))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                ready = await client.get("/ready")
                assert ready.status_code == 503
                body = ready.json()
                assert body["ready"] is False and body["checks"]["outbox"] is False
                assert body["broker"] == "starting"
                assert (await client.get("/metrics")).status_code == 401
                scraped = await client.get("/metrics", headers=tokens.header("viewer"))
                assert scraped.status_code == 200
                assert 'edge_mqtt_state{state="starting"} 1.0' in scraped.text
                assert 'edge_outbox_pending{lane="alert"} 0.0' in scraped.text
                # Services exist only once the stores are open, so the alert book answers (before
                # the gateway, an agent without its alert book answered 503 not_ready here).
                alerts = await client.get("/api/v1/alerts", headers=tokens.header("viewer"))
                assert alerts.status_code == 200 and alerts.json()["alerts"] == [], alerts.text
        finally:
            await stores.stop()

    asyncio.run(scenario())
