"""The console's broadcast and admin panes (centre/static/broadcast.js, admin.js) in Debian's
chromium driven by Playwright, through the console's page, against a real centre (uvicorn, the
real centre broker, an enrolled test gateway that answers with signed speaker reports), staff
logged in through the page's form (session cookie, CSRF token). Screenshots go to the run's
output folder (tests/browser_support.py)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from centre.auth import Role
from centre.enrol import add_staff_async
from harness.fakegateway import signed_reports
from tests.browser_support import (
    browser_fixture,
    log_in,
    page_fixture,
    pw_api,
    shot,
    shots_fixture,
)
from tests.centre_site import GW, HOST, Site, centre_running, open_site, poll
from transport.mqtt import MqttClient

expect = pw_api.expect
Page = pw_api.Page
__all__ = ["browser_fixture", "page_fixture", "shots_fixture"]  # the shared fixtures, used here

VILLAGES = ["v-xiaocun", "v-dacun"]
PASSWORD = "panes-test-password-1"
STAFF = {
    "op-1": ("值班员一", Role.OPERATOR),
    "bc-1": ("广播员一", Role.BROADCASTER),
    "bc-2": ("广播员二", Role.BROADCASTER),
    "admin-1": ("管理员一", Role.ADMIN),
}


@dataclass
class Centre:
    site: Site
    base: str
    http: httpx.AsyncClient  # an admin API token
    tokens: dict[str, str]  # username -> an API token of that account

    def as_user(self, username: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=5,
                                 headers={"Authorization": f"Bearer {self.tokens[username]}"})


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with open_site(tmp_path, villages=VILLAGES) as s:
        yield s


@pytest.fixture
async def centre(site: Site) -> AsyncIterator[Centre]:
    tokens = {}
    for username, (display, role) in STAFF.items():
        secret = await add_staff_async(site.config, username, display, role, PASSWORD, token_name="test")
        assert secret
        tokens[username] = secret
    async with centre_running(site.config) as http:
        yield Centre(site, str(http.base_url).rstrip("/"), http, tokens)


def pane(tab: str) -> str:
    """The element a pane is mounted in."""
    return f"#pane-{tab}"


async def open_tab(page: Page, centre: Centre, username: str, tab: str) -> None:
    """Log in as `username` through the console's form and show the pane `tab`."""
    await log_in(page, centre.base, username, PASSWORD)
    await page.click(f'#tabs [data-pane="{tab}"]')


async def log_out(page: Page) -> None:
    await page.click("#logout")
    await page.wait_for_selector("#login:not([hidden])")


async def report(site: Site, bc_id: str, items: list[tuple[str, str, int]]) -> None:
    """The test gateway's signed speaker reports for `bc_id`."""
    client = MqttClient(f"{GW}-test", HOST, site.broker.port, tls=site.gw_tls)
    await client.connect()
    try:
        await client.publish(*signed_reports(site.gw_key, GW, bc_id, items), qos=1)
    finally:
        await client.disconnect()


# -- broadcasts


async def test_an_operator_has_no_compose_control_and_the_api_refuses_them(
    centre: Centre, page: Page, shots: Path
) -> None:
    await open_tab(page, centre, "op-1", "broadcasts")
    await page.get_by_test_id("bc-readonly").wait_for()
    assert await page.get_by_test_id("bc-new").count() == 0
    assert await page.get_by_test_id("bc-form").count() == 0
    await shot(page, shots, "operator-broadcasts")
    body = {"by": "op-1", "urgency": "Expected", "severity": "Minor", "certainty": "Observed",
            "valid_for_s": 600, "area": [{"village": "v-xiaocun"}], "text": "不应发出"}
    # Through the page's own session (cookie and CSRF token) and with the operator's token.
    status = await page.evaluate(
        """async (body) => {
             const s = await (await fetch("/api/session")).json();
             const r = await fetch("/api/broadcasts", {method: "POST", body: JSON.stringify(body),
               headers: {"Content-Type": "application/json", "X-CSRF-Token": s.csrf}});
             return r.status;
           }""", body)
    assert status == 403
    async with centre.as_user("op-1") as op:
        assert (await op.post("/api/broadcasts", json=body)).status_code == 403
    assert (await centre.http.get("/api/broadcasts")).json() == []


async def test_a_broadcaster_sends_to_a_village_picked_by_name_and_sees_coverage_live(
    centre: Centre, page: Page, shots: Path
) -> None:
    await open_tab(page, centre, "bc-1", "broadcasts")
    await page.get_by_test_id("bc-new").click()
    await page.locator('input[data-village="v-xiaocun"]').check()
    await page.get_by_test_id("bc-text").fill("村委会通知：明天上午九点在村部开会。")
    await page.get_by_test_id("bc-preview").click()
    await page.get_by_test_id("bc-confirm").wait_for()
    await expect(page.get_by_test_id("bc-preview-text")).to_contain_text("村委会通知")
    await expect(page.get_by_test_id("bc-preview-where")).to_contain_text("v-xiaocun")
    await shot(page, shots, "preview")
    await page.get_by_test_id("bc-send").click()
    row = page.locator("tr[data-bc]").first
    await row.wait_for()
    bc_id = await row.get_attribute("data-bc")
    assert bc_id
    stored = (await centre.http.get(f"/api/broadcasts/{bc_id}")).json()
    assert stored["area"] == [{"village": "v-xiaocun", "groups": [], "speakers": []}]
    assert stored["text"] == "村委会通知：明天上午九点在村部开会。"

    sent = stored["sent"]
    await report(centre.site, bc_id, [("spk-1", "queued", sent + 10), ("spk-2", "queued", sent + 10)])
    await report(centre.site, bc_id, [("spk-1", "played", sent + 9000)])
    # No reload: the centre pushes the change and the pane fetches the broadcast again.
    cov = page.locator(f'tr[data-bc="{bc_id}"] [data-testid="bc-coverage"]')
    await expect(cov).to_have_text("1 / 2")
    await shot(page, shots, "coverage")
    # Its gateways and speakers, live too.
    await page.locator(f'tr[data-bc="{bc_id}"]').get_by_test_id("bc-details").click()
    speakers = page.get_by_test_id("bc-detail-speakers")
    await expect(speakers).to_contain_text("spk-1")
    await expect(speakers).to_contain_text("已播放")
    await report(centre.site, bc_id, [("spk-2", "played", sent + 9500)])
    await expect(cov).to_have_text("2 / 2")
    await expect(speakers.locator("tr", has_text="spk-2")).to_contain_text("已播放")
    await shot(page, shots, "details")


async def test_a_broadcaster_cancels_a_live_broadcast_with_a_reason(
    centre: Centre, page: Page, shots: Path
) -> None:
    async with centre.as_user("bc-2") as bc2:
        r = await bc2.post("/api/broadcasts", json={
            "urgency": "Expected", "severity": "Minor", "certainty": "Observed", "valid_for_s": 3600,
            "area": [{"village": "v-dacun"}], "text": "停水通知：今天下午两点到五点停水。"})
        assert r.status_code == 201, r.text
        bc_id = r.json()["id"]
    await open_tab(page, centre, "bc-1", "broadcasts")
    row = page.locator(f'[data-testid="bc-table"] tr[data-bc="{bc_id}"]')
    await row.get_by_test_id("bc-cancel").click()
    await row.get_by_test_id("bc-cancel-note").fill("已恢复供水")
    await shot(page, shots, "cancel-confirm")
    await row.get_by_test_id("bc-cancel-yes").click()
    await expect(row.get_by_test_id("bc-state")).to_have_text("已撤销")
    assert await row.get_by_test_id("bc-cancel").count() == 0
    stored = (await centre.http.get(f"/api/broadcasts/{bc_id}")).json()
    assert (stored["state"], stored["cancelled_by"], stored["cancel_note"]) == (
        "cancelled", "bc-1", "已恢复供水")
    await shot(page, shots, "cancelled")


async def test_an_extreme_broadcast_to_a_whole_village_asks_for_an_explicit_confirmation(
    centre: Centre, page: Page, shots: Path
) -> None:
    await open_tab(page, centre, "bc-1", "broadcasts")
    await page.get_by_test_id("bc-new").click()
    await page.locator('input[data-village="v-dacun"]').check()
    await page.get_by_test_id("bc-text").fill("山洪预警：请立即撤离到安全地带。")
    await page.get_by_test_id("bc-severity").select_option("Extreme")
    await page.get_by_test_id("bc-preview").click()
    await page.get_by_test_id("bc-extreme").wait_for()
    await expect(page.get_by_test_id("bc-extreme")).to_contain_text("v-dacun")
    send = page.get_by_test_id("bc-send")
    await expect(send).to_be_disabled()
    await shot(page, shots, "extreme-confirmation")
    await page.get_by_test_id("bc-extreme-tick").check()
    await expect(send).to_be_enabled()
    async with page.expect_request(lambda r: r.url.endswith("/api/broadcasts") and r.method == "POST") as req:
        await send.click()
    sent = json.loads((await req.value).post_data or "{}")
    assert sent["severity"] == "Extreme" and sent["confirm_extreme"] is True
    assert sent["area"] == [{"village": "v-dacun", "groups": []}]
    row = page.locator("tr[data-bc]").first
    await row.wait_for()
    stored = (await centre.http.get(f"/api/broadcasts/{await row.get_attribute('data-bc')}")).json()
    assert stored["severity"] == "Extreme" and stored["by"] == "bc-1"


async def test_a_second_broadcaster_approves_what_the_settings_hold_back(
    centre: Centre, page: Page, shots: Path
) -> None:
    # The admin requires a second approval for Extreme to a whole village, in the settings tab.
    await open_tab(page, centre, "admin-1", "admin")
    await page.get_by_test_id("adm-tab-settings").click()
    box = page.get_by_test_id("adm-settings-broadcasts")
    await box.get_by_test_id("set-approval").select_option("extreme")
    await box.get_by_test_id("set-save").click()
    await expect(page.get_by_test_id("adm-msg")).to_have_text("已保存")
    assert (await centre.http.get("/api/settings/broadcasts")).json()["approval"] == "extreme"
    await shot(page, shots, "settings")
    await log_out(page)

    await open_tab(page, centre, "bc-1", "broadcasts")
    await page.get_by_test_id("bc-new").click()
    await page.locator('input[data-village="v-xiaocun"]').check()
    await page.get_by_test_id("bc-text").fill("山洪预警：请立即撤离到安全地带。")
    await page.get_by_test_id("bc-severity").select_option("Extreme")
    await page.get_by_test_id("bc-preview").click()
    await page.get_by_test_id("bc-extreme-tick").check()
    await page.get_by_test_id("bc-send").click()
    waiting = page.get_by_test_id("bc-approval-table")
    await expect(waiting).to_contain_text("须由另一位广播员批准")
    assert await waiting.get_by_test_id("bc-approve").count() == 0
    bc_id = await waiting.locator("tr[data-bc]").first.get_attribute("data-bc")
    assert (await centre.http.get(f"/api/broadcasts/{bc_id}")).json()["state"] == "awaiting_approval"
    await shot(page, shots, "awaiting-approval")
    await log_out(page)

    await open_tab(page, centre, "bc-2", "broadcasts")
    await page.get_by_test_id("bc-approval-table").get_by_test_id("bc-approve").click()
    await expect(page.get_by_test_id("bc-approvals")).to_be_hidden()
    row = page.locator(f'[data-testid="bc-table"] tr[data-bc="{bc_id}"]')
    await expect(row).to_contain_text("批准人 bc-2")
    stored = (await centre.http.get(f"/api/broadcasts/{bc_id}")).json()
    assert stored["state"] in ("sending", "sent") and stored["approved_by"] == "bc-2"
    await shot(page, shots, "approved")


# -- admin


async def test_the_admin_pane_is_refused_to_other_roles(centre: Centre, page: Page) -> None:
    # No tab for them; opened by its address anyway, the pane says it is for admins only.
    await log_in(page, centre.base, "bc-1", PASSWORD)
    assert await page.is_hidden('#tabs [data-pane="admin"]')
    await page.evaluate("document.getElementById('pane-admin').hidden = false")
    await expect(page.locator(pane("admin"))).to_contain_text("只有管理员")
    assert await page.get_by_test_id("adm-tab-users").count() == 0


async def test_an_admin_adds_a_user_who_can_then_log_in(
    centre: Centre, page: Page, shots: Path
) -> None:
    await open_tab(page, centre, "admin-1", "admin")
    await page.get_by_test_id("adm-user-name").fill("zhang-op")
    await page.get_by_test_id("adm-user-display").fill("张值班")
    await page.get_by_test_id("adm-user-role").select_option("operator")
    await page.get_by_test_id("adm-user-password").fill("a-new-operator-password-7")
    await page.get_by_test_id("adm-user-add").click()
    await page.locator('tr[data-user="zhang-op"]').wait_for()
    await shot(page, shots, "user-added")
    users = {u["username"]: u for u in (await centre.http.get("/api/users")).json()}
    assert users["zhang-op"]["role"] == "operator" and users["zhang-op"]["display_name"] == "张值班"
    async with httpx.AsyncClient(base_url=centre.base, timeout=5) as anon:
        r = await anon.post("/api/session", json={"username": "zhang-op",
                                                  "password": "a-new-operator-password-7"})
        assert r.status_code == 200, r.text

    # A token: its secret shown once, working at once; revoked, refused at once.
    row = page.locator('tr[data-user="zhang-op"]')
    await row.get_by_test_id("adm-user-tokens").click()
    await row.get_by_test_id("adm-token-name").fill("夜班脚本")
    await row.get_by_test_id("adm-token-create").click()
    secret = (await row.get_by_test_id("adm-token-secret").inner_text()).strip()
    assert secret
    async with httpx.AsyncClient(base_url=centre.base, timeout=5,
                                 headers={"Authorization": f"Bearer {secret}"}) as script:
        assert (await script.get("/api/session")).status_code == 200
        await row.get_by_test_id("adm-token-revoke").click()
        await expect(row.locator("[data-testid=adm-tokens]")).to_contain_text("已吊销")
        assert (await script.get("/api/session")).status_code == 401


HOUSEHOLD_CONTACTS = [
    ("leader", "王建国", "", "13900000091"),
    ("grid", "赵志强", "", "13900000093"),
    ("family", "张伟", "儿子", "13900000002"),
    ("family", "张丽", "女儿", "13900000003"),
    ("doctor", "孙卫东", "", "13900000094"),
]


async def test_an_admin_adds_a_household_with_its_contacts_in_calling_order(
    centre: Centre, page: Page, shots: Path
) -> None:
    await open_tab(page, centre, "admin-1", "admin")
    await page.get_by_test_id("adm-tab-households").click()
    await page.get_by_test_id("adm-hh-new").click()
    form = page.get_by_test_id("adm-hh-form")
    await form.get_by_test_id("adm-hh-f-id").fill("h-101")
    await form.get_by_test_id("adm-hh-f-village").fill("v-xiaocun")
    await form.get_by_test_id("adm-hh-f-group").fill("第一村民小组")
    await form.get_by_test_id("adm-hh-f-name").fill("张桂英")
    await form.get_by_test_id("adm-hh-f-address").fill("小村一组 3 号")
    await form.get_by_test_id("adm-hh-f-medical").fill("高血压，每天早晚服药")
    await form.get_by_test_id("adm-hh-f-language_notes").fill("左耳听力差")
    await form.get_by_test_id("adm-hh-f-lat").fill("25.04012")
    await form.get_by_test_id("adm-hh-f-lon").fill("102.71231")
    # The second family contact entered first, then moved up: family contacts are called in
    # the order the card gives.
    order = [HOUSEHOLD_CONTACTS[i] for i in (0, 1, 3, 2, 4)]
    for kind, name, relation, phone in order:
        await form.get_by_test_id("adm-hh-add-contact").click()
        c = form.get_by_test_id("adm-hh-contact").last
        await c.get_by_test_id("adm-hh-c-kind").select_option(kind)
        await c.get_by_test_id("adm-hh-c-name").fill(name)
        if relation:
            await c.get_by_test_id("adm-hh-c-relation").fill(relation)
        await c.get_by_test_id("adm-hh-c-phone").fill(phone)
    await form.get_by_test_id("adm-hh-contact").nth(3).get_by_test_id("adm-hh-c-up").click()
    await expect(form.get_by_test_id("adm-hh-c-name").nth(2)).to_have_value("张伟")
    await shot(page, shots, "household-editor")
    await form.get_by_test_id("adm-hh-save").click()
    await page.locator('tr[data-hh="h-101"]').wait_for()
    card = (await centre.http.get("/api/households/h-101")).json()
    assert (card["name"], card["village"], card["group"], card["lat"], card["lon"]) == (
        "张桂英", "v-xiaocun", "第一村民小组", 25.04012, 102.71231)
    assert card["medical"] == "高血压，每天早晚服药" and card["language_notes"] == "左耳听力差"
    assert [(c["kind"], c["name"], c["relation"], c["phone"]) for c in card["contacts"]] == (
        HOUSEHOLD_CONTACTS)
    audit = (await centre.http.get("/api/audit", params={"target": "h-101"})).json()
    assert audit[0]["action"] == "household.put" and audit[0]["actor"] == "admin-1"


XSS_NAME = '<script>window.__pwned = 1</script>张<b>三</b>'
XSS_NOTE = '<img src=x onerror="window.__pwned = 2">耳背，请大声说话'


async def test_household_names_and_notes_holding_html_render_as_text(
    centre: Centre, page: Page, shots: Path
) -> None:
    r = await centre.http.put("/api/households/h-xss", json={
        "village": "v-xiaocun", "name": XSS_NAME, "notes": XSS_NOTE, "medical": XSS_NOTE,
        "address": "<i>一组</i> 3 号",
        "contacts": [{"kind": "family", "name": XSS_NAME, "relation": "<u>儿子</u>",
                      "phone": "13900000002"}],
    })
    assert r.status_code == 200, r.text
    await open_tab(page, centre, "admin-1", "admin")
    await page.get_by_test_id("adm-tab-households").click()
    row = page.locator('tr[data-hh="h-xss"]')
    await expect(row.get_by_test_id("adm-hh-name")).to_have_text(XSS_NAME)
    await row.get_by_test_id("adm-hh-open").click()
    await expect(page.get_by_test_id("adm-hh-f-name")).to_have_value(XSS_NAME)
    await expect(page.get_by_test_id("adm-hh-f-notes")).to_have_value(XSS_NOTE)
    await expect(page.get_by_test_id("adm-hh-f-medical")).to_have_value(XSS_NOTE)
    await expect(page.get_by_test_id("adm-hh-c-name")).to_have_value(XSS_NAME)
    assert await page.locator(pane("admin")).locator("script, img, b, i, u").count() == 0
    assert await page.evaluate("window.__pwned") is None
    await shot(page, shots, "household-html-as-text")


def _csv(rows: list[dict[str, str]], header: list[str]) -> bytes:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=header)
    w.writeheader()
    for row in rows:
        w.writerow({k: row.get(k, "") for k in header})
    return out.getvalue().encode()


async def test_a_csv_import_with_a_broken_row_shows_its_line_and_changes_nothing(
    centre: Centre, page: Page, shots: Path, tmp_path: Path
) -> None:
    r = await centre.http.put("/api/households/h-001", json={"village": "v-xiaocun", "name": "刘德福"})
    assert r.status_code == 200, r.text
    before = (await centre.http.get("/api/households")).json()
    exported = (await centre.http.get("/api/households/export")).text
    header = exported.lstrip("\ufeff").splitlines()[0].split(",")
    bad = tmp_path / "households.csv"
    bad.write_bytes(_csv([
        {"id": "h-001", "village": "v-xiaocun", "name": "刘德福（改）"},
        {"id": "h-002", "village": "v-xiaocun", "name": "陈玉兰", "phone": "12345"},
        {"id": "h-003", "village": "v-xiaocun", "name": "王有才"},
    ], header))
    await open_tab(page, centre, "admin-1", "admin")
    await page.get_by_test_id("adm-tab-households").click()
    await page.get_by_test_id("adm-hh-file").set_input_files(str(bad))
    await page.get_by_test_id("adm-hh-import").click()
    errors = page.get_by_test_id("adm-hh-import-errors")
    await expect(errors).to_contain_text("第 3 行")
    await expect(errors).to_contain_text("phone")
    await shot(page, shots, "csv-refused")
    assert (await centre.http.get("/api/households")).json() == before

    good = tmp_path / "good.csv"
    good.write_bytes(_csv([{"id": "h-003", "village": "v-xiaocun", "name": "王有才"}], header))
    await page.get_by_test_id("adm-hh-file").set_input_files(str(good))
    await page.get_by_test_id("adm-hh-import").click()
    await page.get_by_test_id("adm-hh-import-ok").wait_for()
    await page.locator('tr[data-hh="h-003"]').wait_for()


async def test_the_audit_log_lists_the_newest_first_and_pages(
    centre: Centre, page: Page, shots: Path
) -> None:
    for i in range(55):
        r = await centre.http.put(f"/api/households/h-{i:03d}", json={"village": "v-dacun", "name": f"户{i}"})
        assert r.status_code == 200
    await open_tab(page, centre, "admin-1", "admin")
    await page.get_by_test_id("adm-tab-audit").click()
    rows = page.locator("tr[data-audit]")
    await expect(rows).to_have_count(50)
    # Newest first: the page's login, then the last card written.
    assert "login" in await rows.nth(0).inner_text()
    assert "h-054" in await rows.nth(1).inner_text()
    await page.get_by_test_id("adm-audit-more").click()
    await poll_count(rows, 56)  # 55 cards, the accounts made for the test, the page's login
    ids = [int(i or 0) for i in await rows.evaluate_all("rs => rs.map(r => r.dataset.audit)")]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    await page.get_by_test_id("adm-audit-target").fill("h-007")
    await page.get_by_test_id("adm-audit-go").click()
    await expect(rows).to_have_count(1)
    await shot(page, shots, "audit")


async def poll_count(rows: pw_api.Locator, at_least: int) -> None:
    async def enough() -> bool:
        return await rows.count() >= at_least

    await poll(enough, within=10)


async def test_the_panes_fit_a_phone(centre: Centre, page: Page, shots: Path) -> None:
    await page.set_viewport_size({"width": 390, "height": 844})
    await open_tab(page, centre, "admin-1", "broadcasts")
    await page.get_by_test_id("bc-new").click()
    await page.locator('input[data-village="v-xiaocun"]').check()
    await shot(page, shots, "phone-compose")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.click('#tabs [data-pane="admin"]')
    await page.get_by_test_id("adm-tab-households").click()
    await page.get_by_test_id("adm-hh-new").click()
    await page.get_by_test_id("adm-hh-add-contact").click()
    await shot(page, shots, "phone-household")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390


async def test_the_language_switch_mounts_the_panes_again_in_english(
    centre: Centre, page: Page, shots: Path
) -> None:
    await open_tab(page, centre, "admin-1", "admin")
    await expect(page.get_by_test_id("adm-tab-households")).to_have_text("住户")
    await page.locator("#console .lang-switch").click()
    await expect(page.get_by_test_id("adm-tab-households")).to_have_text("Households")
    await page.click('#tabs [data-pane="broadcasts"]')
    await expect(page.get_by_test_id("bc-new")).to_have_text("New broadcast")
    await shot(page, shots, "english")


async def test_the_escalation_policy_form_sets_the_township_and_overrides(
    centre: Centre, page: Page, shots: Path
) -> None:
    r = await centre.http.put("/api/escalation/policy/villages/v-dacun", json={"t2_s": 90})
    assert r.status_code == 200, r.text
    await open_tab(page, centre, "admin-1", "admin")
    await page.get_by_test_id("adm-tab-settings").click()
    town = page.get_by_test_id("pol-township")
    await expect(town.get_by_test_id("pol-t1_s")).to_have_value("60")
    await expect(page.get_by_test_id("pol-overrides")).to_contain_text("village:v-dacun")
    await town.get_by_test_id("pol-t1_s").fill("45")
    await town.get_by_test_id("pol-order").fill("leader+grid, family")
    await town.get_by_test_id("pol-save-township").click()
    await expect(page.get_by_test_id("adm-msg")).to_have_text("已保存")
    override = page.get_by_test_id("pol-override")
    await override.get_by_test_id("pol-scope-kind").select_option("households")
    await override.get_by_test_id("pol-scope-id").fill("h-001")
    await override.get_by_test_id("pol-rounds").fill("5")
    await override.locator("button[type=submit]").click()
    await expect(page.get_by_test_id("pol-overrides")).to_contain_text("household:h-001")
    await page.get_by_test_id("pol-overrides").locator("tr[data-scope='village:v-dacun'] button").click()
    await expect(page.get_by_test_id("pol-overrides")).not_to_contain_text("village:v-dacun")
    await shot(page, shots, "escalation-policy")
    got = (await centre.http.get("/api/escalation/policy")).json()
    assert {o["scope"]: o["settings"] for o in got["overrides"]} == {
        "township": {"enabled": True, "t1_s": 45.0, "t2_s": 60.0, "order": ["leader+grid", "family"],
                     "rounds": 3},
        "household:h-001": {"rounds": 5},
    }
    effective = (await centre.http.get("/api/escalation/policy/effective",
                                       params={"household": "h-001"})).json()
    assert (effective["t1_s"], effective["rounds"]) == (45.0, 5)
