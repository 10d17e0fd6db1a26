"""The centre's HTTP API on a real SQLite file (lifespan in-process, httpx over ASGI), with
the MQTT client replaced by an in-memory stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from centre.api import create_app
from centre.auth import Role
from centre.config import load_config
from centre.enrol import enrol_gateway_async, init_centre
from harness.fakegateway import (
    FakeBroker,
    event_body,
    signed_conf,
    signed_event,
    signed_heartbeat,
    wait_until,
)
from protocol import uplink
from protocol.signed import verify_frame
from tests.auth_support import act_as
from transport.keys import load_public_hex, public_hex

GW_KEY = Ed25519PrivateKey.generate()


@dataclass
class Centre:
    app: FastAPI
    http: httpx.AsyncClient
    broker: FakeBroker
    centre_pub: str
    now: list[int]

    async def receive(self, topic: str, payload: bytes) -> None:
        """A message from the broker; returns once the centre has handled it."""
        before = self.handled()
        self.broker.clients[-1].deliver(topic, payload)
        await wait_until(lambda: self.handled() > before)

    def handled(self) -> int:
        m = self.app.state.metrics
        return int(
            sum(m.counts[k] for k in ("events", "duplicates", "heartbeats", "confs", "rejected"))
        )


@pytest.fixture
async def centre(tmp_path: Path) -> AsyncIterator[Centre]:
    path, pub = init_centre(tmp_path / "centre", gateway_timeout_s=60)
    cfg = load_config(path)
    await enrol_gateway_async(cfg, "gw-1", public_hex(GW_KEY), name="Xiaocun")
    broker = FakeBroker()
    now = [1_000_000]
    app = create_app(cfg, client_factory=broker.factory, clock=lambda: now[0])
    act_as(app, Role.ADMIN, "Li Wei")  # route logic; test_centre_accounts.py checks access
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://centre") as http:
            await wait_until(lambda: bool(broker.clients) and broker.clients[-1].connected)
            yield Centre(app, http, broker, pub, now)


async def alarm(c: Centre, counter: int, kind: str = "alarm", **kw: Any) -> str:
    await c.receive(*signed_event(GW_KEY, event_body("gw-1", "btn-1", counter, kind, **kw)))
    return f"gw-1:btn-1:{counter}"


async def test_an_event_from_mqtt_is_listed_and_fetched(centre: Centre) -> None:
    eid = await alarm(centre, 7, village="v-1", household="h-9")
    r = await centre.http.get("/api/alarms")
    assert r.status_code == 200
    (item,) = r.json()
    assert (item["id"], item["state"], item["village"], item["household"]) == (
        eid, "open", "v-1", "h-9"
    )
    assert item["received_at"] == 1_000_000
    r = await centre.http.get(f"/api/alarms/{eid}")
    assert r.status_code == 200 and r.json() == item
    assert (await centre.http.get("/api/alarms/gw-1:btn-1:99")).status_code == 404


async def test_filters_are_applied(centre: Centre) -> None:
    await alarm(centre, 1, village="v-1")
    centre.now[0] += 10
    await alarm(centre, 2, "test", village="v-1")
    centre.now[0] += 10
    await alarm(centre, 3, village="v-2")

    async def ids(**params: Any) -> list[str]:
        r = await centre.http.get("/api/alarms", params=params)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()]

    assert await ids() == ["gw-1:btn-1:3", "gw-1:btn-1:2", "gw-1:btn-1:1"]
    assert await ids(state="open") == ["gw-1:btn-1:3", "gw-1:btn-1:1"]
    assert await ids(village="v-1", kind="alarm") == ["gw-1:btn-1:1"]
    assert await ids(kind="test") == ["gw-1:btn-1:2"]
    assert await ids(since=1_000_010) == ["gw-1:btn-1:3", "gw-1:btn-1:2"]
    assert await ids(limit=1) == ["gw-1:btn-1:3"]
    for bad in ({"state": "burning"}, {"limit": 0}, {"limit": 5000}, {"since": -1}):
        assert (await centre.http.get("/api/alarms", params=bad)).status_code == 422


async def test_staff_ack_reaches_the_gateway_signed_and_is_idempotent(centre: Centre) -> None:
    eid = await alarm(centre, 7)
    centre.now[0] = 2_000_000
    # `by` from an older client is accepted; the logged-in staff member is who acknowledged.
    r = await centre.http.post(f"/api/alarms/{eid}/ack", json={"by": "Zhao", "note": " coming "})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["acked_by"], body["acked_note"], body["acked_at"]) == (
        "acked", "Li Wei", "coming", 2_000_000
    )
    pub = load_public_hex(centre.centre_pub)
    await wait_until(lambda: len(centre.broker.published) == 2)
    acks = [verify_frame(pub, t, p) for t, p in centre.broker.published]
    assert [a["s"] for a in acks] == ["received", "acked"]
    assert acks[1] == {"id": eid, "s": "acked", "at": 2_000_000, "by": "Li Wei", "note": "coming"}
    assert {t for t, _ in centre.broker.published} == {"ok/v1/gw/gw-1/down/ack"}
    await wait_until(lambda: centre.app.state.metrics.counts["downlinks_sent"] == 1)

    again = await centre.http.post(f"/api/alarms/{eid}/ack", json={"by": "Zhao"})
    assert again.status_code == 200 and again.json() == body
    metrics = (await centre.http.get("/api/metrics")).json()
    assert metrics["pending_downlinks"] == 1 and metrics["counts"]["downlinks_sent"] == 1
    # Held until the gateway confirms it has committed the ack (§6.6), not the broker's PUBACK.
    await centre.receive(*signed_conf(GW_KEY, "gw-1", acks=[(eid, "acked")]))
    metrics = (await centre.http.get("/api/metrics")).json()
    assert metrics["pending_downlinks"] == 0 and metrics["counts"]["downlinks_confirmed"] == 1


async def test_ack_refusals(centre: Centre) -> None:
    test_id = await alarm(centre, 1, "test")
    alarm_id = await alarm(centre, 2)
    await alarm(centre, 3, "cancel", ref=2)
    assert (await centre.http.post("/api/alarms/nope/ack", json={"by": "Li"})).status_code == 404
    for eid in (test_id, alarm_id, "gw-1:btn-1:3"):
        r = await centre.http.post(f"/api/alarms/{eid}/ack", json={"by": "Li"})
        assert r.status_code == 409, r.text
    for bad in ({"by": "x" * 33}, {"by": "Li", "note": "n" * 201}, {"note": 5}):
        r = await centre.http.post(f"/api/alarms/{alarm_id}/ack", json=bad)
        assert r.status_code == 422, bad


async def test_gateways_show_heartbeats_and_go_offline(centre: Centre) -> None:
    (gw,) = (await centre.http.get("/api/gateways")).json()
    assert (gw["id"], gw["name"], gw["online"], gw["last_seen"]) == ("gw-1", "Xiaocun", False, None)
    await centre.receive(*signed_heartbeat(GW_KEY, "gw-1", ts=5, outbox=2, devices=3))
    (gw,) = (await centre.http.get("/api/gateways")).json()
    assert (gw["online"], gw["outbox"], gw["devices"]) == (True, 2, 3)
    centre.now[0] += 61_000
    (gw,) = (await centre.http.get("/api/gateways")).json()
    assert gw["online"] is False


async def test_gateways_show_whether_their_store_can_be_written(centre: Centre) -> None:
    full = uplink.StoreState(ok=False, full=True, failed=2, free_bytes=0)
    await centre.receive(*signed_heartbeat(GW_KEY, "gw-1", ts=5, store=full))
    (gw,) = (await centre.http.get("/api/gateways")).json()
    assert gw["store"] == {"ok": False, "full": True, "failed": 2, "free_bytes": 0}
    await centre.receive(*signed_heartbeat(GW_KEY, "gw-1", ts=6))
    (gw,) = (await centre.http.get("/api/gateways")).json()
    assert gw["store"] is None


async def test_metrics_count_rejections_by_reason(centre: Centre) -> None:
    _, forged = signed_event(Ed25519PrivateKey.generate(), event_body("gw-1", "btn-1", 1))
    await centre.receive("ok/v1/gw/gw-1/up/event", forged)
    await centre.receive(*signed_event(GW_KEY, event_body("gw-7", "btn-1", 1)))
    m = (await centre.http.get("/api/metrics")).json()
    assert m["rejected"] == {"bad_signature": 1, "unknown_gateway": 1}
    assert m["connected"] is True
    assert (await centre.http.get("/api/alarms")).json() == []


async def test_health_page_and_openapi(centre: Centre) -> None:
    h = await centre.http.get("/healthz")
    assert h.status_code == 200 and h.json() == {"status": "ok", "broker": True}
    page = await centre.http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    spec = (await centre.http.get("/openapi.json")).json()
    paths = spec["paths"]
    for p in ("/api/alarms", "/api/alarms/{event_id}", "/api/alarms/{event_id}/ack",
              "/api/gateways", "/api/metrics", "/healthz"):
        assert p in paths
    ack = paths["/api/alarms/{event_id}/ack"]["post"]
    assert {"200", "404", "409", "422"} <= set(ack["responses"])
    assert "EventOut" in spec["components"]["schemas"]


async def test_households_live_at_the_centre_api(centre: Centre) -> None:
    act_as(centre.app, Role.ADMIN)  # changing a card is audited with who did it
    put = await centre.http.put(
        "/api/households/h-001",
        json={"village": "v-1", "name": "张桂英", "phone": "13800000000", "address": "东头3号"},
    )
    assert put.status_code == 200, put.text
    got = (await centre.http.get("/api/households/h-001")).json()
    assert got["name"] == "张桂英" and got["village"] == "v-1"
    assert (await centre.http.get("/api/households/h-404")).status_code == 404
