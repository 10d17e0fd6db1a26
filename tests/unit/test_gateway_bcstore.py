"""The gateway's broadcast deliveries (gateway/bcstore.py) on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.bcstore import BroadcastStore
from gateway.store import Store
from protocol.broadcast import Area, Broadcast


def broadcast(bc_id: str) -> Broadcast:
    return Broadcast(
        id=bc_id, gw="gw-1", sender="centre:li", sent=1_000, status="Actual", msg_type="Alert",
        references=(), urgency="Expected", severity="Severe", certainty="Likely", start=None,
        expires=10**13, areas=(Area("v-1"),), language="zh-CN", text="test", clip=None, repeat=1,
    )


@pytest.fixture
async def bcs(tmp_path: Path) -> AsyncIterator[BroadcastStore]:
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        b = BroadcastStore(store)
        await b.init()
        yield b
    finally:
        await store.close()


async def test_a_copy_not_yet_sent_is_not_reported_until_it_is_queued_or_offline(
    bcs: BroadcastStore,
) -> None:
    # `pending` is the gateway's own word for "stored, not yet sent": not a §8.3 state, which
    # the centre would refuse with the whole batch.
    assert await bcs.accept(broadcast("bc-1"), ["spk-1", "spk-2"], {"spk-2"}, 5)
    assert [(r.device, r.state) for r in await bcs.unreported(100)] == [("spk-2", "offline")]
    await bcs.mark_sent([("bc-1", "spk-1")], 6)
    got = sorted((r.device, r.state) for r in await bcs.unreported(100))
    assert got == [("spk-1", "queued"), ("spk-2", "offline")]
