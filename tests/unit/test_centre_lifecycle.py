"""An alarm's life at the centre (open -> acked -> dispatched -> resolved, cancels, test presses):
the API on a real SQLite file with the MQTT client replaced by an in-memory stand-in, the
timeline and audit lines written with each step, the live hub told after each commit, and the
store migration that brought the new states."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from centre import lifecycle
from centre import store as store_mod
from centre.api import create_app
from centre.auth import Principal, Role
from centre.config import load_config
from centre.enrol import enrol_gateway_async, init_centre
from centre.live import Change, LiveHub
from centre.store import Store
from harness.fakegateway import FakeBroker, event_body, signed_event, wait_until
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
    db_path: Path

    async def receive(self, topic: str, payload: bytes) -> None:
        m = self.app.state.metrics
        before = m.counts["events"] + m.counts["duplicates"] + m.counts["rejected"]
        self.broker.clients[-1].deliver(topic, payload)
        await wait_until(
            lambda: m.counts["events"] + m.counts["duplicates"] + m.counts["rejected"] > before
        )

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """A read through a connection of its own: what is committed, nothing else."""
        db = sqlite3.connect(self.db_path)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def snapshot(self) -> tuple[list[Any], ...]:
        return (
            self.rows("SELECT * FROM alarms ORDER BY id"),
            self.rows("SELECT * FROM alarm_timeline ORDER BY id"),
            self.rows("SELECT * FROM audit ORDER BY id"),
            self.rows("SELECT id, event_id, state FROM downlinks ORDER BY id"),
        )

    def acks(self) -> list[dict[str, Any]]:
        pub = load_public_hex(self.centre_pub)
        return [verify_frame(pub, t, p) for t, p in self.broker.published]


@pytest.fixture
async def centre(tmp_path: Path) -> AsyncIterator[Centre]:
    path, pub = init_centre(tmp_path / "centre", gateway_timeout_s=60)
    cfg = load_config(path)
    await enrol_gateway_async(cfg, "gw-1", public_hex(GW_KEY), name="Xiaocun")
    broker = FakeBroker()
    now = [1_000_000]
    app = create_app(cfg, client_factory=broker.factory, clock=lambda: now[0])
    act_as(app, Role.OPERATOR, "wang.li")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://centre") as http:
            await wait_until(lambda: bool(broker.clients) and broker.clients[-1].connected)
            yield Centre(app, http, broker, pub, now, cfg.db_path)


async def press(c: Centre, counter: int, kind: str = "alarm", **kw: Any) -> str:
    await c.receive(*signed_event(GW_KEY, event_body("gw-1", "btn-1", counter, kind, **kw)))
    return f"gw-1:btn-1:{counter}"


async def post(c: Centre, eid: str, step: str, body: dict[str, Any]) -> httpx.Response:
    c.now[0] += 1_000
    return await c.http.post(f"/api/alarms/{eid}/{step}", json=body)


async def timeline(c: Centre, eid: str) -> list[dict[str, Any]]:
    r = await c.http.get(f"/api/alarms/{eid}/timeline")
    assert r.status_code == 200, r.text
    steps: list[dict[str, Any]] = r.json()
    return steps


async def test_an_alarm_goes_acked_dispatched_resolved_with_timeline_and_audit(
    centre: Centre,
) -> None:
    eid = await press(centre, 7)
    r = await post(centre, eid, "ack", {"note": "calling the family"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["acked_by"], r.json()["acked_at"]) == (
        "acked", "wang.li", 1_001_000
    )
    r = await post(centre, eid, "dispatch", {"responder": "村医 张明", "note": "骑车 5 分钟"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["dispatched_to"], body["dispatched_note"]) == (
        "dispatched", "村医 张明", "骑车 5 分钟"
    )
    assert (body["dispatched_at"], body["dispatched_by"]) == (1_002_000, "wang.li")
    r = await post(centre, eid, "resolve", {"outcome": "hospital", "note": "县医院"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["outcome"], body["resolved_note"]) == ("resolved", "hospital", "县医院")
    assert (body["resolved_at"], body["resolved_by"]) == (1_003_000, "wang.li")
    assert (await centre.http.get(f"/api/alarms/{eid}")).json() == body

    steps = await timeline(centre, eid)
    assert [(s["kind"], s["actor"], s["at"]) for s in steps] == [
        ("received", "device", 1_000_000),
        ("acked", "wang.li", 1_001_000),
        ("dispatched", "wang.li", 1_002_000),
        ("resolved", "wang.li", 1_003_000),
    ]
    assert steps[2]["detail"] == {"responder": "村医 张明", "note": "骑车 5 分钟"}
    assert steps[3]["detail"] == {"outcome": "hospital", "note": "县医院"}
    audit = centre.rows("SELECT at, actor, action, target, detail FROM audit ORDER BY id")
    assert [(a[0], a[1], a[2], a[3]) for a in audit] == [
        (1_001_000, "wang.li", "alarm.ack", eid),
        (1_002_000, "wang.li", "alarm.dispatch", eid),
        (1_003_000, "wang.li", "alarm.resolve", eid),
    ]
    assert json.loads(audit[2][4]) == {"outcome": "hospital", "note": "县医院"}
    # The button learnt once that a person took charge; dispatch and resolve send nothing more.
    await wait_until(lambda: len(centre.broker.published) == 2)
    assert [(a["s"], a.get("by")) for a in centre.acks()] == [
        ("received", None), ("acked", "wang.li")
    ]


async def test_dispatch_from_open_acknowledges_first_and_tells_the_button(centre: Centre) -> None:
    eid = await press(centre, 7)
    r = await post(centre, eid, "dispatch", {"responder": "网格员 李强"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["acked_by"], body["acked_at"], body["dispatched_at"]) == (
        "dispatched", "wang.li", 1_001_000, 1_001_000
    )
    assert [s["kind"] for s in await timeline(centre, eid)] == ["received", "acked", "dispatched"]
    assert [a[0] for a in centre.rows("SELECT action FROM audit ORDER BY id")] == [
        "alarm.ack", "alarm.dispatch"
    ]
    await wait_until(lambda: len(centre.broker.published) == 2)
    assert centre.acks()[1] == {
        "id": eid, "s": "acked", "at": 1_001_000, "by": "wang.li", "note": ""
    }


async def test_resolve_from_open_acknowledges_first(centre: Centre) -> None:
    eid = await press(centre, 7)
    r = await post(centre, eid, "resolve", {"outcome": "false_alarm", "note": "老人误按"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["acked_by"]) == ("resolved", "wang.li")
    assert [s["kind"] for s in await timeline(centre, eid)] == ["received", "acked", "resolved"]
    await wait_until(lambda: len(centre.broker.published) == 2)


async def test_a_second_dispatch_sends_another_responder_and_keeps_both(centre: Centre) -> None:
    eid = await press(centre, 7)
    await post(centre, eid, "dispatch", {"responder": "村医 张明"})
    r = await post(centre, eid, "dispatch", {"responder": "网格员 李强", "note": "村医不在"})
    assert r.status_code == 200 and r.json()["dispatched_to"] == "网格员 李强"
    steps = [s for s in await timeline(centre, eid) if s["kind"] == "dispatched"]
    assert [s["detail"]["responder"] for s in steps] == ["村医 张明", "网格员 李强"]
    assert steps[1]["detail"]["instead_of"] == "村医 张明"


async def test_illegal_steps_are_refused_and_change_nothing(centre: Centre) -> None:
    test_id = await press(centre, 1, "test")
    cancelled = await press(centre, 2)
    cancel_event = await press(centre, 3, "cancel", ref=2)
    resolved = await press(centre, 4)
    assert (await post(centre, resolved, "resolve", {"outcome": "on_site"})).status_code == 200
    await wait_until(lambda: len(centre.broker.published) == 5)  # 4 received, 1 acked
    before = centre.snapshot()
    published = len(centre.broker.published)
    steps: list[tuple[str, dict[str, Any]]] = [
        ("ack", {}), ("dispatch", {"responder": "村医"}), ("resolve", {"outcome": "on_site"})
    ]
    for eid, refused in (
        (test_id, ["ack", "dispatch", "resolve"]),
        (cancelled, ["ack", "dispatch", "resolve"]),
        (cancel_event, ["ack", "dispatch", "resolve"]),
        (resolved, ["dispatch", "resolve"]),
    ):
        for name, body in steps:
            r = await post(centre, eid, name, body)
            if name in refused:
                assert r.status_code == 409, (eid, name, r.text)
                assert eid in r.json()["detail"]
            else:  # acknowledging what is already acknowledged changes nothing
                assert r.status_code == 200, (eid, name, r.text)
    for name, body in steps:
        assert (await post(centre, "gw-1:btn-1:99", name, body)).status_code == 404
    assert "test press" in (await post(centre, test_id, "dispatch", steps[1][1])).json()["detail"]
    assert centre.snapshot() == before
    assert len(centre.broker.published) == published


async def test_bad_outcomes_and_responders_are_refused_and_change_nothing(centre: Centre) -> None:
    eid = await press(centre, 7)
    before = centre.snapshot()
    for step, body in (
        ("resolve", {"outcome": "burnt_down"}),
        ("resolve", {"outcome": "other"}),  # `other` must say what happened
        ("resolve", {"outcome": "other", "note": "   "}),
        ("resolve", {}),
        ("resolve", {"outcome": "on_site", "note": "n" * 1001}),
        ("dispatch", {}),
        ("dispatch", {"responder": "  "}),
        ("dispatch", {"responder": "x" * 65}),
    ):
        r = await post(centre, eid, step, body)
        assert r.status_code == 422, (step, body, r.text)
    assert "one of: on_site" in (await post(centre, eid, "resolve", {"outcome": "x"})).text
    assert centre.snapshot() == before
    r = await post(centre, eid, "resolve", {"outcome": "other", "note": "邻居已照看"})
    assert r.status_code == 200 and r.json()["outcome"] == "other"


async def test_outcomes_are_listed_in_chinese_and_english(centre: Centre) -> None:
    r = await centre.http.get("/api/alarm-outcomes")
    assert r.status_code == 200
    outcomes = {o["id"]: (o["zh"], o["en"]) for o in r.json()}
    assert outcomes["on_site"][0] == "已到场处理" and outcomes["false_alarm"][0] == "误按"
    assert {"hospital", "family_contacted", "unreachable", "other"} <= set(outcomes)
    assert all(zh and en for zh, en in outcomes.values())


async def test_a_cancel_after_dispatch_leaves_the_alarm_to_staff_and_shows_on_the_timeline(
    centre: Centre,
) -> None:
    eid = await press(centre, 7)
    await post(centre, eid, "dispatch", {"responder": "村医 张明"})
    centre.now[0] += 1_000
    await press(centre, 8, "cancel", ref=7)
    alarm = (await centre.http.get(f"/api/alarms/{eid}")).json()
    assert (alarm["state"], alarm["cancelled_at"]) == ("dispatched", centre.now[0])
    steps = await timeline(centre, eid)
    assert [s["kind"] for s in steps] == ["received", "acked", "dispatched", "cancelled"]
    assert steps[-1]["actor"] == "device"
    assert steps[-1]["detail"] == {"event": "gw-1:btn-1:8", "state": "dispatched"}
    assert [a["id"] for a in (await centre.http.get("/api/alarms?active=true")).json()] == [eid]
    r = await post(centre, eid, "resolve", {"outcome": "false_alarm"})
    assert r.status_code == 200 and r.json()["state"] == "resolved"


async def test_a_cancel_of_an_open_alarm_closes_it(centre: Centre) -> None:
    eid = await press(centre, 7)
    await press(centre, 8, "cancel", ref=7)
    assert (await centre.http.get(f"/api/alarms/{eid}")).json()["state"] == "cancelled"
    steps = await timeline(centre, eid)
    assert [(s["kind"], s["detail"].get("state")) for s in steps] == [
        ("received", None), ("cancelled", "open")
    ]


async def test_test_presses_are_never_in_the_open_or_active_list(centre: Centre) -> None:
    await press(centre, 1, "test")
    alarm_id = await press(centre, 2)
    acked = await press(centre, 3)
    await post(centre, acked, "ack", {})

    async def ids(**params: Any) -> list[str]:
        r = await centre.http.get("/api/alarms", params=params)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()]

    assert await ids(state="open") == [alarm_id]
    assert await ids(active="true") == [acked, alarm_id]
    assert await ids(kind="test") == ["gw-1:btn-1:1"]
    test_steps = await timeline(centre, "gw-1:btn-1:1")
    assert [(s["kind"], s["detail"]) for s in test_steps] == [("received", {"kind": "test"})]
    assert (await centre.http.get("/api/alarms/nope/timeline")).status_code == 404


async def next_change(q: asyncio.Queue[Change | None]) -> Change | None:
    async with asyncio.timeout(5):
        return await q.get()


async def test_the_live_hub_gets_a_new_alarm_after_its_commit(centre: Centre) -> None:
    hub: LiveHub = centre.app.state.live
    q = hub.subscribe()
    committed: list[bool] = []
    publish = hub.publish

    def spy(topic: str, data: dict[str, Any]) -> None:
        # What another connection can read at the moment of publishing: the row is committed.
        committed.append(bool(centre.rows("SELECT 1 FROM alarms WHERE id = ?", (data["id"],))))
        publish(topic, data)

    hub.publish = spy  # type: ignore[method-assign]
    eid = await press(centre, 7)
    change = await next_change(q)
    assert isinstance(change, Change) and change.topic == "alarm"
    assert change.data == (await centre.http.get(f"/api/alarms/{eid}")).json()
    assert committed == [True]

    await post(centre, eid, "ack", {})
    change = await next_change(q)
    assert change is not None and (change.data["id"], change.data["state"]) == (eid, "acked")
    await post(centre, eid, "ack", {})  # nothing changed: nothing published
    assert q.empty()

    await press(centre, 8, "cancel", ref=7)  # the alarm it cancels is published, as it is now
    change = await next_change(q)
    assert change is not None
    assert change.data == (await centre.http.get(f"/api/alarms/{eid}")).json()
    assert change.data["cancelled_at"] is not None
    await press(centre, 9, "test")
    change = await next_change(q)
    assert change is not None and change.data["state"] == "test"
    assert q.empty()


def version_3_database(path: Path) -> None:
    """A centre database as the release before this schema left it."""
    db = sqlite3.connect(path)
    try:
        for n, script in enumerate(store_mod._MIGRATIONS[:3]):
            db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {n + 1};\nCOMMIT;")
        cols = (
            "id, gw, seq, kind, device, counter, ref, village, household, gw_ts, received_at, "
            "state, acked_by, acked_note, acked_at, cancelled_at"
        )
        rows = [
            ("gw-1:b:1", "gw-1", 1, "alarm", "b", 1, None, "v", "h-1", 1, 100, "open",
             None, None, None, None),
            ("gw-1:b:2", "gw-1", 2, "alarm", "b", 2, None, "v", "h-1", 2, 200, "acked",
             "Li", "on the way", 250, None),
            ("gw-1:b:3", "gw-1", 3, "alarm", "b", 3, None, "v", "h-1", 3, 300, "cancelled",
             None, None, None, 350),
            ("gw-1:b:4", "gw-1", 4, "cancel", "b", 4, "gw-1:b:3", "v", "h-1", 4, 350, "cancel",
             None, None, None, None),
            ("gw-1:b:5", "gw-1", 5, "test", "b", 5, None, "v", "h-1", 5, 500, "test",
             None, None, None, None),
        ]
        db.executemany(f"INSERT INTO alarms ({cols}) VALUES ({','.join('?' * 16)})", rows)
        db.commit()
    finally:
        db.close()


async def test_the_migration_keeps_every_alarm_of_a_version_3_database(tmp_path: Path) -> None:
    path = tmp_path / "centre.db"
    version_3_database(path)
    async with Store(path) as store:
        events = {e.id: e for e in await store.list_events()}
        assert {k: (e.kind, e.state) for k, e in events.items()} == {
            "gw-1:b:1": ("alarm", "open"), "gw-1:b:2": ("alarm", "acked"),
            "gw-1:b:3": ("alarm", "cancelled"), "gw-1:b:4": ("cancel", "cancel"),
            "gw-1:b:5": ("test", "test"),
        }
        acked = events["gw-1:b:2"]
        assert (acked.acked_by, acked.acked_note, acked.acked_at) == ("Li", "on the way", 250)
        assert (acked.dispatched_to, acked.outcome) == (None, None)
        assert events["gw-1:b:3"].cancelled_at == 350
        # The old alarms have a timeline, as far as their rows tell it.
        assert [(s.kind, s.actor, s.at) for s in await store.timeline("gw-1:b:2")] == [
            ("received", "device", 200), ("acked", "Li", 250)
        ]
        assert [s.kind for s in await store.timeline("gw-1:b:3")] == ["received", "cancelled"]
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.execute("UPDATE alarms SET state = 'dispatched' WHERE id = 'gw-1:b:2'")
        with pytest.raises(sqlite3.IntegrityError):  # the CHECK still guards the states
            db.execute("UPDATE alarms SET state = 'burning' WHERE id = 'gw-1:b:2'")
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"alarms_received", "alarms_state", "alarms_ref"} <= indexes
    finally:
        db.close()


async def test_a_batch_writes_received_and_cancelled_steps_in_arrival_order(
    tmp_path: Path,
) -> None:
    def ev(counter: int, kind: str = "alarm", ref: int | None = None) -> store_mod.NewEvent:
        return store_mod.NewEvent(
            id=f"gw-1:b:{counter}", gw="gw-1", seq=counter, kind=kind, device="b",
            counter=counter, village="v", household="h", gw_ts=counter,
            ref=None if ref is None else f"gw-1:b:{ref}",
        )

    async with Store(tmp_path / "centre.db") as store:
        async with store.transaction() as db:
            # 2 cancels 1 (same batch, after it); 3 is cancelled by 4 before it arrives.
            await store_mod.insert_events(db, [ev(1), ev(2, "cancel", 1), ev(4, "cancel", 3),
                                               ev(3), ev(1)], 100)
        one = [(s.kind, s.detail) for s in await store.timeline("gw-1:b:1")]
        assert one == [("received", {"kind": "alarm"}),
                       ("cancelled", {"event": "gw-1:b:2", "state": "open"})]
        three = [(s.kind, s.detail) for s in await store.timeline("gw-1:b:3")]
        assert three == [("cancelled", {"event": "gw-1:b:4", "state": None}),
                         ("received", {"kind": "alarm"})]
        assert (await store.get_event("gw-1:b:3")).state == "cancelled"  # type: ignore[union-attr]


async def test_a_long_display_name_is_cut_for_the_button_but_kept_elsewhere(
    centre: Centre,
) -> None:
    long_name = "乡镇应急值班室第一值班员" * 3  # 36 characters; a §6.4 `by` holds 32
    act_as(centre.app, Role.OPERATOR, long_name)
    eid = await press(centre, 7)
    r = await post(centre, eid, "dispatch", {"responder": "村医"})
    assert r.json()["acked_by"] == long_name[:32] and r.json()["dispatched_by"] == long_name


async def test_a_step_that_fails_midway_leaves_no_state_timeline_or_audit(tmp_path: Path) -> None:
    path = tmp_path / "centre.db"
    staff = Principal(3, "zhao", "赵敏", Role.OPERATOR, "session")
    new = store_mod.NewEvent(
        id="gw-1:b:1", gw="gw-1", seq=1, kind="alarm", device="b", counter=1, village="v",
        household="h", gw_ts=1,
    )

    def broken_signer(ev: store_mod.Event) -> tuple[str, bytes]:
        raise OSError("the signing key went away")

    async with Store(path) as store:
        await store.insert_event(new, now_ms=100)
        with pytest.raises(OSError):
            await lifecycle.dispatch(store, "gw-1:b:1", staff, "村医", "", 200, broken_signer)
        alarm = await store.get_event("gw-1:b:1")
        assert alarm is not None and (alarm.state, alarm.acked_at) == ("open", None)
        assert [s.kind for s in await store.timeline("gw-1:b:1")] == ["received"]
        assert await store.count_downlinks() == 0
        with pytest.raises(RuntimeError):  # ingest's batch rolled back: no step either
            async with store.transaction() as db:
                await store_mod.insert_events(db, [dataclasses.replace(new, id="gw-1:b:2")], 300)
                raise RuntimeError("commit failed")
        assert await store.get_event("gw-1:b:2") is None
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 0
        assert db.execute(
            "SELECT COUNT(*) FROM alarm_timeline WHERE alarm = 'gw-1:b:2'"
        ).fetchone()[0] == 0
    finally:
        db.close()
