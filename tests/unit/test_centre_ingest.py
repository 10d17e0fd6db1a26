"""The centre's ingest on a real SQLite file, with an in-memory stand-in for the MQTT client:
signature checks, dedupe, commit-before-ack, heartbeats, pending staff acks across reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from centre import confs, frames
from centre.config import CentreConfig
from centre.ingest import Ingest, Metrics, kv
from centre.store import Event, Store
from harness.fakegateway import (
    FakeBroker,
    event_body,
    signed_conf,
    signed_event,
    signed_heartbeat,
    wait_until,
)
from protocol import uplink
from protocol.signed import encode_json, sign_frame, verify_frame
from transport.keys import public_hex

CENTRE_KEY = Ed25519PrivateKey.generate()
GW_KEY = Ed25519PrivateKey.generate()


def config(tmp_path: Path) -> CentreConfig:
    return CentreConfig(
        db_path=tmp_path / "centre.db",
        key_path=tmp_path / "centre.key",
        http_host="127.0.0.1",
        http_port=0,
        broker_host="127.0.0.1",
        broker_port=1,
        broker_ca=tmp_path / "ca.pem",
        broker_cert=tmp_path / "c.pem",
        broker_key=tmp_path / "k.pem",
        reconnect_min_s=0.01,
        reconnect_max_s=0.05,
    )


def ack_of(topic: str, payload: bytes) -> dict[str, Any]:
    return verify_frame(CENTRE_KEY.public_key(), topic, payload)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "centre.db") as s:
        await s.upsert_gateway("gw-1", public_hex(GW_KEY), 1)
        yield s


@pytest.fixture
def ingest(tmp_path: Path, store: Store) -> Ingest:
    return Ingest(config(tmp_path), store, CENTRE_KEY, Metrics(), clock=lambda: 42_000)


async def test_a_signed_event_is_stored_then_answered_received(ingest: Ingest, store: Store) -> None:
    acks = await ingest.handle(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 7)))
    ev = await store.get_event("gw-1:btn-1:7")
    assert ev is not None and ev.state == "open" and ev.received_at == 42_000
    assert len(acks) == 1
    topic, payload = acks[0]
    assert topic == "ok/v1/gw/gw-1/down/ack"
    assert ack_of(topic, payload) == {"id": "gw-1:btn-1:7", "s": "received", "at": 42_000}
    assert ingest.metrics.counts["events"] == 1


async def test_forged_unknown_and_mismatched_events_are_refused_and_counted(
    ingest: Ingest, store: Store
) -> None:
    body = event_body("gw-1", "btn-1", 7)
    topic, _ = signed_event(GW_KEY, body)
    _, forged = signed_event(Ed25519PrivateKey.generate(), body)
    assert await ingest.handle(topic, forged) == []
    assert await ingest.handle(*signed_event(GW_KEY, event_body("gw-9", "btn-1", 7))) == []
    assert await ingest.handle(*signed_event(GW_KEY, event_body("gw-2", "btn-1", 7), "gw-1")) == []
    assert await ingest.handle(*signed_event(GW_KEY, {**body, "counter": -1})) == []
    assert await ingest.handle("ok/v1/gw/gw-1/up/nonsense", b"x") == []
    assert await store.list_events() == []
    assert dict(ingest.metrics.rejected) == {
        "bad_signature": 1, "unknown_gateway": 1, "topic_mismatch": 1, "bad_field": 1,
        "bad_topic": 1,
    }
    assert ingest.metrics.counts["rejected"] == 5


async def test_rejections_are_logged_as_key_value_lines(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    _, forged = signed_event(Ed25519PrivateKey.generate(), event_body("gw-1", "btn-1", 7))
    with caplog.at_level("WARNING", logger="onekey.centre.ingest"):
        await ingest.handle("ok/v1/gw/gw-1/up/event", forged)
    line = caplog.records[-1].getMessage()
    assert line.startswith("event=rejected reason=bad_signature topic=ok/v1/gw/gw-1/up/event")
    assert kv(a="x y\nz", b="plain") == 'a="x y\\nz" b=plain'


async def test_a_replayed_event_is_stored_once_and_answered_with_its_current_state(
    ingest: Ingest, store: Store
) -> None:
    msg = signed_event(GW_KEY, event_body("gw-1", "btn-1", 7))
    first = await ingest.handle(*msg)
    second = await ingest.handle(*msg)
    assert first == second  # Ed25519 is deterministic: the very same ack
    assert len(await store.list_events()) == 1
    assert ingest.metrics.counts["duplicates"] == 1

    def make(ev: Event) -> tuple[str, bytes]:
        return frames.signed_ack(CENTRE_KEY, ev.gw, frames.ack_body(ev))

    await store.ack_event("gw-1:btn-1:7", "Li", "doctor coming", 50_000, make)
    (topic, payload), = await ingest.handle(*msg)
    assert ack_of(topic, payload) == {
        "id": "gw-1:btn-1:7", "s": "acked", "at": 50_000, "by": "Li", "note": "doctor coming"
    }


async def test_a_new_key_applies_at_once_after_re_enrolment(ingest: Ingest, store: Store) -> None:
    new_key = Ed25519PrivateKey.generate()
    msg_old = signed_event(GW_KEY, event_body("gw-1", "btn-1", 1))
    msg_new = signed_event(new_key, event_body("gw-1", "btn-1", 2))
    assert await ingest.handle(*msg_old)
    await store.upsert_gateway("gw-1", public_hex(new_key), 2)
    assert await ingest.handle(*msg_new)
    assert await ingest.handle(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 3))) == []
    assert ingest.metrics.rejected["bad_signature"] == 1


async def test_heartbeats_update_the_gateway_and_replays_are_refused(
    ingest: Ingest, store: Store
) -> None:
    assert await ingest.handle(*signed_heartbeat(GW_KEY, "gw-1", ts=1000, outbox=4, devices=9)) == []
    gw = await store.get_gateway("gw-1")
    assert gw is not None and (gw.last_seen, gw.outbox, gw.devices) == (42_000, 4, 9)
    await ingest.handle(*signed_heartbeat(GW_KEY, "gw-1", ts=1000, outbox=0, devices=9))
    assert ingest.metrics.rejected["replay"] == 1
    assert ingest.metrics.counts["heartbeats"] == 1


async def test_a_gateways_full_disk_is_recorded_and_pushed_once_per_change(
    ingest: Ingest, store: Store
) -> None:
    changes = ingest.live.subscribe()
    full = uplink.StoreState(ok=False, full=True, failed=3, free_bytes=0)
    await ingest.handle(*signed_heartbeat(GW_KEY, "gw-1", ts=1, store=full))
    gw = await store.get_gateway("gw-1")
    assert gw is not None and gw.store == full
    got = changes.get_nowait()
    assert got is not None and (got.topic, got.data) == (
        "gateway", {"id": "gw-1", "store": {"ok": False, "full": True, "failed": 3, "free_bytes": 0}}
    )
    # The same state again: recorded; the heartbeat's change carries no new store state.
    await ingest.handle(*signed_heartbeat(GW_KEY, "gw-1", ts=2, store=dataclasses.replace(full, failed=5)))
    gw = await store.get_gateway("gw-1")
    assert gw is not None and gw.store is not None and gw.store.failed == 5
    got = changes.get_nowait()
    assert got is not None and got.data == {"id": "gw-1"}
    assert changes.empty()
    # Space freed at the gateway: pushed again.
    ok = uplink.StoreState(ok=True, full=False, failed=0, free_bytes=10_000_000)
    await ingest.handle(*signed_heartbeat(GW_KEY, "gw-1", ts=3, store=ok))
    got = changes.get_nowait()
    assert got is not None and got.data["store"]["ok"] is True
    # A heartbeat without `store` (an older gateway) leaves it unknown.
    await ingest.handle(*signed_heartbeat(GW_KEY, "gw-1", ts=4))
    gw = await store.get_gateway("gw-1")
    assert gw is not None and gw.store is None


# -- the connection loop, with a stand-in client


@contextlib.asynccontextmanager
async def running(ingest: Ingest) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(ingest.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_run_subscribes_retries_and_answers_only_after_commit(
    tmp_path: Path, store: Store
) -> None:
    broker = FakeBroker(fail_connects=2)
    seen_in_db: list[int] = []

    def check_committed(topic: str, payload: bytes) -> None:
        # Another connection sees the row when the ack is handed to MQTT: it is committed.
        db = sqlite3.connect(tmp_path / "centre.db")
        try:
            seen_in_db.append(db.execute("SELECT COUNT(*) FROM alarms").fetchone()[0])
        finally:
            db.close()

    broker.on_publish = check_committed
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, client_factory=broker.factory)
    async with running(ingest):
        await wait_until(lambda: ingest.metrics.connected)
        client = broker.clients[-1]
        assert len(broker.clients) == 3
        assert client.subscriptions == [
            "ok/v1/gw/+/up/event", "ok/v1/gw/+/up/hb", "ok/v1/gw/+/up/bcr", "ok/v1/gw/+/up/conf",
            "ok/v1/gw/+/up/sms",
        ]
        client.deliver(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 7)))
        client.deliver("ok/v1/gw/gw-1/up/event", b"garbage")
        client.deliver(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 8, "test")))
        await wait_until(lambda: len(broker.published) == 2)
    # When the k-th ack is handed to MQTT, at least k events are committed.
    assert len(seen_in_db) == 2 and all(n >= k for k, n in enumerate(seen_in_db, 1))
    assert [ack_of(t, p)["id"] for t, p in broker.published] == ["gw-1:btn-1:7", "gw-1:btn-1:8"]
    assert ingest.metrics.rejected["malformed"] == 1
    assert not ingest.metrics.connected


async def test_a_gateway_message_is_pubacked_only_after_its_event_is_committed(
    tmp_path: Path, store: Store
) -> None:
    broker = FakeBroker()
    rows_at_puback: list[int] = []

    def count_rows(_msg: object) -> None:
        db = sqlite3.connect(tmp_path / "centre.db")
        try:
            rows_at_puback.append(db.execute("SELECT COUNT(*) FROM alarms").fetchone()[0])
        finally:
            db.close()

    broker.on_ack = count_rows
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, client_factory=broker.factory)
    async with running(ingest):
        await wait_until(lambda: ingest.metrics.connected)
        client = broker.clients[-1]
        client.deliver(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 7)))
        client.deliver("ok/v1/gw/gw-1/up/event", b"garbage")  # bad input: PUBACKed, dropped
        client.deliver(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 8)))
        await wait_until(lambda: len(broker.acked) == 3)
    # At each PUBACK, the events of that message and of those before it are committed.
    assert [min(n, want) for n, want in zip(rows_at_puback, [1, 1, 2], strict=True)] == [1, 1, 2]
    assert [m.mid for m in broker.acked] == [1, 2, 3]  # in the order they arrived
    assert broker.unacked == []


async def test_a_burst_is_committed_in_a_few_transactions_and_every_event_answered(
    tmp_path: Path, store: Store
) -> None:
    broker = FakeBroker()
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, client_factory=broker.factory)
    async with running(ingest):
        await wait_until(lambda: ingest.metrics.connected)
        client = broker.clients[-1]
        for i in range(1, 301):
            client.deliver(*signed_event(GW_KEY, event_body("gw-1", f"btn-{i % 7}", i)))
        await wait_until(lambda: len(broker.acked) == 300)
    assert ingest.metrics.counts["events"] == 300
    assert ingest.metrics.counts["batches"] <= 3  # one transaction (one fsync) per batch
    assert [m.mid for m in broker.acked] == list(range(1, 301))
    assert sorted(ack_of(t, p)["id"] for t, p in broker.published) == sorted(
        f"gw-1:btn-{i % 7}:{i}" for i in range(1, 301)
    )


async def test_a_message_the_centre_fails_on_is_refused_alone_and_the_rest_goes_on(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: dict[str, Any], gw: str) -> None:
        raise RuntimeError("a fault in the code")

    monkeypatch.setattr(confs, "parse_conf", broken)
    broker = FakeBroker()
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, client_factory=broker.factory)
    async with running(ingest):
        await wait_until(lambda: ingest.metrics.connected)
        client = broker.clients[-1]
        client.deliver(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 1)))
        client.deliver(*signed_conf(GW_KEY, "gw-1"))
        client.deliver(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 2)))
        await wait_until(lambda: len(broker.acked) == 3)  # not sent again after a reconnect
        assert len(broker.clients) == 1
    assert ingest.metrics.rejected["internal_error"] == 1
    assert [ack_of(t, p)["id"] for t, p in broker.published] == ["gw-1:btn-1:1", "gw-1:btn-1:2"]


async def test_an_event_whose_commit_fails_is_not_pubacked_and_is_handled_after_reconnect(
    tmp_path: Path, store: Store
) -> None:
    broker = FakeBroker()
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, client_factory=broker.factory)
    async with store.transaction(write=False) as db:
        await db.execute("PRAGMA query_only = 1")  # every write fails, as on a full disk
    async with running(ingest):
        await wait_until(lambda: ingest.metrics.connected)
        broker.clients[-1].deliver(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 7)))
        await wait_until(lambda: ingest.metrics.counts["store_errors"] >= 1)
        assert (broker.acked, len(broker.unacked), broker.published) == ([], 1, [])
        async with store.transaction(write=False) as db:
            await db.execute("PRAGMA query_only = 0")
        await wait_until(lambda: len(broker.acked) == 1)
        assert len(broker.clients) >= 2  # the broker sent it again on a new connection
    assert (await store.get_event("gw-1:btn-1:7")) is not None
    assert [ack_of(t, p)["s"] for t, p in broker.published] == ["received"]


def make_ack(ev: Event) -> tuple[str, bytes]:
    return frames.signed_ack(CENTRE_KEY, ev.gw, frames.ack_body(ev))


async def acked_alarm(store: Store, counter: int, at: int = 60_000) -> str:
    eid = f"gw-1:btn-1:{counter}"
    await store.insert_event(frames.parse_event(event_body("gw-1", "btn-1", counter), "gw-1"), 1)
    await store.ack_event(eid, "Li", "on the way", at, make_ack)
    return eid


def acks_published(broker: FakeBroker, state: str = "acked") -> list[str]:
    return [
        body["id"]
        for body in (ack_of(t, p) for t, p in broker.published if t.endswith("/down/ack"))
        if body["s"] == state
    ]


async def test_a_staff_ack_is_held_after_the_brokers_puback_until_the_gateway_confirms(
    tmp_path: Path, store: Store
) -> None:
    broker = FakeBroker(hold_pubacks=True)
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, client_factory=broker.factory)
    async with running(ingest):
        await wait_until(lambda: ingest.metrics.connected)
        eid = await acked_alarm(store, 7)
        ingest.kick()
        first = broker.clients[-1]
        await wait_until(lambda: len(first.held) == 1)
        broker.hold_pubacks = False
        first.drop()  # no PUBACK: the ack goes out again on the next link
        await wait_until(lambda: acks_published(broker) == [eid])
        assert len(broker.clients) == 2
        await wait_until(lambda: ingest.metrics.counts["downlinks_sent"] == 1)
        # The broker has it, but a broker can lose it (killed before its autosave): held.
        assert await store.count_downlinks() == 1
        client = broker.clients[-1]
        client.deliver(*signed_conf(GW_KEY, "gw-1", acks=[(eid, "acked")]))
        await wait_until(lambda: ingest.metrics.counts["confs"] == 1)
        assert await store.count_downlinks() == 0
        assert ingest.metrics.counts["downlinks_confirmed"] == 1
        client.deliver(*signed_conf(GW_KEY, "gw-1", acks=[(eid, "acked")], ts=2))  # a repeat
        await wait_until(lambda: ingest.metrics.counts["confs"] == 2)
        assert ingest.metrics.counts["downlinks_confirmed"] == 1
    topic, payload = broker.published[0]
    assert ack_of(topic, payload) == {
        "id": eid, "s": "acked", "at": 60_000, "by": "Li", "note": "on the way"
    }


async def test_pending_acks_from_before_a_restart_are_sent_on_connect(
    tmp_path: Path, store: Store
) -> None:
    eid = await acked_alarm(store, 3)
    broker = FakeBroker()
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, client_factory=broker.factory)
    async with running(ingest):
        await wait_until(lambda: acks_published(broker) == [eid])
        await wait_until(lambda: ingest.metrics.counts["downlinks_sent"] == 1)
    assert await store.count_downlinks() == 1  # until the gateway confirms it


async def test_unconfirmed_acks_go_again_when_the_gateway_is_heard_and_while_it_is_online(
    tmp_path: Path, store: Store
) -> None:
    cfg = dataclasses.replace(config(tmp_path), downlink_resend_s=0.2)
    broker = FakeBroker()
    ingest = Ingest(cfg, store, CENTRE_KEY, client_factory=broker.factory)
    async with running(ingest):
        await wait_until(lambda: ingest.metrics.connected)
        client = broker.clients[-1]
        eid = await acked_alarm(store, 1)
        ingest.kick()
        await wait_until(lambda: acks_published(broker) == [eid])
        # Not heard since the centre started: the gateway may be away, so nothing piles up
        # in its session; the ack goes again when the gateway is heard.
        await asyncio.sleep(3 * cfg.downlink_resend_s)
        assert acks_published(broker) == [eid]
        # The confirmation a gateway sends on connecting names nothing: it is there now.
        client.deliver(*signed_conf(GW_KEY, "gw-1"))
        await wait_until(lambda: acks_published(broker) == [eid] * 2)
        client.deliver(*signed_heartbeat(GW_KEY, "gw-1", ts=5))
        await wait_until(lambda: acks_published(broker) == [eid] * 3)
        # Heard, so online: again every downlink_resend_s, until confirmed.
        await wait_until(lambda: len(acks_published(broker)) >= 5)
        assert ingest.metrics.counts["downlinks_resent"] >= 4
        client.deliver(*signed_conf(GW_KEY, "gw-1", acks=[(eid, "acked")]))
        await wait_until(lambda: ingest.metrics.counts["downlinks_confirmed"] == 1)
        count = len(acks_published(broker))
        await asyncio.sleep(3 * cfg.downlink_resend_s)
        assert len(acks_published(broker)) <= count + 1  # one may have been on its way
    assert await store.count_downlinks() == 0


async def test_a_confirmation_is_checked_like_any_gateway_message(
    tmp_path: Path, store: Store
) -> None:
    other = Ed25519PrivateKey.generate()
    await store.upsert_gateway("gw-2", public_hex(other), 1)
    eid = await acked_alarm(store, 4)
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, Metrics(), clock=lambda: 42_000)
    topic, forged = signed_conf(other, "gw-1", acks=[(eid, "acked")])
    assert await ingest.handle(topic, forged) == []
    # gw-2 cannot confirm what was sent to gw-1, nor speak for it.
    await ingest.handle(*signed_conf(other, "gw-2", acks=[(eid, "acked")]))
    body = {"gw": "gw-1", "ts": 1, "acks": [[eid, "acked"]], "bc": []}
    topic2 = "ok/v1/gw/gw-2/up/conf"
    await ingest.handle(topic2, sign_frame(other, topic2, encode_json(body)))
    for bad in (
        {"gw": "gw-1", "ts": 1, "acks": [[eid, "acked"]]},
        {"gw": "gw-1", "ts": 1, "acks": [[eid, "lost"]], "bc": []},
        {"gw": "gw-1", "ts": 1, "acks": [[eid]], "bc": []},
        {"gw": "gw-1", "ts": 1, "acks": [], "bc": ["has space"]},
        {"gw": "gw-1", "ts": 1, "acks": [], "bc": ["b"] * 201},
        {"gw": "gw-1", "ts": "1", "acks": [], "bc": []},
    ):
        t = "ok/v1/gw/gw-1/up/conf"
        await ingest.handle(t, sign_frame(GW_KEY, t, encode_json(bad)))
    assert dict(ingest.metrics.rejected) == {
        "bad_signature": 1, "bad_field": 7, "topic_mismatch": 1,
    }
    assert await store.count_downlinks() == 1
    await ingest.handle(*signed_conf(GW_KEY, "gw-1", acks=[(eid, "acked")]))
    assert await store.count_downlinks() == 0


async def test_a_silent_gateway_is_reported_once_and_again_when_heard(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    now = [10_000_000]
    cfg = config(tmp_path)
    ingest = Ingest(cfg, store, CENTRE_KEY, clock=lambda: now[0])
    await ingest.handle(*signed_heartbeat(GW_KEY, "gw-1", ts=1))
    task = asyncio.create_task(ingest.watch_gateways(period_s=0.01))
    try:
        with caplog.at_level("INFO", logger="onekey.centre.ingest"):
            await asyncio.sleep(0.05)
            assert ingest.metrics.gateways_offline == 0
            now[0] += int(cfg.gateway_timeout_s * 1000) + 1
            await wait_until(lambda: ingest.metrics.gateways_offline == 1)
            await asyncio.sleep(0.05)
            await ingest.handle(*signed_heartbeat(GW_KEY, "gw-1", ts=2))
            await wait_until(lambda: ingest.metrics.gateways_offline == 0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    events = [r.getMessage().split()[0] for r in caplog.records if "gateway_" in r.getMessage()]
    assert events == ["event=gateway_silent", "event=gateway_heard"]
    assert ingest.metrics.counts["gateway_silent"] == 1
