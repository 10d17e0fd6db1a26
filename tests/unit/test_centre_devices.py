"""Device supervision at the centre (protocol §6.2.1, docs/centre.md "Devices"): supervision
events from a gateway are stored, answered `received`, applied to the device list in the
gateway's order, raised to staff as items they acknowledge (audited, on the item's timeline,
pushed on the live hub), and cleared by the event that ends the condition. The HTTP API runs
in-process on a real SQLite file, with the MQTT client replaced by an in-memory stand-in."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from centre.access import ACCESS
from centre.api import create_app
from centre.auth import Role
from centre.config import CentreConfig, load_config
from centre.enrol import enrol_gateway_async, init_centre
from centre.live import Change
from harness.fakegateway import FakeBroker, signed_event, wait_until
from protocol import topics, uplink
from protocol.signed import encode_json, sign_frame, verify_frame
from tests.auth_support import act_as
from transport.keys import load_public_hex, public_hex

GW_KEY = Ed25519PrivateKey.generate()


def sup_body(
    n: int, what: str, device: str = "spk-1", *, seq: int | None = None, **sup: Any
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "what": what, "subject": device, "role": "speaker", "power": "mains", "period_s": 20,
        "lost_after_s": 60, "last_seen": 900_000 + n, "fw": "spk-1.0.0",
    }
    fields.update(sup)
    ev = uplink.new_event(
        "gw-1", n if seq is None else seq, uplink.SUPERVISION, uplink.SUP_SOURCE, n,
        village="v-1", household="h-1", gw_ts=950_000, sup=uplink.Supervision(**fields),
    )
    return uplink.encode_event(ev)


@dataclass
class Centre:
    app: FastAPI
    http: httpx.AsyncClient
    broker: FakeBroker
    cfg: CentreConfig
    centre_pub: str
    now: list[int]

    async def receive(self, body: dict[str, Any]) -> None:
        m = self.app.state.metrics
        before = m.counts["device_events"] + m.counts["duplicates"] + m.counts["rejected"]
        self.broker.clients[-1].deliver(*signed_event(GW_KEY, body))
        await wait_until(
            lambda: m.counts["device_events"] + m.counts["duplicates"] + m.counts["rejected"]
            > before
        )

    async def devices(self, **params: Any) -> list[dict[str, Any]]:
        r = await self.http.get("/api/devices", params=params)
        assert r.status_code == 200, r.text
        return list(r.json())


@pytest.fixture
async def centre(tmp_path: Path) -> AsyncIterator[Centre]:
    path, pub = init_centre(tmp_path / "centre", gateway_timeout_s=60)
    cfg = load_config(path)
    await enrol_gateway_async(cfg, "gw-1", public_hex(GW_KEY), name="Xiaocun")
    broker = FakeBroker()
    now = [1_000_000]
    app = create_app(cfg, client_factory=broker.factory, clock=lambda: now[0])
    act_as(app, Role.OPERATOR, "Li Wei")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://centre") as http:
            await wait_until(lambda: bool(broker.clients) and broker.clients[-1].connected)
            yield Centre(app, http, broker, cfg, pub, now)


def test_device_routes_need_an_operator() -> None:
    for route in (("GET", "/api/devices"), ("GET", "/api/device-events"),
                  ("GET", "/api/device-events/{event_id}"),
                  ("POST", "/api/device-events/{event_id}/ack")):
        assert ACCESS[route] == Role.OPERATOR


async def test_supervision_event_is_stored_listed_and_answered_received(centre: Centre) -> None:
    await centre.receive(sup_body(1, "seen"))
    (dev,) = await centre.devices()
    assert (dev["gw"], dev["id"], dev["status"], dev["power"], dev["fw"], dev["last_seen"]) == (
        "gw-1", "spk-1", "ok", "mains", "spk-1.0.0", 900_001
    )
    acks = [m for m in centre.broker.published if m[0] == "ok/v1/gw/gw-1/down/ack"]
    body = verify_frame(load_public_hex(centre.centre_pub), acks[-1][0], acks[-1][1])
    assert body == {"id": "gw-1:svc-sup:1", "s": "received", "at": 1_000_000}
    # Nothing of it is an alarm.
    assert (await centre.http.get("/api/alarms")).json() == []


async def test_lost_is_raised_to_staff_and_cleared_by_restored(centre: Centre) -> None:
    hub = centre.app.state.live
    q: asyncio.Queue[Change | None] = hub.subscribe()
    await centre.receive(sup_body(1, "seen"))
    await centre.receive(sup_body(2, "lost"))
    (dev,) = await centre.devices(village="v-1")
    assert (dev["status"], dev["lost"]) == ("lost", True)
    assert await centre.devices(village="v-2") == []
    r = await centre.http.get("/api/device-events", params={"open": "true"})
    (item,) = r.json()
    assert (item["id"], item["what"], item["raised"], item["cleared_at"]) == (
        "gw-1:svc-sup:2", "lost", True, None
    )
    changes = []
    while not q.empty():
        change = q.get_nowait()
        assert change is not None
        changes.append(change)
    assert {c.topic for c in changes} == {"device"}
    assert any(c.data.get("event", {}).get("what") == "lost" for c in changes)

    centre.now[0] = 1_010_000
    await centre.receive(sup_body(3, "restored"))
    (dev,) = await centre.devices()
    assert dev["status"] == "ok"
    detail = (await centre.http.get("/api/device-events/gw-1:svc-sup:2")).json()
    assert detail["cleared_at"] == 1_010_000
    assert [s["kind"] for s in detail["timeline"]] == ["received", "cleared"]
    # Cleared but not yet acknowledged: still an item for staff.
    assert len((await centre.http.get("/api/device-events", params={"open": "1"})).json()) == 1


async def test_staff_acknowledge_a_device_item_once_with_audit_and_timeline(
    centre: Centre,
) -> None:
    await centre.receive(sup_body(1, "low_battery", bat=15))
    (dev,) = await centre.devices()
    assert (dev["status"], dev["bat"]) == ("low_battery", 15)
    r = await centre.http.post("/api/device-events/gw-1:svc-sup:1/ack", json={"note": "new cell"})
    assert r.status_code == 200 and r.json()["acked_by"] == "Li Wei"
    again = await centre.http.post("/api/device-events/gw-1:svc-sup:1/ack", json={"note": "x"})
    assert again.json()["acked_note"] == "new cell"
    assert (await centre.http.get("/api/device-events", params={"open": "1"})).json() == []
    steps = (await centre.http.get("/api/device-events/gw-1:svc-sup:1")).json()["timeline"]
    assert [(s["kind"], s["actor"]) for s in steps] == [("received", "system"), ("acked", "Li Wei")]
    conn = sqlite3.connect(centre.cfg.db_path)
    try:
        rows = conn.execute(
            "SELECT actor, action, target FROM audit WHERE action='device_event.ack'"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [("Li Wei", "device_event.ack", "gw-1:svc-sup:1")]
    await centre.receive(sup_body(2, "seen", device="spk-2"))
    info = await centre.http.post("/api/device-events/gw-1:svc-sup:2/ack", json={})
    assert info.status_code == 409
    missing = await centre.http.post("/api/device-events/gw-1:svc-sup:99/ack", json={})
    assert missing.status_code == 404


async def test_duplicate_and_late_events_do_not_move_the_device_back(centre: Centre) -> None:
    await centre.receive(sup_body(2, "lost", seq=20))
    await centre.receive(sup_body(3, "restored", seq=30))
    # A re-send of the older one, after the newer: stored once, changes nothing.
    await centre.receive(sup_body(2, "lost", seq=20))
    assert centre.app.state.metrics.counts["duplicates"] == 1
    # An older event never seen before (overtaken on the way) is stored, the row stays.
    await centre.receive(sup_body(1, "seen", seq=10, bat=80))
    (dev,) = await centre.devices()
    assert (dev["status"], dev["lost"]) == ("ok", False)
    assert len((await centre.http.get("/api/device-events")).json()) == 3


async def test_gateway_heartbeat_moves_last_seen_of_listed_devices_only_forward(
    centre: Centre,
) -> None:
    await centre.receive(sup_body(1, "seen"))

    async def heartbeat(ts: int, devs: list[list[Any]]) -> None:
        m = centre.app.state.metrics
        before = m.counts["heartbeats"]
        body = {"gw": "gw-1", "ts": ts, "outbox": 0, "devices": 2, "devs": devs}
        topic = topics.heartbeat("gw-1")
        centre.broker.clients[-1].deliver(topic, sign_frame(GW_KEY, topic, encode_json(body)))
        await wait_until(lambda: m.counts["heartbeats"] > before)

    await heartbeat(1, [["spk-1", 990_000, None, "spk-1.0.1"], ["spk-9", 990_000, 50, None]])
    (dev,) = await centre.devices()  # spk-9 was never seen: not listed
    assert (dev["last_seen"], dev["fw"]) == (990_000, "spk-1.0.1")
    await heartbeat(2, [["spk-1", 980_000, None, None]])
    (dev,) = await centre.devices()
    assert dev["last_seen"] == 990_000


async def test_the_staff_page_shows_devices_needing_attention(centre: Centre) -> None:
    page = (await centre.http.get("/")).text
    # The devices pane (its behaviour in chromium: tests/integration/test_console_page.py).
    assert "/static/devices.js" in page and "/static/i18n-devices.js" in page
    pane = (await centre.http.get("/static/devices.js")).text
    assert 'api.get("/api/devices")' in pane and "/api/device-events/" in pane
    spec = (await centre.http.get("/openapi.json")).json()
    assert {"/api/devices", "/api/device-events", "/api/device-events/{event_id}",
            "/api/device-events/{event_id}/ack"} <= set(spec["paths"])


async def test_a_supervision_event_with_a_bad_sup_is_refused(centre: Centre) -> None:
    body = sup_body(1, "lost")
    body["sup"]["what"] = "exploded"
    await centre.receive(body)
    assert centre.app.state.metrics.rejected["bad_field"] == 1
    assert await centre.devices() == []
