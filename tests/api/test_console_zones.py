"""The console's cameras view in a real headless Chromium (Playwright): an admin sees a simulated
camera's real frame with its configured zones, draws a polygon and a line on the canvas, moves a
corner, gets the YAML from the gateway and copies it; a viewer sees the picture without any editing
control; on an agent started from its file, the admin applies a drawing and a second admin's
stale one is refused. The roll-call view: a point's session and who is present, late and absent,
updated live."""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config import load_config
from tests.api.conftest import Tokens, running_api, until
from tests.api.test_cameras_api import CAMERAS, HEIGHT, WIDTH, running_cameras
from tests.api.test_zone_apply import SHARED_ZONES
from tests.conftest import MosquittoBroker
from tests.support.chromium import CHROMIUM_ARGS, chromium_path

playwright_api = pytest.importorskip("playwright.async_api")

# Where the test clicks, as shares of the canvas on screen.
POLYGON = [(0.55, 0.15), (0.9, 0.15), (0.9, 0.6), (0.55, 0.6)]
LINE = [(0.1, 0.8), (0.45, 0.8)]

# The frame is on the canvas: most of it is no longer the empty grey.
FRAME_DRAWN = """() => {
    const c = document.getElementById('camera-canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let other = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] !== 51 || d[i + 1] !== 51 || d[i + 2] !== 51) other++;
    return other > (c.width * c.height) / 2;
}"""
# Most of the doorway zone's top or left edge (frame y = 20 or x = 20, from 40 to 140) drawn yellow
# over the picture: the person walking through the clip hides part of one edge at most.
YELLOW_EDGE = """(frameWidth) => {
    const c = document.getElementById('camera-canvas');
    const g = c.getContext('2d');
    const zoom = c.width / frameWidth;
    // Red and green well above blue (RGBA), on the canvas pixel nearest the edge or one beside it.
    const yellowNear = (x, y, dx, dy) => [-1, 0, 1].some((k) => {
        const d = g.getImageData(Math.round(x * zoom) + k * dx, Math.round(y * zoom) + k * dy, 1, 1).data;
        return Math.min(d[0], d[1]) - d[2] > 30;
    });
    let onTop = 0, onLeft = 0;
    for (let t = 40; t < 140; t++) {
        if (yellowNear(t, 20, 0, 1)) onTop++;
        if (yellowNear(20, t, 1, 0)) onLeft++;
    }
    return Math.max(onTop, onLeft) > 80;
}"""


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_path()


async def log_in(page: Any, base_url: str, token: str) -> None:
    await page.goto(base_url + "/")
    await page.fill("#token", token)
    await page.click("#login-form button")
    await page.wait_for_selector("#live:has-text('live')", timeout=10_000)
    await page.click("#view-tabs .tab[data-view='cameras-view']")
    await page.wait_for_selector(f"#camera-info:has-text('{WIDTH}×{HEIGHT}')", timeout=10_000)
    # The frame is on the canvas: most of it is no longer the empty canvas's grey.
    await page.wait_for_function(FRAME_DRAWN, timeout=10_000)


async def click_at(page: Any, share: tuple[float, float]) -> tuple[float, float]:
    """Click the canvas at ``share`` of its on-screen size; the frame pixel that is."""
    box = await page.locator("#camera-canvas").bounding_box()
    x, y = share[0] * box["width"], share[1] * box["height"]
    await page.mouse.click(box["x"] + x, box["y"] + y)
    return x * WIDTH / box["width"], y * HEIGHT / box["height"]


async def yaml_fragment(page: Any) -> dict[str, Any]:
    await page.evaluate("document.getElementById('zone-yaml').textContent = ''")
    await page.click("#get-yaml")
    await page.wait_for_function("() => document.getElementById('zone-yaml').textContent.length > 0")
    fragment: dict[str, Any] = yaml.safe_load(await page.text_content("#zone-yaml") or "")
    return fragment["security"]


def close_to(got: list[float], expected: tuple[float, float]) -> bool:
    # The console sends whole frame pixels.
    return abs(got[0] - expected[0]) <= 1 and abs(got[1] - expected[1]) <= 1


def test_admin_draws_zones_and_a_viewer_only_looks(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens, artifact_dir: Path, chromium: str
) -> None:
    async def scenario() -> None:
        async with (
            running_api(tmp_path, mosquitto.url, extra_config=CAMERAS) as gate,
            playwright_api.async_playwright() as pw,
        ):
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gate.base_url)
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await log_in(page, gate.base_url, tokens.admin)
                assert await page.is_visible("#zone-editor")
                # The configured zone and line are listed (and drawn) before any edit.
                await page.wait_for_selector("#shape-list li.zone[data-id='doorway']")
                assert await page.locator("#shape-list li.line[data-id='threshold']").count() == 1

                # A polygon by clicking its corners, named in the id field.
                await page.click("#tool-zone")
                corners = [await click_at(page, p) for p in POLYGON]
                await page.click("#finish-zone")
                await page.fill("#shape-id", "entrance")
                # A line: two ends, then its direction flipped.
                await page.click("#tool-line")
                ends = [await click_at(page, p) for p in LINE]
                await page.fill("#shape-id", "corridor")
                await page.fill("#label-a-to-b", "in")
                await page.click("#flip-line")

                security = await yaml_fragment(page)
                assert "valid in running configuration" in (await page.text_content("#yaml-status") or "")
                # Started without a file, the agent has nowhere to apply a drawing to: paste it.
                assert await page.is_disabled("#apply-zones")
                assert security["reference_size"] == [WIDTH, HEIGHT]
                zones = {z["id"]: z for z in security["zones"]}
                assert set(zones) == {"doorway", "entrance"}
                # The configured zone comes back unchanged (it was in pixels of the same size).
                assert zones["doorway"]["points"] == [[20, 20], [150, 20], [150, 160], [20, 160]]
                got = zones["entrance"]["points"]
                assert len(got) == 4 and all(close_to(g, c) for g, c in zip(got, corners, strict=True)), (
                    got,
                    corners,
                )
                lines = {ln["id"]: ln for ln in security["lines"]}
                # The configured normalized line, now in frame pixels; the new one flipped.
                assert lines["threshold"]["start"] == [240, 18] and lines["threshold"]["label_a_to_b"] == "in"
                corridor = lines["corridor"]
                assert close_to(corridor["start"], ends[1]) and close_to(corridor["end"], ends[0]), corridor
                assert corridor["label_a_to_b"] == "in"
                await page.screenshot(path=str(artifact_dir / "console-zones.png"), full_page=True)

                # Dragging a corner moves it.
                box = await page.locator("#camera-canvas").bounding_box()
                start = (box["x"] + POLYGON[2][0] * box["width"], box["y"] + POLYGON[2][1] * box["height"])
                await page.mouse.move(*start)
                await page.mouse.down()
                await page.mouse.move(start[0] + 20, start[1] + 30, steps=5)
                await page.mouse.up()
                moved = (
                    corners[2][0] + 20 * WIDTH / box["width"],
                    corners[2][1] + 30 * HEIGHT / box["height"],
                )
                security = await yaml_fragment(page)
                entrance = next(z for z in security["zones"] if z["id"] == "entrance")
                assert close_to(entrance["points"][2], moved), (entrance, moved)

                # Normalized coordinates: the same zone in shares of the frame, no reference size.
                await page.select_option("#zone-coords", "normalized")
                security = await yaml_fragment(page)
                assert "reference_size" not in security
                doorway = next(z for z in security["zones"] if z["id"] == "doorway")
                assert doorway["coords"] == "normalized" and doorway["points"][0] == [0.0625, 0.1111]

                # The copy button puts exactly the YAML shown on the clipboard.
                await page.click("#copy-yaml")
                await page.wait_for_selector("#yaml-status:has-text('copied')")
                assert await page.evaluate("navigator.clipboard.readText()") == await page.text_content(
                    "#zone-yaml"
                )

                # Deleting the zone the intrusion rule needs: the gateway says the file would not load.
                await page.click("#shape-list li.zone[data-id='doorway']")
                await page.click("#delete-shape")
                await page.click("#get-yaml")
                await page.wait_for_selector("#yaml-issues li:has-text('doorway')")
                assert "would not load" in (await page.text_content("#yaml-status") or "")

                # A polygon of two corners is refused with the gateway's reason.
                await page.click("#tool-zone")
                for p in POLYGON[:2]:
                    await click_at(page, p)
                await page.click("#get-yaml")
                await page.wait_for_selector("#yaml-status.error:has-text('needs 3 points')")
                assert errors == [], errors

                # A viewer sees the frame and the zones, and no editing control.
                viewer = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
                await log_in(viewer, gate.base_url, tokens.viewer)
                assert not await viewer.is_visible("#zone-editor")
                for control in ("#tool-zone", "#tool-line", "#get-yaml", "#delete-shape"):
                    assert not await viewer.is_visible(control), control
                # The configured zone is drawn on the canvas: its left edge (x = 20) is yellow.
                await viewer.wait_for_function(YELLOW_EDGE, arg=WIDTH, timeout=10_000)
                await viewer.screenshot(path=str(artifact_dir / "console-zones-viewer.png"), full_page=True)
            finally:
                await browser.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_admin_applies_a_drawing_and_a_stale_one_is_refused(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens, artifact_dir: Path, chromium: str
) -> None:
    """An agent started from its file: an admin draws a zone, reviews the YAML and applies it; the
    file and the camera's analysis have it, and the editor shows it as configured. A second admin
    who began drawing before that is told the zones changed, and nothing of theirs is applied."""

    async def scenario() -> None:
        async with running_cameras(tmp_path, mosquitto.url) as gate, playwright_api.async_playwright() as pw:
            assert gate.config_path is not None and gate.agent.services is not None
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                pages = []
                for _ in range(2):
                    context = await browser.new_context(viewport={"width": 1280, "height": 900})
                    page = await context.new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                    await log_in(page, gate.base_url, tokens.admin)
                    await page.wait_for_selector("#shape-list li.zone[data-id='doorway']")
                    pages.append((page, errors))
                (first, first_errors), (second, second_errors) = pages
                # The second admin starts a drawing over the zones as they are now.
                await second.click("#tool-zone")
                for p in POLYGON[:3]:
                    await click_at(second, p)
                await second.click("#finish-zone")

                await first.click("#tool-zone")
                corners = [await click_at(first, p) for p in POLYGON]
                await first.click("#finish-zone")
                await first.fill("#shape-id", "entrance")
                assert await first.is_disabled("#apply-zones")  # not before the YAML is reviewed
                security = await yaml_fragment(first)
                assert {z["id"] for z in security["zones"]} == {"doorway", "entrance"}
                assert f"valid in {gate.config_path}" in (await first.text_content("#yaml-status") or "")
                await first.click("#apply-zones")
                await first.wait_for_selector("#yaml-status.ok:has-text('Applied to camera cam-door')")
                assert "from its next frame" in (await first.text_content("#yaml-status") or "")
                await first.screenshot(path=str(artifact_dir / "console-zones-applied.png"), full_page=True)

                # In the file, in the running configuration, and in the analysis of the next frames.
                on_disk = load_config(gate.config_path).cameras[0].security
                assert on_disk is not None and [z.id for z in on_disk.zones] == ["doorway", "entrance"]
                got = on_disk.zones[1].points
                assert all(close_to([x, y], c) for (x, y), c in zip(got, corners, strict=True)), (
                    got,
                    corners,
                )
                assert gate.agent.services.config.current().cameras[0].security == on_disk
                worker = gate.agent.services.cameras.security_workers["cam-door"]

                def judged() -> list[str]:
                    judge = worker.pipeline.zone_judge
                    return [z.id for z in judge.config.zones] if judge is not None else []

                await until(lambda: judged() == ["doorway", "entrance"], "cam-door judged by the new zone")
                # The editor now shows the zone as configured, and has nothing left to apply.
                await first.wait_for_selector("#shape-list li.zone[data-id='entrance']")
                assert await first.is_disabled("#apply-zones")

                # The second admin's drawing was made over the old zones: refused, nothing applied.
                await yaml_fragment(second)
                await second.click("#apply-zones")
                await second.wait_for_selector(
                    "#yaml-status.error:has-text('changed since this drawing began')"
                )
                assert load_config(gate.config_path).cameras[0].security == on_disk
                assert first_errors == [] and second_errors == [], (first_errors, second_errors)
            finally:
                await browser.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_drawing_the_file_cannot_take_in_place_is_offered_for_pasting_only(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens, chromium: str
) -> None:
    """cam-door's zones are shared with cam-wide through a YAML anchor: the YAML is shown to paste,
    the status says why it cannot be applied in place, and Apply stays disabled."""

    async def scenario() -> None:
        async with (
            running_cameras(tmp_path, mosquitto.url, cameras=SHARED_ZONES) as gate,
            playwright_api.async_playwright() as pw,
        ):
            assert gate.config_path is not None
            original = gate.config_path.read_text()
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await log_in(page, gate.base_url, tokens.admin)
                await page.wait_for_selector("#shape-list li.zone[data-id='doorway']")
                await page.click("#tool-zone")
                for p in POLYGON:
                    await click_at(page, p)
                await page.click("#finish-zone")
                security = await yaml_fragment(page)
                assert len(security["zones"]) == 2
                status = await page.text_content("#yaml-status.error") or ""
                assert "by hand" in status and "cannot take it in place" in status, status
                assert "anchor" in (await page.text_content("#yaml-issues") or "")
                assert await page.is_disabled("#apply-zones") and not await page.is_disabled("#copy-yaml")
                assert gate.config_path.read_text() == original and errors == [], errors
            finally:
                await browser.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))


# Two classrooms with the same all-day lesson: a student recorded in both is "seen elsewhere".
ROOMS = """
cameras:
  - device: {kind: camera_sim, id: cam-7a, analysis_fps: 1, width: 160, height: 90}
    face: {point: room-7a, attendance: {sessions: [&maths {id: maths, name: Maths, start: "00:00",
           end: "23:59", weekdays: [mon, tue, wed, thu, fri, sat, sun], groups: [7A, 7B]}]}}
  - device: {kind: camera_sim, id: cam-7b, analysis_fps: 1, width: 160, height: 90}
    face: {point: room-7b, attendance: {sessions: [*maths]}}
"""


def test_rollcall_view_updates_live(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens, artifact_dir: Path, chromium: str
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, mosquitto.url, extra_config=ROOMS) as gate:
            services = gate.agent.services
            assert services is not None and gate.agent.attendance is not None
            await until(lambda: services.rollcall is not None, "the roll-call")
            rollcall, book, persons = services.rollcall, gate.agent.attendance, services.roster.index.persons
            assert rollcall is not None
            day = rollcall.local_now().date()
            lesson = rollcall.points["room-7a"]

            def record(point: str, person: str, minutes: int) -> None:
                # The book a card or a face decision writes to, at a chosen time of the lesson.
                at = datetime.combine(day, time(0, 0)) + timedelta(minutes=minutes)
                assert book.record(point, lesson, persons[person], at, method="card") is not None

            record("room-7a", "S1", 1)
            record("room-7b", "S1", 2)
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1280, "height": 800})
                    errors: list[str] = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    await page.goto(gate.base_url + "/")
                    await page.fill("#token", tokens.viewer)
                    await page.click("#login-form button")
                    await page.wait_for_selector("#live:has-text('live')", timeout=10_000)
                    await page.click("#view-tabs .tab[data-view='rollcall-view']")
                    await page.wait_for_selector("#rollcall-session:has-text('Maths')", timeout=10_000)
                    assert await page.input_value("#rollcall-point") == "room-7a"
                    assert "open" in (await page.text_content("#rollcall-session") or "")
                    present = page.locator("#rollcall-present li[data-person='S1']")
                    await present.wait_for()
                    assert "Student One" in (await present.text_content() or "")
                    assert "seen elsewhere" in (await present.locator(".flag").text_content() or "")
                    await page.wait_for_selector("#rollcall-absent li[data-person='S2']")

                    # A late arrival recorded while the page is open moves from absent to late.
                    record("room-7a", "S2", 30)
                    late = page.locator("#rollcall-late li[data-person='S2']")
                    await late.wait_for(timeout=10_000)
                    assert await page.locator("#rollcall-absent li[data-person='S2']").count() == 0
                    assert await late.locator(".flag").count() == 0
                    async with gate.client("viewer", tokens) as client:
                        sheet = (await client.get("/api/v1/attendance/points/room-7a/rollcall")).json()
                    counts = await page.text_content("#rollcall-counts") or ""
                    assert (
                        f"expected {sheet['expected']} · present 1 · late 1 · absent {len(sheet['absent'])}"
                        in counts
                    )
                    shown = await page.locator("#rollcall-absent li").evaluate_all(
                        "items => items.map((li) => li.dataset.person)"
                    )
                    assert shown == [a["person_id"] for a in sheet["absent"]]

                    # The other room: S1 is flagged there too.
                    await page.select_option("#rollcall-point", "room-7b")
                    await page.locator("#rollcall-present li.elsewhere[data-person='S1']").wait_for()
                    await page.screenshot(path=str(artifact_dir / "console-rollcall.png"), full_page=True)
                    assert errors == [], errors
                finally:
                    await browser.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
