"""The escalation routes on a real store: an alarm's chain for the console, the policy (admin,
audited), the modem's state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from centre import escalation_policy as ep
from centre.auth import Principal, Role, current_principal
from centre.escalation import Escalation
from centre.escalation_api import escalation_router
from centre.store import Store
from protocol.uplink import Event
from tests.escalation_support import (
    CARD,
    T0,
    TIMELINE_TABLE,
    FakeContacts,
    FakeHub,
    FakeModem,
    fake_timeline,
)

ADMIN = Principal(1, "admin", "管理员", Role.ADMIN, "session")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Escalation, list[int]]]:
    store = Store(tmp_path / "centre.db")
    await store.open()
    async with store.transaction() as db:
        await db.execute(TIMELINE_TABLE)
    now = [T0]
    engine = Escalation(store, FakeContacts({"h-001": CARD}), FakeModem(), fake_timeline,
                        FakeHub(), ep.Policy(), lambda: now[0])
    app = FastAPI()
    app.include_router(escalation_router(lambda: engine, lambda: now[0]))
    app.dependency_overrides[current_principal] = lambda: ADMIN
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://centre") as http:
            yield http, engine, now
    finally:
        await store.close()


async def test_policy_put_is_stored_audited_and_layers_apply(
    api: tuple[httpx.AsyncClient, Escalation, list[int]],
) -> None:
    http, engine, _ = api
    r = await http.put("/api/escalation/policy/township", json={"t2_s": 45, "rounds": 2})
    assert r.status_code == 200, r.text
    assert r.json()["settings"] == {"t2_s": 45.0, "rounds": 2}
    r = await http.put("/api/escalation/policy/villages/v-1", json={"t1_s": 30})
    assert r.status_code == 200
    r = await http.put("/api/escalation/policy/households/h-001", json={"order": ["doctor"]})
    assert r.status_code == 200
    eff = (await http.get("/api/escalation/policy/effective",
                          params={"village": "v-1", "household": "h-001"})).json()
    assert eff == {"enabled": True, "t1_s": 30.0, "t2_s": 45.0, "order": ["doctor"], "rounds": 2}
    listed = (await http.get("/api/escalation/policy")).json()
    assert listed["defaults"]["t1_s"] == 60.0
    assert [o["scope"] for o in listed["overrides"]] == [
        "household:h-001", "township", "village:v-1"
    ]
    assert (await http.delete("/api/escalation/policy/villages/v-1")).status_code == 204
    assert (await http.delete("/api/escalation/policy/villages/v-1")).status_code == 404
    async with engine.store.transaction(write=False) as db:
        async with db.execute("SELECT actor, action, target, detail FROM audit ORDER BY id") as cur:
            rows = [(r[0], r[1], r[2], json.loads(r[3])) for r in await cur.fetchall()]
    assert rows == [
        ("admin", "escalation.policy_put", "township", {"t2_s": 45.0, "rounds": 2}),
        ("admin", "escalation.policy_put", "village:v-1", {"t1_s": 30.0}),
        ("admin", "escalation.policy_put", "household:h-001", {"order": ["doctor"]}),
        ("admin", "escalation.policy_delete", "village:v-1", {}),
    ]


@pytest.mark.parametrize(
    "body", [{"t1_s": 0}, {"rounds": 99}, {"order": ["leader", "nobody"]}, {"order": []}]
)
async def test_bad_policy_is_refused_and_nothing_stored(
    api: tuple[httpx.AsyncClient, Escalation, list[int]], body: dict[str, Any]
) -> None:
    http, _, _ = api
    r = await http.put("/api/escalation/policy/township", json=body)
    assert r.status_code == 422
    assert (await http.get("/api/escalation/policy")).json()["overrides"] == []


async def test_chain_view_shows_waiting_then_steps_and_who_confirmed(
    api: tuple[httpx.AsyncClient, Escalation, list[int]],
) -> None:
    http, engine, now = api
    assert (await http.get("/api/alarms/gw-1:btn-1:1/escalation")).status_code == 404
    await engine.store.insert_event(
        Event("gw-1:btn-1:1", "gw-1", 1, "alarm", "btn-1", 1, "v-1", "h-001", T0), T0
    )
    view = (await http.get("/api/alarms/gw-1:btn-1:1/escalation")).json()
    assert (view["state"], view["starts_at"]) == ("waiting", T0 + 60_000)
    now[0] = T0 + 60_000
    await engine.tick()
    view = (await http.get("/api/alarms/gw-1:btn-1:1/escalation")).json()
    assert (view["state"], view["step"], view["round"]) == ("running", 1, 1)
    assert [m["name"] for m in view["messages"]] == ["李明", "王芳"]
    assert view["step_due"] == T0 + 120_000 and view["modem"]["state"] == "ok"
    await engine.on_reply("13800000002", "确认")
    view = (await http.get("/api/alarms/gw-1:btn-1:1/escalation")).json()
    assert view["state"] == "confirmed"
    assert view["confirmed_by"]["name"] == "王芳" and view["confirmed_by"]["kind"] == "grid"
    assert view["replies"][0]["text"] == "确认" and view["replies"][0]["confirms"] is True


async def test_modem_state_is_served(api: tuple[httpx.AsyncClient, Escalation, list[int]]) -> None:
    http, engine, _ = api
    assert (await http.get("/api/modem")).json() == {
        "state": "ok", "detail": "", "can_send": True, "alert": False
    }
    engine.sender.state = "gone"  # type: ignore[attr-defined]
    assert (await http.get("/api/modem")).json()["can_send"] is False
