"""The gateway store on a real SQLite file: group commit, deduplication, state order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway import registry
from gateway.errors import StoreFullError
from gateway.store import EventRecord, InsertResult, Store, StoreHealth


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def rec(device: str, counter: int, kind: str = "alarm") -> EventRecord:
    return EventRecord(device, counter, kind, None, "v1", "h1", 1000 + counter, None, None)


async def test_burst_is_committed_in_few_transactions(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        futs = [store.insert_event(rec(f"btn-{i % 50}", i)) for i in range(1, 501)]
        results = await asyncio.gather(*futs)
        assert all(r.new for r in results)
        assert [r.seq for r in results] == sorted(r.seq for r in results)
        assert store.committed_ops == 500
        assert store.commits < 50, store.commits
        assert await store.outbox_depth() == 500
    finally:
        await store.close()


async def test_duplicate_returns_current_state_and_stores_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        first = await store.insert_event(rec("btn-1", 5))
        assert await store.advance_state("btn-1", 5, "received")
        again = await store.insert_event(rec("btn-1", 5))
        assert not again.new and again.seq == first.seq and again.state == "received"
        assert await store.outbox_depth() == 0
    finally:
        await store.close()


async def test_state_only_moves_forward(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        await store.insert_event(rec("btn-1", 1))
        assert await store.advance_state("btn-1", 1, "acked", acked_by="Li")
        assert not await store.advance_state("btn-1", 1, "received")
        ev = await store.get_event("btn-1", 1)
        assert ev is not None and ev.state == "acked" and ev.acked_by == "Li"
    finally:
        await store.close()


async def test_events_survive_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    store = Store(path)
    await store.start()
    for i in range(1, 11):
        await store.insert_event(rec("btn-1", i))
    await store.close()
    store = Store(path)
    await store.start()
    try:
        out = await store.outbox(0, 100)
        assert [e.record.counter for e in out] == list(range(1, 11))
        assert [e.record.counter for e in await store.outbox(out[4].seq, 3)] == [6, 7, 8]
    finally:
        await store.close()


async def test_registry_changes_reach_a_running_view(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    store = Store(path)
    await store.start()
    try:
        view = registry.Registry()
        await view.reload(store)
        assert view.key_for("btn-9") is None
        conn = registry.open_admin(path)
        dev = registry.add_device(conn, "btn-9", role="button", village="v1", household="h9")
        assert await view.reload(store)
        assert view.key_for("btn-9") == dev.key
        registry.revoke_device(conn, "btn-9")
        conn.close()
        assert await view.reload(store)
        assert view.key_for("btn-9") is None
    finally:
        await store.close()


async def test_the_outbox_shows_an_event_only_once_its_transaction_has_committed(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        release = asyncio.Event()

        async def hold(db: object) -> None:
            await release.wait()  # keeps the group's transaction open

        stored = store.insert_event(rec("btn-1", 1))
        held = store.submit(hold)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)  # the writer has inserted and waits inside the transaction
        assert not stored.done()
        assert await store.outbox(0, 10) == []  # not forwarded before it is durable
        release.set()
        await stored
        await held
        assert [ev.record.counter for ev in await store.outbox(0, 10)] == [1]
    finally:
        await store.close()


async def test_a_full_disk_fails_writes_as_store_full_and_writes_resume_when_space_returns(
    tmp_path: Path,
) -> None:
    latencies: list[float] = []
    store = Store(tmp_path / "gw.db", observe_commit=latencies.append)
    await store.start()
    changes: list[StoreHealth] = []
    store.health_listeners.append(lambda: changes.append(store.health))
    try:
        await store.insert_event(rec("btn-1", 1))
        assert len(latencies) == 1 and latencies[0] > 0
        # SQLite answers SQLITE_FULL once the file may not grow, as on a full disk.
        pages = (await store.db.execute_fetchall("PRAGMA page_count"))[0][0]
        await store.db.execute(f"PRAGMA max_page_count = {pages}")
        counter = 1
        with pytest.raises(StoreFullError, match=r"disk holding .* is full"):
            for counter in range(2, 5000):
                await store.insert_event(rec("btn-1", counter))
        # The failed operation's caller hears first; the batch ends a moment later.
        await wait_for(lambda: store.health == StoreHealth(ok=False, full=True, failed=1))
        with pytest.raises(StoreFullError):
            await store.insert_event(rec("btn-1", counter))
        await wait_for(lambda: store.health.failed == 2)
        assert changes == [StoreHealth(ok=False, full=True, failed=1)]  # told once
        # Space is freed: the same event is stored, and the store says so.
        await store.db.execute("PRAGMA max_page_count = 1000000")
        result = await store.insert_event(rec("btn-1", counter))
        assert isinstance(result, InsertResult) and result.new
        assert store.health == StoreHealth() and changes[-1] == StoreHealth()
        assert store.free_bytes() > 0
    finally:
        await store.close()
