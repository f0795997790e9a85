"""Applying zones drawn on the console, against a real agent started from its file with a simulated
camera's real frames: the drawing goes into the file (every other setting as it was, the previous
file kept), the running configuration and the camera's analysis take it from the next frame without
a restart, and only the drawing is applied (a hand edit of the file not reloaded stays unapplied);
every refusal (a stale drawing, two admins at once, a drawing the file or the running camera would
not take, a pushed file on probation, a full disk, a read-only file) changes nothing, with a code
each, counted and audited."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.config import load_config, pending_marker, previous_config
from tests.agent.test_config_edit import without_drawing
from tests.api.conftest import Tokens, raise_test_alert, until
from tests.api.test_api import outbox_events
from tests.api.test_cameras_api import CAMERAS, HEIGHT, WIDTH, running_cameras, square
from tests.conftest import MosquittoBroker
from tests.support.agent_harness import RunningGate
from tests.sync.test_outbox_disk import Hog, mount_tmpfs, unmount

APPLY = "/api/v1/cameras/cam-door/zones/apply"
# The doorway moved to the right half, the tripwire as it is configured.
MOVED = square(170, 20, 130)
THRESHOLD = {
    "id": "threshold",
    "coords": "normalized",
    "start": [0.75, 0.1],
    "end": [0.75, 0.9],
    "label_a_to_b": "in",
}


def _sharing_zones(cameras: str) -> str:
    wide = f"analysis_width: {WIDTH // 2}}}\n"
    shared = cameras.replace(
        "    security:\n      reference_size", "    security: &door\n      reference_size"
    )
    shared = shared.replace(wide, wide + "    security: *door\n")
    assert "&door" in shared and "*door" in shared
    return shared


SHARED_ZONES = _sharing_zones(CAMERAS)
"""The cameras of tests/api/test_cameras_api.py, cam-wide's ``security`` an alias of cam-door's."""


def drawing(points: list[list[float]], version: str | None, *, zone: str = "doorway") -> dict[str, Any]:
    return {
        "reference_size": [WIDTH, HEIGHT],
        "zones": [{"id": zone, "name": "Doorway", "points": points}],
        "lines": [THRESHOLD],
        "zones_version": version,
    }


async def door_view(client: httpx.AsyncClient) -> dict[str, Any]:
    cameras = (await client.get("/api/v1/cameras")).json()["cameras"]
    return next(c for c in cameras if c["id"] == "cam-door")


def judged_by(gate: RunningGate) -> list[tuple[float, float]] | None:
    """The corners of the doorway zone the camera's analysis judged its newest frame by."""
    assert gate.agent.services is not None
    worker = gate.agent.services.cameras.security_workers.get("cam-door")
    judge = worker.pipeline.zone_judge if worker is not None else None
    return None if judge is None else list(judge.config.zones[0].points)


def test_an_applied_drawing_is_in_the_file_and_the_analysis_without_a_restart(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens
) -> None:
    async def scenario() -> None:
        async with running_cameras(tmp_path, mosquitto.url) as gate:
            await check(gate, tokens)

    asyncio.run(asyncio.wait_for(scenario(), 120))


async def check(gate: RunningGate, tokens: Tokens) -> None:
    services = gate.agent.services
    path = gate.config_path
    assert services is not None and path is not None
    original = path.read_text()
    configured = [(20.0, 20.0), (150.0, 20.0), (150.0, 160.0), (20.0, 160.0)]
    await until(lambda: judged_by(gate) == configured, "cam-door analysed by its configured zones")
    viewer, operator, admin = (gate.client(r, tokens) for r in ("viewer", "operator", "admin"))
    async with viewer, operator, admin:
        version = (await door_view(viewer))["zones_version"]
        for client in (viewer, operator):
            refused = await client.post(APPLY, json=drawing(MOVED, version))
            assert refused.status_code == 403, refused.text

        # Two admins apply over the same zones at once: one drawing lands, the other is told the
        # zones changed under it (the file is edited once at a time, never by both).
        first, second = await asyncio.gather(
            admin.post(APPLY, json=drawing(MOVED, version)),
            admin.post(APPLY, json=drawing(square(30, 30, 60), version)),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
        applied, stale = (first, second) if first.status_code == 200 else (second, first)
        assert stale.json()["code"] == "zones_changed"
        body = applied.json()
        landed = applied.request.content
        assert body["live"] is True and body["config_file"] == str(path)
        assert (
            body["previous"] == str(previous_config(path)) and Path(body["previous"]).read_text() == original
        )
        assert body["zones_version"] != version

        # The file has the drawing and nothing else new; the running configuration is the file.
        moved = [(float(x), float(y)) for x, y in (MOVED if b"170" in landed else square(30, 30, 60))]
        on_disk = load_config(path)
        security = on_disk.cameras[0].security
        assert security is not None and list(security.zones[0].points) == moved
        assert security.lines[0].start == (0.75, 0.1) and [r.id for r in security.rules] == [
            "doorway-entered"
        ]
        assert without_drawing(on_disk, "cam-door") == without_drawing(
            load_config(previous_config(path)), "cam-door"
        )
        assert services.config.current() == on_disk
        view = await door_view(viewer)
        assert [tuple(p) for p in view["zones"][0]["points"]] == moved
        assert view["zones_version"] == body["zones_version"]
        # The analysis judges the next frames by it, no restart: the same worker, the new zone.
        worker = services.cameras.security_workers["cam-door"]
        await until(lambda: judged_by(gate) == moved, "cam-door analysed by the applied zone")
        assert services.cameras.security_workers["cam-door"] is worker

        after_apply = path.read_text()
        now = body["zones_version"]
        refusals: list[tuple[dict[str, Any], str, int]] = [
            # The rule needs the doorway zone: the file would not load without it.
            (drawing(MOVED, now, zone="hall"), "config_invalid", 422),
            (drawing([[1, 1], [50, 1]], now), "too_few_points", 422),
        ]
        for edit, code, status in refusals:
            answer = await admin.post(APPLY, json=edit)
            assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
        invalid = (await admin.post(APPLY, json=drawing(MOVED, now, zone="hall"))).json()
        assert any("doorway" in d["message"] for d in invalid["details"]), invalid
        wide = await admin.post("/api/v1/cameras/cam-wide/zones/apply", json=drawing(MOVED, None))
        assert (wide.status_code, wide.json()["code"]) == (409, "no_security_analysis")

        # A file pushed from the centre still on probation: installing now would make it the file
        # the probation falls back to.
        pending_marker(path).write_text("2026-12-04T00:00:00Z\n")
        probation = await admin.post(APPLY, json=drawing(MOVED, now))
        assert (probation.status_code, probation.json()["code"]) == (409, "config_on_probation")
        assert path.read_text() == after_apply
        pending_marker(path).unlink()

        # Nothing refused changed anything: file, running configuration, analysis.
        assert services.config.current() == on_disk and judged_by(gate) == moved
        beside = {p.name for p in path.parent.iterdir() if p.name.startswith(path.name)}
        assert beside == {path.name, previous_config(path).name}

        # While anything else writes the file (a push_config from the centre holds the same lock),
        # a drawing waits for it instead of installing a file made from the one being replaced.
        async with services.config.writing:
            waiting = asyncio.create_task(admin.post(APPLY, json=drawing(square(40, 40, 50), now)))
            await asyncio.sleep(0.5)
            assert not waiting.done()
        waited = await waiting
        assert waited.status_code == 200, waited.text
        now = waited.json()["zones_version"]

        # The file edited by hand since the start and not reloaded (as the command line's overrides
        # also make the running configuration differ from it): only the drawing is applied, and
        # the hand edit stays in the file for the next reload or restart.
        edited = path.read_text().replace("shutdown_timeout_s: 3,", "shutdown_timeout_s: 4,", 1)
        assert edited != path.read_text()
        path.write_text(edited)
        small = square(60, 60, 40)
        answer = await admin.post(APPLY, json=drawing(small, now))
        assert answer.status_code == 200, answer.text
        assert "shutdown_timeout_s: 4," in path.read_text()
        assert services.config.current().agent.shutdown_timeout_s == 3
        corners = [(float(x), float(y)) for x, y in small]
        assert list(load_config(path).cameras[0].security.zones[0].points) == corners  # type: ignore[union-attr]
        await until(
            lambda: judged_by(gate) == corners, "cam-door analysed by the zone drawn over a hand edit"
        )
        now = answer.json()["zones_version"]

        # The file's rule edited to watch a "hall" zone, the running camera's rule still watching the
        # doorway: a drawing of only a hall loads in the file but would leave the running rule
        # without its zone. Refused, nothing changed.
        path.write_text(path.read_text().replace("zone: doorway", "zone: hall"))
        before = path.read_text()
        hall = await admin.post(APPLY, json=drawing(small, now, zone="hall"))
        assert (hall.status_code, hall.json()["code"]) == (422, "config_invalid"), hall.text
        assert "running camera" in hall.json()["message"]
        assert path.read_text() == before and judged_by(gate) == corners

    counters = services.counters
    assert counters.get("api_zones_applied") == 3
    assert counters.get("api_zone_edit_refused_zones_changed") == 1
    assert counters.get("api_zone_edit_refused_config_invalid") == 3
    await gate.agent.outbox.flush()
    audits = [
        (a["data"]["action"], a["data"]["target"], a["data"]["result"], a["data"]["role"])
        for a in outbox_events(gate.agent, "edu.campus.gateway.audit.v1")
        if a["data"]["action"] == "apply_zones"
    ]
    assert audits.count(("apply_zones", "cam-door", "ok", "admin")) == 3
    assert ("apply_zones", "cam-door", "refused", "admin") in audits
    assert ("apply_zones", "cam-wide", "refused", "admin") in audits


def test_on_a_full_disk_a_drawing_is_refused_and_nothing_changes(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens
) -> None:
    """The agent's file and data on a small file system another writer fills: applying is a clear
    507, the file and the analysis are as they were, no half-written file is left; once space is
    back the same drawing applies."""
    fs = tmp_path / "fs"
    mount_tmpfs(fs)

    async def scenario() -> None:
        async with running_cameras(fs, mosquitto.url) as gate:
            assert gate.config_path is not None and gate.agent.services is not None
            original = gate.config_path.read_text()
            hog = Hog(fs)
            try:
                async with gate.client("admin", tokens) as admin:
                    version = (await door_view(admin))["zones_version"]

                    def squeeze() -> bool:
                        # The outbox gives up its space reserve on its first full write; an
                        # alert makes it write, then the hog takes that space too.
                        hog.fill()
                        raise_test_alert(gate.agent, "disk full")
                        return gate.agent.outbox.stats.reserve_released > 0

                    await until(squeeze, "the outbox's space reserve released")
                    await asyncio.sleep(0.2)
                    hog.fill()
                    full = await admin.post(APPLY, json=drawing(MOVED, version))
                    assert (full.status_code, full.json()["code"]) == (507, "write_failed"), full.text
                    assert gate.config_path.read_text() == original
                    assert sorted(p.name for p in fs.iterdir() if p.name.startswith("gateway.yaml")) == [
                        "gateway.yaml"
                    ]
                    zones = gate.agent.services.config.current().cameras[0].security
                    assert zones is not None and zones.zones[0].points[0] == (20, 20)
                    hog.release()
                    again = await admin.post(APPLY, json=drawing(MOVED, version))
                    assert again.status_code == 200, again.text
                    await until(
                        lambda: judged_by(gate) == [(float(x), float(y)) for x, y in MOVED], "applied"
                    )
            finally:
                hog.close()
            assert gate.agent.services.counters.get("api_zone_edit_refused_write_failed") == 1

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        unmount(fs)


def _mount(*args: str | Path) -> bool:
    return subprocess.run(["mount", *map(str, args)], capture_output=True).returncode == 0


def test_a_configuration_the_agent_may_not_write_is_refused_with_what_to_do(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens
) -> None:
    """The shipped systemd unit keeps /etc/edge-agent read-only to the service. Here the agent's
    file is on a read-only mount (its data directory a writable one inside it): applying is a
    clear 409 saying what to do, nothing changes, and the agent goes on writing its data."""
    box = tmp_path / "box"
    data = box / "data"
    data.mkdir(parents=True)
    if not _mount("--bind", data, data):
        pytest.skip("cannot bind-mount here; needs root")

    async def scenario() -> None:
        async with running_cameras(box, mosquitto.url) as gate:
            assert gate.config_path is not None and gate.agent.services is not None
            original = gate.config_path.read_text()
            # The box again on top of itself with its data mount, then only the top made read-only.
            assert _mount("--rbind", box, box) and _mount("-o", "remount,bind,ro", box)
            try:
                async with gate.client("admin", tokens) as admin:
                    version = (await door_view(admin))["zones_version"]
                    refused = await admin.post(APPLY, json=drawing(MOVED, version))
                body = refused.json()
                assert (refused.status_code, body["code"]) == (409, "config_read_only"), refused.text
                assert "paste the YAML" in body["message"] and "OPERATIONS" in body["message"]
                assert gate.config_path.read_text() == original
                zones = gate.agent.services.config.current().cameras[0].security
                assert zones is not None and zones.zones[0].points[0] == (20, 20)
                # Its data is still written: an alert raised now is committed to the outbox.
                raise_test_alert(gate.agent, "after a refused apply")
                await gate.agent.outbox.flush()
                assert any(
                    e["data"]["reason"] == "after a refused apply"
                    for e in outbox_events(gate.agent, "edu.campus.security.test_alert.v1")
                )
            finally:
                subprocess.run(["umount", "-l", str(box)], capture_output=True)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_zones_the_file_shares_between_cameras_are_for_pasting_not_applying(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens
) -> None:
    """cam-wide's ``security`` is an alias of cam-door's (``&door`` / ``*door``): both are the same
    lines of the file, so splicing a drawing for either would redraw the other too (in the file
    only: the other camera would go on with its old zones until a restart). The YAML to paste is
    still given, with the check saying why it cannot go in place; applying is a 409
    ``config_layout``, and nothing changes."""

    async def scenario() -> None:
        async with running_cameras(tmp_path, mosquitto.url, cameras=SHARED_ZONES) as gate:
            assert gate.config_path is not None and gate.agent.services is not None
            original = gate.config_path.read_text()
            async with gate.client("admin", tokens) as admin:
                cameras = {c["id"]: c for c in (await admin.get("/api/v1/cameras")).json()["cameras"]}
                for camera in ("cam-wide", "cam-door"):
                    version = cameras[camera]["zones_version"]
                    plain = {k: v for k, v in drawing(MOVED, None).items() if k != "zones_version"}
                    sheet = await admin.post(f"/api/v1/cameras/{camera}/zones", json=plain)
                    assert sheet.status_code == 200, sheet.text
                    body = sheet.json()
                    assert "170" in body["yaml"] and body["validation"]["valid"] is False
                    assert body["paste_only"] is True
                    [issue] = body["validation"]["issues"]
                    assert "anchor" in issue["message"] and "paste" in issue["message"], issue
                    applied = await admin.post(
                        f"/api/v1/cameras/{camera}/zones/apply", json=drawing(MOVED, version)
                    )
                    assert (applied.status_code, applied.json()["code"]) == (409, "config_layout"), (
                        applied.text
                    )
                    assert gate.config_path.read_text() == original
            running = gate.agent.services.config.current()
            assert [c.security.zones[0].points[0] for c in running.cameras if c.security is not None] == [
                (20, 20),
                (20, 20),
            ]
            counters = gate.agent.services.counters
            assert counters.get("api_zone_edit_refused_config_layout") == 4

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_file_with_windows_line_ends_keeps_them_through_an_apply(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens
) -> None:
    async def scenario() -> None:
        async with running_cameras(tmp_path, mosquitto.url) as gate:
            assert gate.config_path is not None
            crlf = gate.config_path.read_text().replace("\n", "\r\n").encode()
            gate.config_path.write_bytes(crlf)
            async with gate.client("admin", tokens) as admin:
                version = (await door_view(admin))["zones_version"]
                applied = await admin.post(APPLY, json=drawing(MOVED, version))
                assert applied.status_code == 200, applied.text
            after = gate.config_path.read_bytes()
            assert b"[170, 20]" in after and b"\n" not in after.replace(b"\r\n", b"")
            assert previous_config(gate.config_path).read_bytes() == crlf

    asyncio.run(asyncio.wait_for(scenario(), 120))
