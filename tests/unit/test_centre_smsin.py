"""Alarms by SMS at the centre (centre/smsin.py, protocol §10), gateway SMS reports on the
timeline (§11.4) and the contact-list push (centre/contactpush.py, §11), on a real SQLite file
with the ingest task's own checks (no broker)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from centre import contactpush, households, smsin
from centre.ingest import Ingest, Metrics
from centre.live import LiveHub
from centre.store import Store
from harness.fakegateway import event_body, signed_conf, signed_event
from modem import IncomingSms
from protocol import contacts, smsalarm, topics, uplink
from protocol.signed import encode_json, sign_frame, verify_frame
from tests.unit.test_centre_ingest import config
from transport.keys import public_hex

CENTRE_KEY = Ed25519PrivateKey.generate()
GW_KEY = Ed25519PrivateKey.generate()
FORGER = Ed25519PrivateKey.generate()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "centre.db") as s:
        await s.upsert_gateway("gw-1", public_hex(GW_KEY), 1, villages=["v-demo"])
        yield s


@pytest.fixture
def handler(store: Store) -> smsin.SmsIngest:
    return smsin.SmsIngest(store, Metrics(), LiveHub(), clock=lambda: 50_000)


def sms_of(body: dict[str, object], key: Ed25519PrivateKey = GW_KEY) -> IncomingSms:
    ev = uplink.parse_event(body, str(body["gw"]))
    return IncomingSms("+8613900000001", smsalarm.encode_sms(key, ev), None, 2)


async def test_sms_alarm_is_ingested_like_the_mqtt_copy_and_marked_on_its_timeline(
    handler: smsin.SmsIngest, store: Store, tmp_path: Path
) -> None:
    body = event_body("gw-1", "btn-1", 7, seq=3)
    assert await handler.handle_incoming(sms_of(body)) is True
    ev = await store.get_event("gw-1:btn-1:7")
    assert ev is not None and ev.state == "open" and ev.seq == 3 and ev.village == "v-demo"
    steps = [(s.kind, s.detail) for s in await store.timeline("gw-1:btn-1:7")]
    assert steps[0][0] == "received"
    assert steps[1] == ("arrived_by_sms", {"from": "+8613900000001", "parts": 2})
    assert handler.metrics.counts["sms_alarms"] == 1
    # The MQTT copy, when the line returns: a duplicate, answered `received` (the ack goes back
    # over MQTT then); nothing stored twice.
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, Metrics(), clock=lambda: 60_000)
    acks = await ingest.handle(*signed_event(GW_KEY, body))
    assert ingest.metrics.counts["duplicates"] == 1 and ingest.metrics.counts["events"] == 0
    (topic, payload), = acks
    assert verify_frame(CENTRE_KEY.public_key(), topic, payload)["s"] == "received"
    assert len(await store.list_events()) == 1


async def test_mqtt_copy_first_then_the_sms_copy_is_refused_as_replay(
    handler: smsin.SmsIngest, store: Store, tmp_path: Path
) -> None:
    body = event_body("gw-1", "btn-1", 8)
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, Metrics(), clock=lambda: 40_000)
    await ingest.handle(*signed_event(GW_KEY, body))
    assert await handler.handle_incoming(sms_of(body)) is True
    assert handler.metrics.rejected["sms_replay"] == 1
    assert [s.kind for s in await store.timeline("gw-1:btn-1:8")] == ["received"]


async def test_replayed_sms_alarm_is_refused_and_counted(handler: smsin.SmsIngest, store: Store) -> None:
    sms = sms_of(event_body("gw-1", "btn-1", 9))
    assert await handler.handle_incoming(sms) is True
    assert await handler.handle_incoming(sms) is True
    assert handler.metrics.rejected["sms_replay"] == 1
    assert len(await store.list_events()) == 1


async def test_forged_sms_alarm_is_refused_and_counted(handler: smsin.SmsIngest, store: Store) -> None:
    assert await handler.handle_incoming(sms_of(event_body("gw-1", "btn-1", 10), FORGER)) is True
    unknown = sms_of(event_body("gw-9", "btn-1", 10))
    assert await handler.handle_incoming(unknown) is True
    garbled = dataclasses.replace(unknown, text="OK1 A gw-1:btn-1:1 short")
    assert await handler.handle_incoming(garbled) is True
    assert handler.metrics.rejected["sms_bad_signature"] == 1
    assert handler.metrics.rejected["sms_unknown_gateway"] == 1
    assert handler.metrics.rejected["sms_malformed"] == 1
    assert await store.list_events() == []


async def test_a_contacts_reply_is_not_ours(handler: smsin.SmsIngest) -> None:
    assert await handler.handle_incoming(IncomingSms("13800138000", "1 收到，马上去", None, 1)) is False
    assert handler.metrics.counts["sms_in"] == 0


async def test_module_entry_point_uses_the_attached_handler(handler: smsin.SmsIngest, store: Store) -> None:
    reply = IncomingSms("13800138000", "收到", None, 1)
    smsin.attach(None)
    assert await smsin.handle_incoming(reply) is False
    smsin.attach(handler)
    try:
        assert await smsin.handle_incoming(sms_of(event_body("gw-1", "btn-1", 11))) is True
        assert await smsin.handle_incoming(reply) is False
    finally:
        smsin.attach(None)
    assert await store.get_event("gw-1:btn-1:11") is not None


async def test_gateway_sms_reports_show_once_on_the_alarm_timeline(store: Store, tmp_path: Path) -> None:
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, Metrics(), clock=lambda: 40_000)
    await ingest.handle(*signed_event(GW_KEY, event_body("gw-1", "btn-1", 12)))
    report = contacts.SmsReport("gw-1", "gw-1:btn-1:12", "leader", "13800138000", 39_000, 2)
    msg = contacts.signed_sms_report(GW_KEY, report)
    await ingest.handle(*msg)
    await ingest.handle(*msg)  # sent again (a PUBACK lost): once on the timeline
    steps = [(s.at, s.kind, s.detail) for s in await store.timeline("gw-1:btn-1:12")]
    assert steps[0] == (39_000, "gateway_sms", {"to": "leader", "number": "13800138000", "parts": 2,
                                                "gw": "gw-1"})
    assert [k for _, k, _ in steps].count("gateway_sms") == 1
    forged = contacts.signed_sms_report(FORGER, report)
    await ingest.handle(*forged)
    assert ingest.metrics.rejected["bad_signature"] == 1


# -- the contact list


async def card(store: Store, hid: str, group: str = "三组") -> None:
    body = households.HouseholdIn(
        village="v-demo", group=group, name="张三", address="三组 5 号",
        contacts=[households.ContactIn(kind="leader", name="李四", phone="13800138000"),
                  households.ContactIn(kind="grid", name="王五", phone="13900139000")],
    )
    async with store.transaction() as db:
        await households.save_cards(db, [households.card_from(hid, body, 1)])


async def pending_parts(store: Store) -> list[tuple[str, bytes]]:
    return [(d.event_id, d.payload) for d in await store.pending_downlinks() if d.state == "contacts"]


async def test_contact_list_is_pushed_signed_on_change_and_released_by_confirmation(
    store: Store, tmp_path: Path
) -> None:
    kicks: list[int] = []
    clock = iter(range(1000, 2000))
    push = contactpush.ContactPush(store, CENTRE_KEY, lambda: kicks.append(1), clock=lambda: next(clock))
    await card(store, "h-1")
    assert await push.refresh() == ["gw-1"] and kicks
    (_, payload), = await pending_parts(store)
    part = contacts.open_part(CENTRE_KEY.public_key(), "gw-1", topics.contacts("gw-1"), payload)
    assert [h.id for h in part.households] == ["h-1"] and part.households[0].local_alert
    assert [c.kind for c in part.households[0].contacts] == ["leader", "grid"]
    assert await push.refresh() == []  # nothing changed: no new version
    # A household refuses the local alert: a new, higher version replaces the pending one.
    async with store.transaction() as db:
        await contactpush.set_local_alert(db, "h-1", False)
    assert await push.refresh() == ["gw-1"]
    (_, payload2), = await pending_parts(store)
    part2 = contacts.open_part(CENTRE_KEY.public_key(), "gw-1", topics.contacts("gw-1"), payload2)
    assert part2.v > part.v and not part2.households[0].local_alert
    # The gateway confirms it (§6.6 `cl`): released.
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, Metrics(), clock=lambda: 5)
    topic = "ok/v1/gw/gw-1/up/conf"
    conf = {"gw": "gw-1", "ts": 5, "acks": [], "bc": [], "cl": [part2.v]}
    await ingest.handle(topic, sign_frame(GW_KEY, topic, encode_json(conf)))
    assert await pending_parts(store) == []


async def test_gateway_that_reconnects_with_an_older_list_gets_the_current_one(
    store: Store, tmp_path: Path
) -> None:
    clock = iter(range(1000, 2000))
    push = contactpush.ContactPush(store, CENTRE_KEY, lambda: None, clock=lambda: next(clock))
    await card(store, "h-1")
    await push.refresh()
    (_, payload), = await pending_parts(store)
    v = contacts.open_part(CENTRE_KEY.public_key(), "gw-1", topics.contacts("gw-1"), payload).v
    ingest = Ingest(config(tmp_path), store, CENTRE_KEY, Metrics(), clock=lambda: 5)
    topic = "ok/v1/gw/gw-1/up/conf"
    conf = {"gw": "gw-1", "ts": 5, "acks": [], "bc": [], "cl": [v]}
    await ingest.handle(topic, sign_frame(GW_KEY, topic, encode_json(conf)))
    assert await pending_parts(store) == []
    # Its database replaced by an old backup: it connects holding version 1.
    old = {"gw": "gw-1", "ts": 6, "acks": [], "bc": [], "cl": [1]}
    await ingest.handle(topic, sign_frame(GW_KEY, topic, encode_json(old)))
    assert await push.refresh() == ["gw-1"]
    assert len(await pending_parts(store)) == 1
    # An empty confirmation without `cl` still works as before.
    await ingest.handle(*signed_conf(GW_KEY, "gw-1"))
