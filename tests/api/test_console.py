"""The security console in a real headless Chromium (Debian's), driven by Playwright: log in, an
alert raised by the turnstile appears without a reload, acknowledge it, see it acknowledged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.api.conftest import Tokens, jpeg, raise_test_alert, running_api, until
from tests.api.test_api import outbox_events, wait_outbox
from tests.conftest import MosquittoBroker
from tests.support.chromium import CHROMIUM_ARGS, chromium_path

playwright_api = pytest.importorskip("playwright.async_api")


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_path()


def test_console_live_alert_and_acknowledge(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens, artifact_dir: Path, chromium: str
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, mosquitto.url) as gate, playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                console_errors: list[str] = []
                failed: list[str] = []
                page.on("pageerror", lambda e: console_errors.append(str(e)))
                page.on(
                    "response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
                )
                await page.goto(gate.base_url + "/")

                # A wrong token is refused with the API's message; the right one logs in.
                await page.fill("#token", "not-a-token-of-this-gateway")
                await page.click("#login-form button")
                await page.wait_for_selector("#login-error:has-text('not one this gateway accepts')")
                await page.fill("#token", tokens.operator)
                await page.click("#login-form button")
                await page.wait_for_selector("#live:has-text('live')", timeout=10_000)
                assert await page.text_content("#who-role") == "operator"

                # The device panel shows which reader is offline.
                await page.wait_for_selector("#devices-summary:has-text('reader-lab')")
                offline = page.locator("li.device.offline[data-id='reader-lab'] .state")
                assert await offline.text_content() == "OFFLINE"
                assert await page.locator("li.device.online[data-id='reader-in']").count() == 1

                # Alerts raised after the page loaded appear without a reload.
                before = len(await page.locator("#alerts li").all())
                gate.turnstile.raise_event("forced", "entry")
                raise_test_alert(gate.agent, "camera view changed", attachment=jpeg())
                forced = page.locator("li.alert.critical")
                await forced.wait_for(timeout=10_000)
                warning = page.locator("li.alert.warning")
                await warning.wait_for(timeout=10_000)
                assert len(await page.locator("#alerts li").all()) == before + 2
                assert "access.forced" in (await forced.text_content() or "")
                assert "device turnstile-1" in (await forced.text_content() or "")
                # The snapshot thumbnail loads through the session cookie (an <img> sends no header).
                thumb = warning.locator("img")
                await page.wait_for_function(
                    "img => img.complete && img.naturalWidth === 320", arg=await thumb.element_handle()
                )

                # The severity filter hides the warning.
                await page.select_option("#severity", "critical")
                assert await page.locator("li.alert.warning").count() == 0
                await page.select_option("#severity", "")

                await page.screenshot(path=str(artifact_dir / "console-alerts.png"), full_page=True)
                forced_id = await forced.get_attribute("data-id")
                await forced.locator("button.ack").click()
                done = page.locator(f"li.alert.acknowledged[data-id='{forced_id}']")
                await done.wait_for(timeout=10_000)
                assert "acknowledged by guard-1" in (await done.text_content() or "")
                await page.screenshot(path=str(artifact_dir / "console-acknowledged.png"), full_page=True)

                acked = await wait_outbox(gate.agent, "edu.campus.security.alert_acknowledged.v1")
                assert acked[0]["data"]["alert_id"] == forced_id
                assert acked[0]["data"]["via"] == "console" and acked[0]["data"]["by"] == "guard-1"

                # An acknowledgement made elsewhere (the API) reaches the open page through the stream.
                warning_id = await warning.get_attribute("data-id")
                assert gate.agent.services is not None
                gate.agent.services.alerts.acknowledge(str(warning_id), by="central-desk", via="api")
                await page.locator(f"li.alert.acknowledged[data-id='{warning_id}']").wait_for(timeout=10_000)

                # After a reload the session (token in sessionStorage) is kept and the list restored.
                await page.reload()
                await page.wait_for_selector("#live:has-text('live')", timeout=10_000)
                await page.locator(f"li.alert.acknowledged[data-id='{forced_id}']").wait_for()
                await until(
                    lambda: len(outbox_events(gate.agent, "edu.campus.gateway.audit.v1")) >= 1, "audit"
                )
                assert console_errors == [], console_errors
                # The one refused request is the wrong token's login.
                assert failed == [f"401 {gate.base_url}/api/v1/session"], failed
            finally:
                await browser.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
