"""The gateway's downlink counter (§4.2): reserved in blocks in the store, so that it never goes
backwards, across restarts and whatever the clock does."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.store import DOWNLINK_COUNTER, Store
from gateway.village import COUNTER_BLOCK, AckCounter

T0 = 1_800_000_000_000  # a clock that ran ahead: some time in 2027


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def settle(store: Store) -> None:
    """Wait until every write queued so far has committed."""
    await store.put_meta_int("settle", 0)


async def test_counter_keeps_rising_when_the_clock_is_set_back_and_the_gateway_restarts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.db"
    clock = Clock(T0)
    store = Store(path)
    await store.start()
    counter = AckCounter(store, clock)
    await counter.start()
    issued = [counter.next() for _ in range(3)]
    assert issued[0] >= T0 and issued == sorted(set(issued))
    await store.close()

    clock.now = T0 - 86_400_000  # corrected by a day, then the gateway restarts
    store = Store(path)
    await store.start()
    try:
        again = AckCounter(store, clock)
        await again.start()
        assert again.next() > issued[-1]
    finally:
        await store.close()


async def test_counter_rises_within_a_run_when_the_clock_goes_back(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        counter = AckCounter(store, clock)
        await counter.start()
        first = counter.next()
        clock.now -= 60_000
        assert counter.next() == first + 1
        clock.now = T0 + 10
        assert counter.next() == T0 + 10  # follows the clock again once it is ahead
    finally:
        await store.close()


async def test_no_counter_is_used_beyond_the_reserved_block(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        counter = AckCounter(store, clock)
        await counter.start()
        for step in range(40):
            clock.now += COUNTER_BLOCK // 7
            value = counter.next()
            reserved = await store.get_meta_int(DOWNLINK_COUNTER)
            assert reserved is not None and value <= reserved, step
            await settle(store)
        # A clock that leaps far ahead is followed only once a block covering it is committed.
        clock.now += 100 * COUNTER_BLOCK
        before = await store.get_meta_int(DOWNLINK_COUNTER)
        leap = counter.next()
        assert before is not None and leap <= before
        await settle(store)
        assert counter.next() == clock.now
    finally:
        await store.close()


async def test_counter_refuses_to_count_before_it_is_started(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        with pytest.raises(StoreError, match="not started"):
            AckCounter(store).next()
    finally:
        await store.close()
