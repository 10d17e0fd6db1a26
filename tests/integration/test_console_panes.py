"""The console's broadcast and admin panes (centre/static/broadcast.js, admin.js) in Debian's
chromium driven by Playwright, against a real centre (uvicorn, real centre broker, an enrolled
test gateway that answers with signed speaker reports). Screenshots go to the run's output
folder."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import HTTPException
from fastapi.responses import HTMLResponse, Response
from playwright.sync_api import Browser, Page, expect, sync_playwright

from centre.access import ACCESS, PUBLIC
from centre.api import create_app
from harness.fakegateway import signed_reports
from tests.centre_site import GW, HOST, Site, open_site
from transport.mqtt import MqttClient

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
HARNESS = Path(__file__).resolve().parent.parent / "forms_harness.html"
PANE_FILES = ("i18n-forms.js", "broadcast.js", "admin.js", "forms.css")
VILLAGES = ["v-xiaocun", "v-dacun"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def output_dir() -> Path:
    base = Path(os.environ.get("ONEKEY_TEST_OUTPUT", "build/test-output"))
    out = base / "screenshots" / "panes"
    out.mkdir(parents=True, exist_ok=True)
    return out


@dataclass
class Centre:
    site: Site
    url: str
    http: httpx.Client


@pytest.fixture
def centre(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Centre]:
    """A real centre in a thread, with the panes' test harness page added at /test-forms."""
    with open_site(tmp_path, villages=VILLAGES) as site:
        app = create_app(site.config)
        page = HARNESS.read_text(encoding="utf-8")

        async def harness() -> HTMLResponse:
            return HTMLResponse(page)

        async def static(name: str) -> Response:
            if name not in PANE_FILES:
                raise HTTPException(404)
            text = resources.files("centre").joinpath("static", name).read_text(encoding="utf-8")
            kind = "text/css" if name.endswith(".css") else "text/javascript"
            return Response(text, media_type=kind)

        app.add_api_route("/test-forms", harness, methods=["GET"], include_in_schema=False)
        app.add_api_route("/test-forms/static/{name}", static, methods=["GET"], include_in_schema=False)
        monkeypatch.setitem(ACCESS, ("GET", "/test-forms"), PUBLIC)
        monkeypatch.setitem(ACCESS, ("GET", "/test-forms/static/{name}"), PUBLIC)
        cfg = site.config
        server = uvicorn.Server(uvicorn.Config(
            app, host=cfg.http_host, port=cfg.http_port, lifespan="on", log_config=None,
            access_log=False,
        ))
        thread = threading.Thread(target=server.run, name="centre", daemon=True)
        thread.start()
        url = f"http://{cfg.http_host}:{cfg.http_port}"
        try:
            with httpx.Client(base_url=url, timeout=5) as http:
                _wait(lambda: server.started or not thread.is_alive(), 15)
                assert server.started, "the centre did not start"
                _wait(lambda: bool(http.get("/api/metrics").json()["connected"]), 15)
                yield Centre(site, url, http)
        finally:
            server.should_exit = True
            thread.join(15)


def _wait(check: Callable[[], bool], within: float) -> None:
    import time

    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def open_pane(browser: Browser, centre: Centre, pane: str, role: str, width: int = 1200) -> Page:
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    page = ctx.new_page()
    page.goto(f"{centre.url}/test-forms?pane={pane}&role={role}&user={role}-1&stream=0")
    page.wait_for_function("window.__ready === true", timeout=10_000)
    return page


def report(site: Site, bc_id: str, items: list[tuple[str, str, int]]) -> None:
    """The test gateway's signed speaker reports for `bc_id`."""

    async def run() -> None:
        client = MqttClient(f"{GW}-test", HOST, site.broker.port, tls=site.gw_tls)
        await client.connect()
        try:
            await client.publish(*signed_reports(site.gw_key, GW, bc_id, items), qos=1)
        finally:
            await client.disconnect()

    # Playwright's sync API holds this thread's event loop: publish from another thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result(timeout=20)


def test_operator_sees_broadcasts_read_only_without_a_compose_control(
    centre: Centre, browser: Browser
) -> None:
    page = open_pane(browser, centre, "broadcast", "operator")
    page.get_by_test_id("bc-readonly").wait_for()
    assert page.get_by_test_id("bc-new").count() == 0
    assert page.get_by_test_id("bc-form").count() == 0
    page.screenshot(path=str(output_dir() / "broadcast-operator.png"))


def test_broadcaster_sends_to_a_village_picked_by_name_and_sees_coverage_live(
    centre: Centre, browser: Browser
) -> None:
    page = open_pane(browser, centre, "broadcast", "broadcaster")
    page.get_by_test_id("bc-new").click()
    page.locator('input[data-village="v-xiaocun"]').check()
    page.get_by_test_id("bc-text").fill("村委会通知：明天上午九点在村部开会。")
    page.get_by_test_id("bc-preview").click()
    preview = page.get_by_test_id("bc-confirm")
    preview.wait_for()
    assert "村委会通知" in page.get_by_test_id("bc-preview-text").inner_text()
    assert "v-xiaocun" in page.get_by_test_id("bc-preview-where").inner_text()
    page.screenshot(path=str(output_dir() / "broadcast-preview.png"))
    page.get_by_test_id("bc-send").click()
    row = page.locator("tr[data-bc]").first
    row.wait_for()
    bc_id = row.get_attribute("data-bc")
    assert bc_id
    stored = centre.http.get(f"/api/broadcasts/{bc_id}").json()
    assert stored["area"] == [{"village": "v-xiaocun", "groups": [], "speakers": []}]

    sent = stored["sent"]
    report(centre.site, bc_id, [("spk-1", "queued", sent + 10), ("spk-2", "queued", sent + 10)])
    report(centre.site, bc_id, [("spk-1", "played", sent + 9000)])
    _wait(lambda: centre.http.get(f"/api/broadcasts/{bc_id}").json()["summary"]["speakers"]
          == {"played": 1, "queued": 1}, 10)
    # The server tells the pane that the broadcast changed; the pane fetches it again.
    page.evaluate("id => window.__live.emit('broadcast', {id: id})", bc_id)
    cov = page.locator(f'tr[data-bc="{bc_id}"] [data-testid="bc-coverage"]')
    expect(cov).to_have_text("1 / 2")
    page.screenshot(path=str(output_dir() / "broadcast-coverage.png"))


def test_extreme_to_a_whole_village_asks_for_an_explicit_confirmation(
    centre: Centre, browser: Browser
) -> None:
    page = open_pane(browser, centre, "broadcast", "broadcaster")
    page.get_by_test_id("bc-new").click()
    page.locator('input[data-village="v-dacun"]').check()
    page.get_by_test_id("bc-text").fill("山洪预警：请立即撤离到安全地带。")
    page.get_by_test_id("bc-severity").select_option("Extreme")
    page.get_by_test_id("bc-preview").click()
    page.get_by_test_id("bc-extreme").wait_for()
    send = page.get_by_test_id("bc-send")
    assert send.is_disabled()
    page.screenshot(path=str(output_dir() / "broadcast-extreme.png"))
    page.get_by_test_id("bc-extreme-tick").check()
    assert send.is_enabled()


XSS_NAME = '<script>window.__pwned = 1</script>张<b>三</b>'
XSS_NOTE = '<img src=x onerror="window.__pwned = 2">耳背，请大声说话'


def test_household_names_and_notes_holding_html_render_as_text_in_list_and_editor(
    centre: Centre, browser: Browser
) -> None:
    r = centre.http.put("/api/households/h-xss", json={
        "village": "v-xiaocun", "name": XSS_NAME, "notes": XSS_NOTE, "address": "<i>一组</i> 3 号",
    })
    assert r.status_code == 200, r.text
    page = open_pane(browser, centre, "admin", "admin")
    page.get_by_test_id("adm-tab-households").click()
    row = page.locator('tr[data-hh="h-xss"]')
    expect(row.get_by_test_id("adm-hh-name")).to_have_text(XSS_NAME)
    row.get_by_test_id("adm-hh-open").click()
    expect(page.get_by_test_id("adm-hh-f-name")).to_have_value(XSS_NAME)
    expect(page.get_by_test_id("adm-hh-f-notes")).to_have_value(XSS_NOTE)
    pane = page.get_by_test_id("adm-pane")
    assert pane.locator("script, img, b, i").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(output_dir() / "admin-household-html-as-text.png"), full_page=True)
