"""The centre store on a real SQLite file: dedupe, cancels in either order, filters, acks."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from centre.store import (
    SCHEMA_VERSION,
    Event,
    NewEvent,
    NotFound,
    NotOpen,
    Store,
    StoreError,
    insert_events,
)


def ev(counter: int, kind: str = "alarm", *, device: str = "btn-1", gw: str = "gw-1",
       village: str = "v-1", ref: int | None = None) -> NewEvent:
    return NewEvent(
        id=f"{gw}:{device}:{counter}",
        gw=gw,
        seq=counter,
        kind=kind,
        device=device,
        counter=counter,
        village=village,
        household="h-1",
        gw_ts=1_000 + counter,
        ref=None if ref is None else f"{gw}:{device}:{ref}",
    )


def downlink(e: Event) -> tuple[str, bytes]:
    return f"ok/v1/gw/{e.gw}/down/ack", f"acked {e.id} {e.acked_by}".encode()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "centre.db") as s:
        yield s


async def test_schema_is_created_with_wal_and_a_version(tmp_path: Path) -> None:
    path = tmp_path / "centre.db"
    async with Store(path):
        pass
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()
    async with Store(path) as again:  # reopening migrates nothing and keeps data
        assert await again.list_events() == []


async def test_a_database_from_a_newer_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "centre.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        await Store(path).open()


async def test_duplicate_returns_the_stored_row_and_changes_nothing(store: Store) -> None:
    first = await store.insert_event(ev(7), now_ms=5_000)
    assert first.created and first.event.state == "open" and first.event.received_at == 5_000
    again = await store.insert_event(ev(7), now_ms=9_000)
    assert not again.created
    assert again.event == first.event
    assert len(await store.list_events()) == 1


async def test_cancel_after_alarm_marks_it_cancelled_and_keeps_both(store: Store) -> None:
    await store.insert_event(ev(1), now_ms=100)
    cancel = await store.insert_event(ev(2, "cancel", ref=1), now_ms=200)
    assert cancel.created and cancel.event.state == "cancel" and cancel.event.ref == "gw-1:btn-1:1"
    alarm = await store.get_event("gw-1:btn-1:1")
    assert alarm is not None and alarm.state == "cancelled" and alarm.cancelled_at == 200
    assert {e.id for e in await store.list_events()} == {"gw-1:btn-1:1", "gw-1:btn-1:2"}


async def test_cancel_before_alarm_is_applied_when_the_alarm_arrives(store: Store) -> None:
    await store.insert_event(ev(2, "cancel", ref=1), now_ms=200)
    alarm = await store.insert_event(ev(1), now_ms=300)
    assert alarm.created and alarm.event.state == "cancelled" and alarm.event.cancelled_at == 200


async def test_one_batch_gives_what_the_same_events_one_by_one_give(
    store: Store, tmp_path: Path
) -> None:
    # Alarm 1 then its cancel; cancel 4 before its alarm 3; a test; repeats inside the batch
    # and of an event stored before.
    await store.insert_event(ev(9), now_ms=50)
    batch = [ev(1), ev(2, "cancel", ref=1), ev(4, "cancel", ref=3), ev(3), ev(5, "test"),
             ev(1), ev(9)]
    async with store.transaction() as db:
        results = await insert_events(db, batch, 100)
    assert [r.created for r in results] == [True, True, True, True, True, False, False]
    assert results[5].event == results[0].event and results[6].event.received_at == 50
    async with Store(tmp_path / "one-by-one.db") as other:
        await other.insert_event(ev(9), now_ms=50)
        for e in batch:
            await other.insert_event(e, now_ms=100)
        assert await other.list_events(limit=100) == await store.list_events(limit=100)
    states = {e.id.rsplit(":", 1)[1]: (e.state, e.cancelled_at) for e in await store.list_events()}
    assert states == {
        "1": ("cancelled", 100), "2": ("cancel", None), "3": ("cancelled", 100),
        "4": ("cancel", None), "5": ("test", None), "9": ("open", None),
    }


async def test_cancel_of_an_acked_alarm_leaves_it_to_staff_with_cancelled_at(
    store: Store,
) -> None:
    # Staff took charge (someone may be on the way): the cancel does not close the alarm.
    await store.insert_event(ev(1), now_ms=100)
    await store.ack_event("gw-1:btn-1:1", "Li", "on the way", 150, downlink)
    await store.insert_event(ev(2, "cancel", ref=1), now_ms=200)
    alarm = await store.get_event("gw-1:btn-1:1")
    assert alarm is not None
    assert (alarm.state, alarm.acked_by, alarm.cancelled_at) == ("acked", "Li", 200)
    assert [e.id for e in await store.list_events(active=True)] == ["gw-1:btn-1:1"]


async def test_a_cancel_never_touches_a_test(store: Store) -> None:
    await store.insert_event(ev(1, "test"), now_ms=100)
    await store.insert_event(ev(2, "cancel", ref=1), now_ms=200)
    test = await store.get_event("gw-1:btn-1:1")
    assert test is not None and test.state == "test" and test.cancelled_at is None


async def test_filters_and_newest_first(store: Store) -> None:
    await store.insert_event(ev(1, village="v-1"), now_ms=100)
    await store.insert_event(ev(2, "test", village="v-1"), now_ms=200)
    await store.insert_event(ev(3, village="v-2", device="btn-2"), now_ms=300)
    await store.insert_event(ev(4, village="v-2", gw="gw-2"), now_ms=400)
    await store.ack_event("gw-1:btn-2:3", "Li", "", 350, downlink)

    ids = [e.id for e in await store.list_events()]
    assert ids == ["gw-2:btn-1:4", "gw-1:btn-2:3", "gw-1:btn-1:2", "gw-1:btn-1:1"]
    assert [e.id for e in await store.list_events(state="open")] == [
        "gw-2:btn-1:4", "gw-1:btn-1:1"
    ]
    assert [e.id for e in await store.list_events(village="v-1", kind="alarm")] == [
        "gw-1:btn-1:1"
    ]
    assert [e.id for e in await store.list_events(kind="test")] == ["gw-1:btn-1:2"]
    assert [e.id for e in await store.list_events(gw="gw-2")] == ["gw-2:btn-1:4"]
    assert [e.id for e in await store.list_events(since=300)] == ["gw-2:btn-1:4", "gw-1:btn-2:3"]
    assert len(await store.list_events(limit=2)) == 2


async def test_ack_is_stored_with_its_downlink_and_is_idempotent(store: Store) -> None:
    await store.insert_event(ev(1), now_ms=100)
    first = await store.ack_event("gw-1:btn-1:1", "Wang", "doctor sent", 500, downlink)
    assert first.changed
    assert (first.event.state, first.event.acked_by, first.event.acked_note) == (
        "acked", "Wang", "doctor sent"
    )
    assert first.event.acked_at == 500
    pending = await store.pending_downlinks()
    assert len(pending) == 1 and pending[0].payload == b"acked gw-1:btn-1:1 Wang"
    assert pending[0].topic == "ok/v1/gw/gw-1/down/ack" and pending[0].state == "acked"

    again = await store.ack_event("gw-1:btn-1:1", "Zhao", "other", 900, downlink)
    assert not again.changed and again.downlink is None
    assert again.event == first.event
    assert await store.count_downlinks() == 1

    await store.delete_downlink(pending[0].id)
    assert await store.pending_downlinks() == []


async def test_ack_refuses_unknown_ids_tests_and_cancelled_alarms(store: Store) -> None:
    await store.insert_event(ev(1, "test"), now_ms=100)
    await store.insert_event(ev(2), now_ms=100)
    await store.insert_event(ev(3, "cancel", ref=2), now_ms=200)
    with pytest.raises(NotFound):
        await store.ack_event("gw-1:btn-1:99", "Li", "", 1, downlink)
    for eid in ("gw-1:btn-1:1", "gw-1:btn-1:2", "gw-1:btn-1:3"):
        with pytest.raises(NotOpen):
            await store.ack_event(eid, "Li", "", 1, downlink)
    assert await store.count_downlinks() == 0


async def test_pending_downlinks_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "centre.db"
    async with Store(path) as s:
        await s.insert_event(ev(1), now_ms=100)
        await s.ack_event("gw-1:btn-1:1", "Li", "", 200, downlink)
    async with Store(path) as s:
        pending = await s.pending_downlinks()
        assert [d.event_id for d in pending] == ["gw-1:btn-1:1"]


async def test_gateways_enrol_rotate_and_heartbeat(store: Store) -> None:
    g = await store.upsert_gateway("gw-1", "aa" * 32, 100, name="Xiaocun")
    assert (g.id, g.public_key, g.name, g.last_seen) == ("gw-1", "aa" * 32, "Xiaocun", None)
    g = await store.upsert_gateway("gw-1", "bb" * 32, 200)
    assert (g.public_key, g.name, g.enrolled_at) == ("bb" * 32, "Xiaocun", 200)
    assert await store.record_heartbeat("gw-1", ts=10, outbox=3, devices=5, now_ms=300)
    assert not await store.record_heartbeat("gw-1", ts=10, outbox=0, devices=5, now_ms=400)
    assert not await store.record_heartbeat("gw-9", ts=11, outbox=0, devices=5, now_ms=400)
    g2 = await store.get_gateway("gw-1")
    assert g2 is not None and (g2.last_seen, g2.outbox, g2.devices) == (300, 3, 5)
    assert [x.id for x in await store.list_gateways()] == ["gw-1"]
    assert await store.get_gateway("gw-9") is None
