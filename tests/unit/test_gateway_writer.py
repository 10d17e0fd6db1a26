"""The gateway store's writer under faults (one operation's failure is its own), the exact
outbox depth it keeps, and the event counter window (§5.5), on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import pytest

from gateway.errors import StoreError
from gateway.store import EventRecord, InsertResult, Refused, Store

T = TypeVar("T")
BOUND_S = 5.0  # a write that hangs fails the test instead of hanging it


async def bounded(aw: Awaitable[T]) -> T:
    return await asyncio.wait_for(aw, BOUND_S)


def rec(device: str, counter: int, gw_ts: int = 1_000_000) -> EventRecord:
    return EventRecord(device, counter, "alarm", None, "v1", "h1", gw_ts, None, None)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "gw.db")
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def count_events(store: Store, device: str) -> int:
    rows = list(await store.db.execute_fetchall("SELECT COUNT(*) FROM events WHERE device=?", (device,)))
    return int(rows[0][0])


# -- one failing operation fails only itself (fault 7)


async def test_an_operation_that_raises_fails_alone_while_its_batch_commits(store: Store) -> None:
    async def bad(db: aiosqlite.Connection) -> None:
        # It writes, then raises something that is not an sqlite3.Error.
        await db.execute("INSERT INTO meta(name, value) VALUES ('half-done', 'x')")
        raise RuntimeError("a bug in one operation")

    commits = store.commits
    # Queued in one turn of the loop: one batch, one transaction.
    first = store.insert_event(rec("btn-1", 1))
    broken = store.submit(bad)
    second = store.insert_event(rec("btn-1", 2))
    results = await bounded(asyncio.gather(first, broken, second, return_exceptions=True))
    assert isinstance(results[0], InsertResult) and results[0].new
    assert isinstance(results[2], InsertResult) and results[2].new
    err = results[1]
    assert isinstance(err, StoreError) and isinstance(err.__cause__, RuntimeError)
    assert "a bug in one operation" in str(err)
    assert store.commits == commits + 1  # the batch committed once, without the bad one
    assert await count_events(store, "btn-1") == 2
    rows = list(await store.db.execute_fetchall("SELECT 1 FROM meta WHERE name='half-done'"))
    assert rows == []  # what the failing operation wrote was rolled back
    assert store.failed_ops == 1
    # And the writer is still alive.
    later = await bounded(store.insert_event(rec("btn-1", 3)))
    assert isinstance(later, InsertResult) and later.new


async def test_an_sqlite_error_in_one_operation_fails_only_that_operation(store: Store) -> None:
    async def bad(db: aiosqlite.Connection) -> None:
        await db.execute("INSERT INTO no_such_table VALUES (1)")

    ok = store.insert_event(rec("btn-1", 1))
    broken = store.submit(bad)
    results = await bounded(asyncio.gather(ok, broken, return_exceptions=True))
    assert isinstance(results[0], InsertResult)
    assert isinstance(results[1], StoreError)
    assert isinstance(results[1].__cause__, sqlite3.OperationalError)
    assert await count_events(store, "btn-1") == 1


async def test_a_listener_that_raises_does_not_stop_later_writes(store: Store) -> None:
    calls: list[int] = []

    def bad_listener() -> None:
        calls.append(1)
        raise ValueError("a listener's own bug")

    store.stored_listeners.append(bad_listener)
    store.stored_listeners.append(lambda: calls.append(2))
    for counter in range(1, 4):
        res = await bounded(store.insert_event(rec("btn-1", counter)))
        assert isinstance(res, InsertResult) and res.new
    assert calls.count(1) == 3 and calls.count(2) == 3  # the next listener still runs
    assert await count_events(store, "btn-1") == 3


async def test_the_writer_is_restarted_if_it_ever_fails(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store._commit
    failures = [RuntimeError("the writer itself broke")]

    async def commit_once_broken(batch: list[Any]) -> bool:
        if failures:
            raise failures.pop()
        return await real(batch)

    monkeypatch.setattr(store, "_commit", commit_once_broken)
    with pytest.raises(StoreError, match="the writer itself broke"):
        await bounded(store.insert_event(rec("btn-1", 1)))
    res = await bounded(store.insert_event(rec("btn-1", 1)))
    assert isinstance(res, InsertResult) and res.new
    assert store.writer_restarts == 1


# -- the outbox depth, exact on every commit (fault 10)


async def test_outbox_count_follows_every_commit(store: Store) -> None:
    assert store.outbox_count == 0
    for counter in range(1, 6):
        await bounded(store.insert_event(rec("btn-1", counter)))
    assert store.outbox_count == 5
    await bounded(store.insert_event(rec("btn-1", 3)))  # a duplicate adds nothing
    assert store.outbox_count == 5
    assert await store.advance_state("btn-1", 1, "received")
    assert await store.advance_state("btn-1", 2, "acked")  # straight from stored
    assert await store.advance_state("btn-1", 1, "acked")  # received -> acked: not the outbox
    assert not await store.advance_state("btn-1", 2, "received")
    assert store.outbox_count == 3 == await store.outbox_depth()

    async def bad(db: aiosqlite.Connection) -> None:
        await db.execute("UPDATE events SET state='received' WHERE counter=4")
        raise RuntimeError("rolled back")

    async def insert_then_fail(db: aiosqlite.Connection) -> None:
        raise RuntimeError("nothing")

    await bounded(asyncio.gather(store.submit(bad), store.submit(insert_then_fail), return_exceptions=True))
    assert store.outbox_count == 3 == await store.outbox_depth()


async def test_outbox_count_is_read_at_start(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    first = Store(path)
    await first.start()
    for counter in range(1, 4):
        await first.insert_event(rec("btn-1", counter))
    await first.close()
    again = Store(path)
    await again.start()
    try:
        assert again.outbox_count == 3
    finally:
        await again.close()


# -- the event counter window (§5.5, fault 5)


async def test_an_event_far_below_the_high_water_mark_is_refused_as_replay(store: Store) -> None:
    await store.insert_event(rec("btn-1", 1))
    await store.insert_event(rec("btn-1", 100))
    res = await store.insert_event(rec("btn-1", 20, gw_ts=1_000_500))
    assert isinstance(res, Refused) and res.reason == "replay"
    assert "80 below" in res.detail
    assert await count_events(store, "btn-1") == 2
    # Other devices have their own high-water mark.
    other = await store.insert_event(rec("btn-2", 20))
    assert isinstance(other, InsertResult) and other.new


async def test_a_late_event_is_taken_only_within_the_reorder_window(store: Store) -> None:
    t0 = 5_000_000
    await store.insert_event(rec("btn-1", 70, gw_ts=t0))
    late = await store.insert_event(rec("btn-1", 66, gw_ts=t0 + 1_000))
    assert isinstance(late, InsertResult) and late.new
    # The high-water event was stored more than 120 s ago: the window has closed.
    stale = await store.insert_event(rec("btn-1", 65, gw_ts=t0 + 121_000))
    assert isinstance(stale, Refused) and stale.reason == "replay"


async def test_a_copy_of_a_stored_event_is_a_duplicate_however_old(store: Store) -> None:
    first = await store.insert_event(rec("btn-1", 1, gw_ts=0))
    assert isinstance(first, InsertResult)
    await store.advance_state("btn-1", 1, "acked", acked_by="Li")
    await store.insert_event(rec("btn-1", 500, gw_ts=1_000))
    again = await store.insert_event(rec("btn-1", 1, gw_ts=10_000_000))
    assert isinstance(again, InsertResult)
    assert (again.new, again.seq, again.state, again.acked_by) == (False, first.seq, "acked", "Li")


async def test_a_restart_does_not_reopen_the_window(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    first = Store(path)
    await first.start()
    await first.insert_event(rec("btn-1", 100, gw_ts=1_000_000))
    await first.close()
    again = Store(path)
    await again.start()
    try:
        res = await again.insert_event(rec("btn-1", 99, gw_ts=1_000_000 + 600_000))
        assert isinstance(res, Refused) and res.reason == "replay"
    finally:
        await again.close()
