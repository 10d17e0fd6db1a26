"""Broadcasts at the centre on a real SQLite file, with an in-memory stand-in for the MQTT
client: validation, routing to gateways, signed copies, speaker report rules, cancel,
scheduling, the outbox while the broker is away, CAP over HTTP, and the schema migration."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from centre.api import create_app
from centre.bcreports import FINAL, STATES, supersedes
from centre.cap import to_cap_xml
from centre.config import CentreConfig, load_config
from centre.enrol import (
    EnrolError,
    centre_public_key,
    enrol_gateway,
    enrol_gateway_async,
    init_centre,
)
from centre.store import _MIGRATIONS, SCHEMA_VERSION, Store, now_ms
from harness.fakegateway import (
    FakeBroker,
    signed_conf,
    signed_heartbeat,
    signed_reports,
    wait_until,
)
from onekey.cli import main
from protocol.signed import verify_frame
from tests.auth_support import act_as
from transport.keys import load_public_hex, public_hex

NOW = 1_720_000_000_000  # 2024-07-03T09:46:40Z
KEYS = {gw: Ed25519PrivateKey.generate() for gw in ("gw-1", "gw-2", "gw-3")}
VILLAGES = {"gw-1": ["v-1", "v-2"], "gw-2": ["v-3"], "gw-3": []}


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
            sum(m.counts[k] for k in ("bc_reports", "heartbeats", "rejected", "events", "confs"))
        )

    def copies(self) -> list[tuple[str, dict[str, Any]]]:
        """Broadcast copies the centre published: (gateway, verified body)."""
        pub = load_public_hex(self.centre_pub)
        return [
            (t.split("/")[3], verify_frame(pub, t, p))
            for t, p in self.broker.published
            if t.endswith("/down/bc")
        ]

    async def post(self, status: int = 201, **kw: Any) -> dict[str, Any]:
        r = await self.http.post("/api/broadcasts", json=body(**kw))
        assert r.status_code == status, r.text
        out: dict[str, Any] = r.json()
        return out

    async def get(self, bc_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/api/broadcasts/{bc_id}")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


def body(**kw: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "by": "Li Wei",
        "urgency": "Immediate",
        "severity": "Severe",
        "certainty": "Observed",
        "valid_for_s": 3600,
        "area": [{"village": "v-1"}],
        "text": "请注意：明天上午停水。",
    }
    b.update(kw)
    return {k: v for k, v in b.items() if v is not None}


async def setup_centre(tmp_path: Path) -> CentreConfig:
    path, _ = init_centre(tmp_path / "centre")
    cfg = dataclasses.replace(load_config(path), reconnect_min_s=0.01, reconnect_max_s=0.05)
    for gw, key in KEYS.items():
        await enrol_gateway_async(cfg, gw, public_hex(key), villages=VILLAGES[gw])
    return cfg


@contextlib.asynccontextmanager
async def running(
    cfg: CentreConfig, broker: FakeBroker, now: list[int], connected: bool = True
) -> AsyncIterator[Centre]:
    app = create_app(
        cfg, client_factory=broker.factory, clock=lambda: now[0], scheduler_period_s=0.01
    )
    act_as(app, username="Li Wei")  # route logic under test; tests/unit/test_centre_accounts.py checks access
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://centre") as http:
            if connected:
                await wait_until(lambda: bool(broker.clients) and broker.clients[-1].connected)
            yield Centre(app, http, broker, centre_public_key(cfg), now)


@pytest.fixture
async def centre(tmp_path: Path) -> AsyncIterator[Centre]:
    cfg = await setup_centre(tmp_path)
    async with running(cfg, FakeBroker(), [NOW]) as c:
        yield c


async def poll(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Until `check()` (an API call) is true; TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling the HTTP API
            await asyncio.sleep(0.01)


# -- posting and routing


async def test_a_broadcast_goes_signed_to_each_gateway_that_serves_its_villages(
    centre: Centre,
) -> None:
    out = await centre.post(
        area=[{"village": "v-1"}, {"village": "v-3", "groups": ["east"], "speakers": ["spk-7"]}],
        clip="siren", repeat=2,
    )
    assert out["id"].startswith("centre-20240703094640-") and len(out["id"]) <= 40
    assert (out["sender"], out["by"], out["state"], out["msgType"], out["status"]) == (
        "centre:Li_Wei", "Li Wei", "sending", "Alert", "Actual"
    )
    assert (out["sent"], out["expires"], out["priority"], out["source"]) == (
        NOW, NOW + 3_600_000, 1, "api"
    )
    await wait_until(lambda: len(centre.copies()) == 2)
    copies = dict(centre.copies())
    assert set(copies) == {"gw-1", "gw-2"}
    assert copies["gw-1"] == {
        "id": out["id"], "gw": "gw-1", "sender": "centre:Li_Wei", "sent": NOW, "status": "Actual",
        "msgType": "Alert", "urgency": "Immediate", "severity": "Severe", "certainty": "Observed",
        "expires": NOW + 3_600_000, "area": [{"village": "v-1", "groups": [], "speakers": []}],
        "language": "zh-CN", "text": "请注意：明天上午停水。", "repeat": 2, "clip": "siren",
    }
    assert copies["gw-2"]["area"] == [{"village": "v-3", "groups": ["east"], "speakers": ["spk-7"]}]

    await wait_until(lambda: centre.app.state.metrics.counts["broadcast_copies_sent"] == 2)
    got = await centre.get(out["id"])
    assert got["state"] == "sent"
    assert [(g["gw"], g["villages"], g["state"], g["sent_at"]) for g in got["gateways"]] == [
        ("gw-1", ["v-1"], "sent", NOW), ("gw-2", ["v-3"], "sent", NOW)
    ]
    assert got["summary"] == {"gateways": {"sent": 2}, "speakers": {}}
    assert got["speakers"] == []
    # Each copy is held until its gateway confirms it (§6.6); another's confirmation is not it.
    assert (await centre.http.get("/api/metrics")).json()["pending_downlinks"] == 2
    await centre.receive(*signed_conf(KEYS["gw-2"], "gw-2", bc=[out["id"]]))
    await centre.receive(*signed_conf(KEYS["gw-3"], "gw-3", bc=[out["id"]]))
    assert (await centre.http.get("/api/metrics")).json()["pending_downlinks"] == 1
    await centre.receive(*signed_conf(KEYS["gw-1"], "gw-1", bc=[out["id"]]))
    assert (await centre.http.get("/api/metrics")).json()["pending_downlinks"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"area": [{"village": "v-9"}]}, "no enrolled gateway serves village v-9"),
        ({"area": []}, "area is empty"),
        ({"area": [{"village": "v-1"}, {"village": "v-1", "groups": ["a"]}]}, "appears twice"),
        ({"area": [{"village": "V 1"}]}, "'V 1' is not an id: 1-32 of a-z"),
        ({"expires": NOW + 60_000}, "exactly one of expires"),
        ({"valid_for_s": None}, "exactly one of expires"),
        ({"valid_for_s": None, "expires": NOW - 1000}, "is not after now"),
        ({"valid_for_s": None, "expires": (NOW + 60_000) // 1000}, "looks like Unix seconds"),
        ({"valid_for_s": 40 * 86400}, "valid_for_s"),
        ({"start": NOW - 3_600_000}, "is in the past"),
        ({"start": NOW + 31 * 86_400_000}, "more than 30 days ahead"),
        ({"text": "字" * 501}, "text"),
        ({"text": "fire 🔥"}, "Basic Multilingual Plane"),
        ({"text": "bell\x07"}, "control character"),
        ({"text": "   "}, "give a text or a clip"),
        ({"repeat": 6}, "repeat"),
        ({"repeat": "2"}, "repeat"),
        ({"clip": "bell"}, "clip"),
        ({"status": "Draft"}, "status"),
        ({"msgType": "Ack"}, "msgType"),
        ({"urgency": None}, "urgency"),
        ({"language": "chinese-simplified"}, "language"),
        ({"by": "  "}, "by"),
        ({"by": "x" * 33}, "by"),
        ({"expire": NOW}, "expire"),
        ({"references": ["centre-1"]}, "only for an Update or a Cancel"),
        ({"msgType": "Cancel"}, "needs references"),
        ({"msgType": "Update", "references": ["nope-1"]}, "this centre has no broadcast nope-1"),
        ({"references": ["has space"]}, "'has space' is not a broadcast id"),
    ],
)
async def test_what_cannot_be_sent_is_a_422_that_says_what_to_change(
    centre: Centre, change: dict[str, Any], message: str
) -> None:
    r = await centre.http.post("/api/broadcasts", json=body(**change))
    assert r.status_code == 422, r.text
    assert message in json.dumps(r.json(), ensure_ascii=False), r.text
    assert centre.copies() == []


async def test_a_gateways_heartbeat_can_tell_which_villages_it_serves(centre: Centre) -> None:
    await centre.post(status=422, area=[{"village": "v-4"}])
    await centre.receive(*signed_heartbeat(KEYS["gw-3"], "gw-3", ts=1, villages=["v-4", "v-5"]))
    gws = {g["id"]: g for g in (await centre.http.get("/api/gateways")).json()}
    assert (gws["gw-3"]["villages"], gws["gw-3"]["reported_villages"]) == ([], ["v-4", "v-5"])
    assert (gws["gw-1"]["villages"], gws["gw-1"]["reported_villages"]) == (["v-1", "v-2"], None)
    out = await centre.post(area=[{"village": "v-4"}, {"village": "v-2"}])
    assert [g["gw"] for g in out["gateways"]] == ["gw-1", "gw-3"]
    # A heartbeat without the field keeps what the gateway said before; a bad list is refused.
    await centre.receive(*signed_heartbeat(KEYS["gw-3"], "gw-3", ts=2))
    (g3,) = [g for g in (await centre.http.get("/api/gateways")).json() if g["id"] == "gw-3"]
    assert g3["reported_villages"] == ["v-4", "v-5"]
    await centre.receive(*signed_heartbeat(KEYS["gw-3"], "gw-3", ts=3, villages=["V 4"]))
    assert centre.app.state.metrics.rejected["bad_field"] == 1


# -- reports


def test_report_states_only_move_forward() -> None:
    assert supersedes("queued", 1, None, None)
    assert supersedes("delivered", 5, "queued", 10)  # a later stage wins whatever the time
    assert not supersedes("queued", 20, "played", 10)  # a late queued changes nothing
    assert not supersedes("offline", 20, "delivered", 10)
    assert supersedes("offline", 20, "queued", 10) and supersedes("queued", 30, "offline", 20)
    assert not supersedes("queued", 10, "offline", 20)
    assert supersedes("preempted", 20, "playing", 10)
    assert supersedes("playing", 30, "preempted", 20)  # played again from its start
    assert not supersedes("preempted", 20, "playing", 30)  # an old preempted arriving late
    assert not supersedes("playing", 40, "playing", 30)  # the same state keeps its first time
    for final in FINAL:
        for state in STATES:
            expected = state == "played" and final != "played"
            assert supersedes(state, 99, final, 1) is expected, (state, final)
        assert supersedes(final, 1, "playing", 99)


async def test_speaker_reports_are_shown_per_speaker_with_the_latest_state(
    centre: Centre,
) -> None:
    out = await centre.post(area=[{"village": "v-1"}, {"village": "v-3"}])
    bc = out["id"]
    k1, k2 = KEYS["gw-1"], KEYS["gw-2"]
    centre.now[0] = NOW + 5000
    await centre.receive(*signed_reports(k1, "gw-1", bc, [
        ("spk-1", "queued", NOW + 100), ("spk-2", "queued", NOW + 100),
        ("spk-3", "offline", NOW + 100),
    ]))
    await centre.receive(*signed_reports(k1, "gw-1", bc, [
        ("spk-1", "received", NOW + 200), ("spk-1", "playing", NOW + 300),
        ("spk-2", "received", NOW + 250),
    ]))
    await centre.receive(*signed_reports(k2, "gw-2", bc, [("spk-9", "played", NOW + 900)]))
    await centre.receive(*signed_reports(k1, "gw-1", bc, [
        ("spk-1", "preempted", NOW + 400), ("spk-1", "playing", NOW + 800),
        ("spk-1", "played", NOW + 1500),
        ("spk-2", "queued", NOW + 2000),  # late, from a re-sent batch: ignored
        ("spk-2", "failed", NOW + 1800),
    ]))
    got = await centre.get(bc)
    speakers = {s["device"]: (s["gw"], s["state"], s["at"]) for s in got["speakers"]}
    assert speakers == {
        "spk-1": ("gw-1", "played", NOW + 1500),
        "spk-2": ("gw-1", "failed", NOW + 1800),
        "spk-3": ("gw-1", "offline", NOW + 100),
        "spk-9": ("gw-2", "played", NOW + 900),
    }
    assert all(s["reported_at"] == NOW + 5000 for s in got["speakers"])
    assert got["summary"]["speakers"] == {"played": 2, "failed": 1, "offline": 1}
    g1 = next(g for g in got["gateways"] if g["gw"] == "gw-1")
    assert (g1["reports"], g1["last_report"]) == (11, NOW + 5000)
    listed = (await centre.http.get("/api/broadcasts")).json()
    assert listed[0]["summary"]["speakers"]["played"] == 2


async def test_bad_and_foreign_reports_are_refused_and_counted(centre: Centre) -> None:
    out = await centre.post(area=[{"village": "v-1"}])
    bc = out["id"]
    await centre.receive(*signed_reports(KEYS["gw-1"], "gw-1", "no-such-bc", [("spk-1", "played", 1)]))
    # gw-2 was not sent this broadcast.
    await centre.receive(*signed_reports(KEYS["gw-2"], "gw-2", bc, [("spk-1", "played", 1)]))
    topic, forged = signed_reports(Ed25519PrivateKey.generate(), "gw-1", bc, [("spk-1", "played", 1)])
    await centre.receive(topic, forged)
    await centre.receive(*signed_reports(KEYS["gw-1"], "gw-1", bc, [("spk-1", "delivered", 1)]))
    await centre.receive(*signed_reports(KEYS["gw-1"], "gw-1", bc, []))
    m = (await centre.http.get("/api/metrics")).json()
    assert m["rejected"] == {"unknown_broadcast": 2, "bad_signature": 1, "bad_field": 2}
    assert (await centre.get(bc))["speakers"] == []


async def test_a_full_batch_of_200_reports_is_taken_though_it_is_over_8_kib(
    centre: Centre,
) -> None:
    out = await centre.post()
    # 28-character ids: with 32 the batch is over §8.3's 16,000 bytes and a gateway splits it.
    batch = [(f"spk-{i:024d}", "preempted", NOW + i) for i in range(200)]
    topic, payload = signed_reports(KEYS["gw-1"], "gw-1", out["id"], batch)
    assert 8_192 < len(payload) <= 16_000
    _, forged = signed_reports(Ed25519PrivateKey.generate(), "gw-1", out["id"], batch)
    await centre.receive(topic, forged)
    await centre.receive(topic, payload[:128] + b" " + b"x" * 30_000)
    await centre.receive(topic, payload)
    got = await centre.get(out["id"])
    assert got["summary"]["speakers"] == {"preempted": 200}
    assert centre.app.state.metrics.rejected == {"bad_signature": 1, "oversized": 1}


# -- cancel


async def test_cancel_sends_a_cancel_to_the_same_gateways(centre: Centre) -> None:
    out = await centre.post(area=[{"village": "v-1"}, {"village": "v-3"}])
    bc = out["id"]
    await wait_until(lambda: len(centre.copies()) == 2)
    centre.now[0] = NOW + 60_000
    # The actor is the logged-in staff member; the body's `by` is ignored.
    r = await centre.http.post(f"/api/broadcasts/{bc}/cancel", json={"by": "Zhao", "note": "水已恢复"})
    assert r.status_code == 200, r.text
    res = r.json()
    orig, cancel = res["broadcast"], res["cancel"]
    assert (orig["state"], orig["cancelled_by"], orig["cancel_note"], orig["cancelled_at"]) == (
        "cancelled", "Li Wei", "水已恢复", NOW + 60_000
    )
    assert orig["replaced_by"] == cancel["id"]
    assert (cancel["msgType"], cancel["references"], cancel["expires"]) == (
        "Cancel", [bc], orig["expires"]
    )
    assert cancel["reference_details"] == [{"id": bc, "sender": orig["sender"], "sent": orig["sent"]}]
    await wait_until(lambda: len(centre.copies()) == 4)
    sent = [(gw, c["msgType"], c.get("references")) for gw, c in centre.copies()[2:]]
    assert sorted(sent) == [("gw-1", "Cancel", [bc]), ("gw-2", "Cancel", [bc])]

    again = await centre.http.post(f"/api/broadcasts/{bc}/cancel", json={"by": "Wang"})
    assert again.status_code == 200 and again.json()["cancel"] is None
    assert again.json()["broadcast"]["cancelled_by"] == "Li Wei"
    for bc_id, req, status in (
        (cancel["id"], {"by": "W"}, 409), ("nope", {"by": "W"}, 404), (bc, {}, 200)
    ):
        r = await centre.http.post(f"/api/broadcasts/{bc_id}/cancel", json=req)
        assert r.status_code == status, r.text
    # Reports about the cancelled broadcast still count: the speakers say they stopped.
    await centre.receive(*signed_reports(KEYS["gw-1"], "gw-1", bc, [("spk-1", "cancelled", NOW + 61_000)]))
    assert (await centre.get(bc))["speakers"][0]["state"] == "cancelled"


async def test_an_update_replaces_and_an_expired_broadcast_cannot_be_cancelled(
    centre: Centre,
) -> None:
    first = await centre.post(valid_for_s=60)
    upd = await centre.post(msgType="Update", references=[first["id"]], area=[], text="改为下午停水")
    assert [g["gw"] for g in upd["gateways"]] == ["gw-1"]  # the area of the one it updates
    assert (await centre.get(first["id"]))["state"] == "updated"
    r = await centre.http.post(f"/api/broadcasts/{first['id']}/cancel", json={"by": "W"})
    assert r.status_code == 409 and upd["id"] in r.json()["detail"]
    centre.now[0] = NOW + 3_600_000
    r = await centre.http.post(f"/api/broadcasts/{upd['id']}/cancel", json={"by": "W"})
    assert r.status_code == 409 and "expired" in r.json()["detail"]


# -- scheduling and the outbox


async def test_a_held_broadcast_is_sent_at_its_start_even_across_a_restart(tmp_path: Path) -> None:
    cfg = await setup_centre(tmp_path)
    broker, now = FakeBroker(), [NOW]
    async with running(cfg, broker, now) as c:
        out = await c.post(start=NOW + 60_000, valid_for_s=600)
        assert (out["state"], out["start"], out["expires"]) == (
            "scheduled", NOW + 60_000, NOW + 660_000
        )
        assert [g["state"] for g in out["gateways"]] == ["scheduled"]
        now[0] = NOW + 59_000
        await c.http.get("/healthz")
        assert (await c.get(out["id"]))["state"] == "scheduled"
    assert broker.published == []
    now[0] = NOW + 61_000  # the centre was down when the start came
    async with running(cfg, broker, now) as c:
        await wait_until(lambda: len(c.copies()) == 1)
        (gw, copy), = c.copies()
        assert (gw, copy["id"], copy["start"]) == ("gw-1", out["id"], NOW + 60_000)
        await wait_until(lambda: c.app.state.metrics.counts["broadcast_copies_sent"] == 1)
        got = await c.get(out["id"])
        assert (got["state"], got["released_at"]) == ("sent", NOW + 61_000)


async def test_a_held_broadcast_cancelled_or_expired_is_never_sent(tmp_path: Path) -> None:
    cfg = await setup_centre(tmp_path)
    broker, now = FakeBroker(), [NOW]
    async with running(cfg, broker, now) as c:
        held = await c.post(start=NOW + 60_000)
        late = await c.post(start=NOW + 60_000, valid_for_s=30)
        r = await c.http.post(f"/api/broadcasts/{held['id']}/cancel", json={"by": "Zhao"})
        assert r.status_code == 200 and r.json()["cancel"] is None
        assert r.json()["broadcast"]["gateways"][0]["state"] == "withheld"
    now[0] = NOW + 200_000  # the centre was down for the whole of `late`
    async with running(cfg, broker, now) as c:

        async def expired() -> bool:
            return bool((await c.get(late["id"]))["state"] == "expired")

        await poll(expired)
        assert c.app.state.metrics.counts["broadcasts_released"] == 0
        assert (await c.get(held["id"]))["state"] == "cancelled"
        assert [g["state"] for g in (await c.get(late["id"]))["gateways"]] == ["expired"]
    assert broker.published == []


async def test_a_broadcast_posted_while_the_broker_is_away_is_sent_when_it_returns(
    tmp_path: Path,
) -> None:
    cfg = await setup_centre(tmp_path)
    broker, now = FakeBroker(fail_connects=10**6), [NOW]
    async with running(cfg, broker, now, connected=False) as c:
        out = await c.post(area=[{"village": "v-1"}, {"village": "v-3"}])
        assert out["state"] == "sending"
        assert (await c.http.get("/api/metrics")).json()["pending_downlinks"] == 2
        short = await c.post(valid_for_s=10)
        now[0] = NOW + 11_000  # `short` expires before the broker is back
        await wait_until(lambda: c.app.state.metrics.counts["broadcast_copies_expired"] == 1)
        assert (await c.get(short["id"]))["state"] == "expired"
        broker.fail_connects = 0
        await wait_until(lambda: len(c.copies()) == 2, within=10)
        assert {gw for gw, _ in c.copies()} == {"gw-1", "gw-2"}
        assert {b["id"] for _, b in c.copies()} == {out["id"]}
        await wait_until(lambda: c.app.state.metrics.counts["broadcast_copies_sent"] == 2)
        assert (await c.get(out["id"]))["state"] == "sent"


async def test_an_unconfirmed_copy_is_held_until_its_broadcast_expires(tmp_path: Path) -> None:
    cfg = await setup_centre(tmp_path)
    broker, now = FakeBroker(), [NOW]
    async with running(cfg, broker, now) as c:
        out = await c.post(area=[{"village": "v-1"}, {"village": "v-3"}], valid_for_s=10)
        await wait_until(lambda: c.app.state.metrics.counts["broadcast_copies_sent"] == 2)
        metrics = (await c.http.get("/api/metrics")).json()
        assert metrics["pending_downlinks"] == 2  # the broker has them; no gateway confirmed
        now[0] = NOW + 11_000  # expired: a gateway would refuse it, nothing left to deliver

        async def released() -> bool:
            return bool((await c.http.get("/api/metrics")).json()["pending_downlinks"] == 0)

        await poll(released)
        got = await c.get(out["id"])
        assert [g["state"] for g in got["gateways"]] == ["sent", "sent"]
        assert c.app.state.metrics.counts["broadcast_copies_expired"] == 0


# -- listing, CAP over HTTP, the API description


async def test_broadcasts_are_listed_newest_first_with_filters(centre: Centre) -> None:
    a = await centre.post(area=[{"village": "v-1"}])
    centre.now[0] += 10_000
    b = await centre.post(area=[{"village": "v-3"}], start=NOW + 600_000)
    centre.now[0] += 10_000
    c = await centre.post(msgType="Cancel", references=[a["id"]], area=[], text="")

    async def ids(**params: Any) -> list[str]:
        r = await centre.http.get("/api/broadcasts", params=params)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()]

    assert await ids() == [c["id"], b["id"], a["id"]]
    assert await ids(state="scheduled") == [b["id"]]
    assert await ids(state="cancelled") == [a["id"]]
    assert await ids(msgType="Cancel") == [c["id"]]
    assert await ids(village="v-3") == [b["id"]]
    assert await ids(since=NOW + 10_000) == [c["id"], b["id"]]
    assert await ids(limit=1) == [c["id"]]
    for bad in ({"state": "burning"}, {"limit": 0}, {"limit": 1001}, {"since": -1}):
        assert (await centre.http.get("/api/broadcasts", params=bad)).status_code == 422
    assert (await centre.http.get("/api/broadcasts/nope")).status_code == 404


async def test_cap_in_and_out_over_http(centre: Centre) -> None:
    out = await centre.post(area=[{"village": "v-2", "groups": ["east"]}], clip="chime")
    r = await centre.http.get(f"/api/broadcasts/{out['id']}/cap")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/cap+xml")
    xml = r.text
    assert f"<identifier>{out['id']}</identifier>" in xml and "<resourceDesc>chime</resourceDesc>" in xml

    imported = xml.replace(out["id"], "imported-1").replace(
        "<valueName>onekey:village</valueName>\n        <value>v-2</value>",
        "<valueName>onekey:village</valueName>\n        <value>v-3</value>",
    )

    async def post_cap(xml: str, ctype: str = "application/cap+xml", **params: str) -> httpx.Response:
        return await centre.http.post(
            "/api/broadcasts/cap", params=params, content=xml, headers={"content-type": ctype}
        )

    r = await post_cap(imported, by="Zhao")
    assert r.status_code == 201, r.text
    got = r.json()
    # The import gets this centre's own id; the source's identity is kept as given.
    assert got["id"] != "imported-1" and got["cap_source"]["identifier"] == "imported-1"
    assert (got["sender"], got["sent"], got["by"], got["source"]) == (
        out["sender"], out["sent"], "Li Wei", "cap"
    )
    assert [g["gw"] for g in got["gateways"]] == ["gw-2"]
    again = await post_cap(imported, by="Zhao")
    assert again.status_code == 409 and "imported already" in again.json()["detail"]
    assert (await post_cap(imported, "text/plain", by="Zhao")).status_code == 415
    bad = await post_cap("<alert", by="Zhao")
    assert bad.status_code == 422 and "not well-formed" in bad.json()["detail"]
    unserved = imported.replace("imported-1", "imported-2").replace("<value>v-3<", "<value>v-9<")
    r = await post_cap(unserved, by="Zhao")
    assert r.status_code == 422 and "village v-9" in r.json()["detail"]
    # Without `by` the logged-in staff member imports (the same alert again: 409).
    assert (await post_cap(imported)).status_code == 409


async def test_the_api_description_lists_the_broadcast_routes(centre: Centre) -> None:
    spec = (await centre.http.get("/openapi.json")).json()
    paths = spec["paths"]
    for p in ("/api/broadcasts", "/api/broadcasts/cap", "/api/broadcasts/{bc_id}",
              "/api/broadcasts/{bc_id}/cap", "/api/broadcasts/{bc_id}/cancel"):
        assert p in paths, p
    assert "application/cap+xml" in paths["/api/broadcasts/cap"]["post"]["requestBody"]["content"]
    assert {"201", "409", "422"} <= set(paths["/api/broadcasts"]["post"]["responses"])


async def test_the_cap_command_checks_exports_and_reports_an_absent_centre(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONEKEY_TOKEN", "okt_not-checked-nothing-listens")
    cfg = await setup_centre(tmp_path)
    now = [NOW]
    async with running(cfg, FakeBroker(), now) as c:
        out = await c.post(area=[{"village": "v-1", "speakers": ["spk-1"]}])
        xml = (await c.http.get(f"/api/broadcasts/{out['id']}/cap")).text
    exported = tmp_path / "out.xml"
    assert cfg.source is not None
    argv = ["cap", "export", out["id"], "--config", str(cfg.source), "-o", str(exported)]
    assert await asyncio.to_thread(main, argv) == 0
    assert exported.read_text(encoding="utf-8") == xml

    # The same broadcast sent now (by the real clock), with a shape speakers cannot use.
    real_now = now_ms() // 1000 * 1000
    current = to_cap_xml({**out, "sent": real_now, "expires": real_now + 3_600_000}).replace(
        "</area>", "<polygon>1,1 2,2 1,2 1,1</polygon></area>"
    )
    (tmp_path / "ok.xml").write_text(current, encoding="utf-8")
    assert await asyncio.to_thread(main, ["cap", "check", str(tmp_path / "ok.xml")]) == 0
    printed = capsys.readouterr().out
    assert f"ok: {out['id']} Alert Actual" in printed and "villages v-1" in printed
    assert "note: info/area[1] (v-1): polygon ignored" in printed
    # The original has expired by now (2024): the centre would refuse it.
    (tmp_path / "old.xml").write_text(xml, encoding="utf-8")
    assert await asyncio.to_thread(main, ["cap", "check", str(tmp_path / "old.xml")]) == 1
    assert "refused: info/expires: expires" in capsys.readouterr().err

    nowhere = "http://127.0.0.1:9"  # discard port: nothing listens
    argv = ["cap", "import", str(tmp_path / "ok.xml"), "--by", "Li", "--api", nowhere]
    assert await asyncio.to_thread(main, argv) == 2
    assert "cannot reach the centre at http://127.0.0.1:9" in capsys.readouterr().err
    argv = ["cap", "export", "nope", "--config", str(cfg.source)]
    assert await asyncio.to_thread(main, argv) == 2
    assert "no broadcast 'nope'" in capsys.readouterr().err


# -- enrolment and the schema


def test_gateways_are_enrolled_with_the_villages_they_serve(tmp_path: Path) -> None:
    path, _ = init_centre(tmp_path)
    key = public_hex(Ed25519PrivateKey.generate())
    gw = enrol_gateway(path, "gw-1", key, villages=["v-2", "v-1", "v-2"])
    assert gw.villages == ("v-1", "v-2")
    assert enrol_gateway(path, "gw-1", key).villages == ("v-1", "v-2")  # kept
    assert enrol_gateway(path, "gw-1", key, villages=[]).villages == ()  # replaced
    with pytest.raises(EnrolError, match="village id"):
        enrol_gateway(path, "gw-1", key, villages=["Village 1"])
    rc = main(["centre", "enrol-gateway", "--config", str(path), "--id", "gw-1",
               "--public-key", key, "--village", "v-7", "--village", "v-8"])
    assert rc == 0
    assert enrol_gateway(path, "gw-1", key).villages == ("v-7", "v-8")


async def test_a_database_of_the_first_schema_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "centre.db"
    db = sqlite3.connect(path)
    db.executescript(_MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    db.execute("INSERT INTO gateways (id, public_key, name, enrolled_at) VALUES ('gw-1', ?, 'x', 5)",
               ("aa" * 32,))
    db.commit()
    db.close()
    async with Store(path) as store:
        (g,) = await store.list_gateways()
        assert (g.id, g.name, g.villages, g.reported_villages) == ("gw-1", "x", (), None)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"broadcasts", "broadcast_gateways", "broadcast_reports"} <= tables
    finally:
        db.close()
