"""The console as the centre serves it: the event stream (centre.console.change_stream) fed by
the LiveHub, what ingest and staff actions publish, the page and its files, and the local API
docs. The stream over a real socket, and the page in a browser: tests/integration."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import pytest

from centre import console
from centre.access import ACCESS, PUBLIC
from centre.api import create_app
from centre.auth import Role
from centre.config import load_config
from centre.enrol import enrol_gateway_async, init_centre
from centre.live import Change, LiveHub
from harness.fakegateway import FakeBroker, event_body, signed_event, signed_heartbeat, wait_until
from tests.auth_support import act_as
from tests.unit.test_centre_api import GW_KEY, Centre, alarm
from transport.keys import public_hex

ROOT = Path(__file__).resolve().parents[2]


def parse(chunk: bytes) -> tuple[str, dict[str, Any]]:
    """(event name, data) of one server-sent event."""
    fields = dict(
        line.split(": ", 1) for line in chunk.decode().strip().splitlines() if not line.startswith("retry")
    )
    return fields["event"], json.loads(fields["data"])


async def test_stream_starts_with_hello_and_sends_each_change_as_a_named_event() -> None:
    hub = LiveHub()
    stream = console.change_stream(hub, heartbeat_s=30)
    first = await anext(stream)
    assert first.startswith(b"retry: ")  # the page's reconnection delay
    assert parse(first)[0] == "hello" and parse(first)[1]["heartbeat_s"] == 30
    assert hub.subscribers == 1
    hub.publish("alarm", {"id": "gw-1:btn-1:7", "household": "<b>王</b>\n"})
    hub.publish("escalation", {"alarm": "gw-1:btn-1:7", "step": 1})
    assert parse(await anext(stream)) == ("alarm", {"id": "gw-1:btn-1:7", "household": "<b>王</b>\n"})
    assert parse(await anext(stream)) == ("escalation", {"alarm": "gw-1:btn-1:7", "step": 1})
    await stream.aclose()
    assert hub.subscribers == 0


async def test_a_quiet_stream_pings_so_the_page_can_tell_it_from_a_dead_one() -> None:
    hub = LiveHub()
    stream = console.change_stream(hub, heartbeat_s=0.05)
    await anext(stream)
    name, data = parse(await asyncio.wait_for(anext(stream), 2))
    assert name == "ping" and data["at"] > 0
    await stream.aclose()


async def test_a_console_too_slow_to_drain_is_dropped_and_its_stream_ends() -> None:
    hub = LiveHub()
    stream = console.change_stream(hub, heartbeat_s=30)
    await anext(stream)
    for i in range(300):  # beyond the hub's queue: this console never read them
        hub.publish("gateway", {"id": f"gw-{i}"})
    assert hub.dropped == 1 and hub.subscribers == 0
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


def test_event_data_is_one_line_of_json_whatever_the_text_holds() -> None:
    raw = console.sse("alarm", {"note": "line1\nline2\r\ndata: forged\n\nevent: x"})
    assert raw.count(b"\n") == 3  # event, data, blank line: nothing injected
    assert parse(raw) == ("alarm", {"note": "line1\nline2\r\ndata: forged\n\nevent: x"})


def test_page_loads_the_dictionary_first_the_parts_then_the_core() -> None:
    order = console.script_order(
        ["app.js", "zz.js", "i18n.js", "broadcast.js", "docs.js", "i18n-forms.js", "admin.js"]
    )
    assert order == ["i18n.js", "i18n-forms.js", "admin.js", "broadcast.js", "zz.js", "app.js"]


def test_every_file_of_the_page_ships_with_the_package() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["centre.static"]
    for f in (ROOT / "centre" / "static").iterdir():
        if f.suffix != ".py" and f.name != "__pycache__":
            assert any(fnmatch(f.name, p) for p in patterns), f"{f.name} is not package data"


@pytest.fixture
async def centre(tmp_path: Path) -> AsyncIterator[Centre]:
    path, pub = init_centre(tmp_path / "centre", gateway_timeout_s=60)
    cfg = load_config(path)
    await enrol_gateway_async(cfg, "gw-1", public_hex(GW_KEY), name="Xiaocun")
    broker = FakeBroker()
    now = [1_000_000]
    app = create_app(cfg, client_factory=broker.factory, clock=lambda: now[0])
    act_as(app, Role.OPERATOR, "Li Wei")  # who may see what: test_the_console_s_routes_need_...
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://centre") as http:
            await wait_until(lambda: bool(broker.clients) and broker.clients[-1].connected)
            yield Centre(app, http, broker, pub, now)


def subscribed(c: Centre) -> asyncio.Queue[Change | None]:
    hub = c.app.state.live
    assert isinstance(hub, LiveHub)
    return hub.subscribe()


async def test_a_new_alarm_is_published_after_commit_as_the_api_returns_it(centre: Centre) -> None:
    q = subscribed(centre)
    eid = await alarm(centre, 7, village="v-1", household="h-9")
    change = q.get_nowait()
    assert change is not None and change.topic == "alarm"
    assert change.data == (await centre.http.get(f"/api/alarms/{eid}")).json()
    # A duplicate (the gateway sent it again) changes nothing and publishes nothing.
    await centre.receive(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 7, village="v-1")))
    assert q.empty()


async def test_a_heartbeat_publishes_its_gateway(centre: Centre) -> None:
    q = subscribed(centre)
    await centre.receive(*signed_heartbeat(GW_KEY, "gw-1", 1_000, outbox=0, devices=3))
    change = q.get_nowait()
    assert change is not None and (change.topic, change.data) == ("gateway", {"id": "gw-1"})


async def test_a_staff_acknowledgement_publishes_the_alarm(centre: Centre) -> None:
    eid = await alarm(centre, 8, village="v-1")
    q = subscribed(centre)
    r = await centre.http.post(f"/api/alarms/{eid}/ack", json={"note": "on the way"})
    assert r.status_code == 200
    change = q.get_nowait()
    assert change is not None and change.topic == "alarm" and change.data == r.json()
    assert change.data["state"] == "acked"


async def test_the_page_and_its_files_come_from_the_centre_itself(centre: Centre) -> None:
    r = await centre.http.get("/")
    assert r.status_code == 200 and "Content-Security-Policy" in r.headers
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    srcs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert srcs and all(s.startswith("/static/") for s in srcs), srcs
    assert [s.split("?")[0] for s in srcs if s.endswith(".js") or ".js?" in s][-1] == "/static/app.js"
    for s in srcs:
        f = await centre.http.get(s)
        assert f.status_code == 200, s
        assert f.headers["content-type"].startswith(("text/javascript", "text/css")), s
        assert not re.search(r"https?://", f.text), f"{s} reaches outside the centre"
    assert (await centre.http.get("/static/nothing.js")).status_code == 404
    assert (await centre.http.get("/static/__init__.py")).status_code == 404


async def test_api_docs_are_served_without_a_cdn(centre: Centre) -> None:
    page = await centre.http.get("/docs")
    assert page.status_code == 200 and "/static/docs.js" in page.text
    assert not re.search(r"https?://", page.text)
    js = (await centre.http.get("/static/docs.js")).text
    assert "/openapi.json" in js and not re.search(r"https?://", js)
    spec = (await centre.http.get("/openapi.json")).json()
    assert "/api/stream" in spec["paths"]
    # FastAPI's own pages load Swagger UI and ReDoc from a CDN: they are off.
    assert (await centre.http.get("/redoc")).status_code == 404
    assert "swagger" not in page.text.lower()


async def test_a_stopping_centre_ends_every_stream_at_once() -> None:
    hub = LiveHub()
    streams = [console.change_stream(hub, heartbeat_s=30) for _ in range(3)]
    for s in streams:
        await anext(s)
    hub.close()
    assert hub.subscribers == 0
    for s in streams:
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(s), 1)


def test_the_console_s_routes_need_a_login_except_the_page_shell_and_its_code() -> None:
    # The shell and its scripts hold no data (the login form needs them); the stream, the
    # docs and the API description are for staff.
    assert ACCESS[("GET", "/")] is PUBLIC and ACCESS[("GET", "/static/{name}")] is PUBLIC
    for route in (("GET", "/api/stream"), ("GET", "/docs"), ("GET", "/openapi.json")):
        assert ACCESS[route] == Role.OPERATOR, route


async def test_an_anonymous_client_gets_the_shell_but_not_the_stream_or_the_docs(
    tmp_path: Path,
) -> None:
    path, _ = init_centre(tmp_path / "centre")
    app = create_app(load_config(path), client_factory=FakeBroker().factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://centre") as http:
            assert (await http.get("/")).status_code == 200
            assert (await http.get("/static/app.js")).status_code == 200
            for p in ("/api/stream", "/docs", "/openapi.json"):
                assert (await http.get(p)).status_code == 401, p
