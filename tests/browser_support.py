"""Browser tests of the console: Playwright driving Debian's chromium (`/usr/bin/chromium`,
installed by scripts/setup.sh; nothing is downloaded), against a real centre (tests.centre_site).

Fixtures (import `browser_fixture, page_fixture, shots_fixture` into a test module: they are
registered as `browser`, `page`, `shots`):
- `browser`: a fresh chromium (own user data dir under tmp_path) as a Playwright
  `BrowserContext`; notifications allowed, sound allowed without a gesture (headless).
- `page`: a page of it that fails the test on any script error the page raised.
- `shots`: the folder where the test's screenshots go, `test-output/browser/<test>/` at the top
  of the repository (gitignored; ONEKEY_TEST_OUTPUT moves it).

Helpers: `shot(page, shots, name)`, `log_in(page, base, username, password)`,
`wait_for(page, js, timeout_s)`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.chromium import CHROMIUM, CHROMIUM_ARGS, require_chromium

pw_api = pytest.importorskip("playwright.async_api", reason="Playwright (test extra, Linux x86_64)")

OUTPUT_ROOT = Path(
    os.environ.get("ONEKEY_TEST_OUTPUT", Path(__file__).resolve().parent.parent / "test-output")
)
TIMEOUT_MS = 10_000


@contextlib.asynccontextmanager
async def launch(user_data_dir: Path) -> AsyncIterator[pw_api.BrowserContext]:
    """One chromium with its own fresh profile."""
    require_chromium()
    async with pw_api.async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
            viewport={"width": 1280, "height": 800},
            # The page's policy forbids eval, which Playwright's wait_for_function uses; the
            # policy itself is checked on the response (tests/unit/test_centre_console.py).
            bypass_csp=True,
        )
        try:
            context.set_default_timeout(TIMEOUT_MS)
            await context.grant_permissions(["notifications"])
            yield context
        finally:
            await context.close()


@pytest.fixture(name="browser")
async def browser_fixture(tmp_path: Path) -> AsyncIterator[pw_api.BrowserContext]:
    async with launch(tmp_path / "chromium-profile") as context:
        yield context


@pytest.fixture(name="page")
async def page_fixture(browser: pw_api.BrowserContext) -> AsyncIterator[pw_api.Page]:
    errors: list[str] = []
    pg = browser.pages[0] if browser.pages else await browser.new_page()
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    assert not errors, f"the page raised script errors: {errors}"


@pytest.fixture(name="shots")
def shots_fixture(request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
    out = OUTPUT_ROOT / "browser" / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    return out


async def shot(page: pw_api.Page, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def wait_for(page: pw_api.Page, js: str, timeout_s: float = TIMEOUT_MS / 1000) -> None:
    """Until the expression `js` is true in the page (polled by the page itself)."""
    await page.wait_for_function(js, timeout=timeout_s * 1000)


async def log_in(page: pw_api.Page, base: str, username: str, password: str) -> None:
    """Open the console and log in through its form; returns once the console shows."""
    await page.goto(base + "/")
    await page.fill("#login-username", username)
    await page.fill("#login-password", password)
    await page.click("#login-submit")
    await page.wait_for_selector("#console:not([hidden])")
