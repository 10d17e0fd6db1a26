"""The village side without a broker: PUBACKs only after commit and in arrival order, and the
answer to a heartbeat's `ev` list (§4.3). A fake MQTT client records what the gateway sends."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from device_fw import okproto
from gateway.config import GatewayConfig
from gateway.errors import StoreFullError
from gateway.metrics import Metrics
from gateway.registry import Device, Registry
from gateway.store import Store
from gateway.village import MAX_WRITE_ATTEMPTS, VillageSide
from transport.mqtt import Message, MqttClient
from transport.pubacks import PubackOrder

KEY = bytes(range(32))
DEV = "btn-1"


class FakeClient:
    """What VillageSide uses of MqttClient: publish_nowait and ack."""

    def __init__(self, db_path: Path | None = None) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.acked: list[int] = []
        self.stored_when_acked: list[list[int]] = []
        self.db_path = db_path

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1) -> asyncio.Future[None]:
        self.published.append((topic, payload))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def ack(self, msg: Message) -> None:
        self.acked.append(msg.mid)
        if self.db_path is not None:
            # What another reader of the file sees, committed, at the moment of the PUBACK.
            conn = sqlite3.connect(self.db_path)
            try:
                rows = conn.execute("SELECT counter FROM events ORDER BY seq").fetchall()
            finally:
                conn.close()
            self.stored_when_acked.append([int(r[0]) for r in rows])

    def acks_to_device(self) -> list[tuple[int, str, str | None]]:
        out = []
        for topic, payload in self.published:
            body = okproto.open_down(KEY, DEV, topic, payload)
            out.append((int(body["ref"]), str(body["s"]), body.get("by")))
        return out


@pytest.fixture
async def village(tmp_path: Path) -> AsyncIterator[VillageSide]:
    store = Store(tmp_path / "gw.db")
    await store.start()
    reg = Registry()
    reg.devices[DEV] = Device(DEV, KEY, "button", "v1", "h1", True)
    side = VillageSide(cast(GatewayConfig, None), store, reg, Metrics())
    await side.init()
    try:
        yield side
    finally:
        await store.close()


def up(kind: str, counter: int, mid: int, **fields: Any) -> Message:
    topic, payload = okproto.encode_up(KEY, DEV, kind, counter, fields)
    return Message(topic, payload, 1, False, mid=mid, conn=1)


def hb_with_ev(counter: int, ev: list[list[object]], mid: int) -> Message:
    # §4.3: the heartbeat body with its `ev` list, framed as the firmware frames it.
    topic = okproto.topic_up(DEV, "hb")
    body = json.dumps(
        {"t": "hb", "d": DEV, "c": counter, "bat": 80, "ev": ev}, separators=(",", ":")
    ).encode()
    return Message(topic, okproto.frame(KEY, topic, body), 1, False, mid=mid, conn=1)


async def wait_until(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_messages_are_acknowledged_after_commit_and_in_arrival_order(
    village: VillageSide,
) -> None:
    client = FakeClient(village.store.path)
    village.client = cast(MqttClient, client)
    order = PubackOrder(cast(MqttClient, client), lambda: None)
    msgs = [
        up("alarm", 1, mid=11),
        Message(okproto.topic_up(DEV, "alarm"), b"not a frame", 1, False, mid=12, conn=1),
        up("alarm", 2, mid=13),
        up("test", 3, mid=14),
    ]
    for msg in msgs:
        order.add(msg, await village.handle(msg))
    # Nothing is committed yet (the writer has not had a turn), so nothing is acknowledged:
    # not even the bad frame, which must wait for the message before it.
    assert client.acked == []
    await wait_until(lambda: len(client.acked) == 4)
    assert client.acked == [11, 12, 13, 14]
    # Each PUBACK went out only once its event was committed.
    assert client.stored_when_acked[0][:1] == [1]
    assert client.stored_when_acked[2][:2] == [1, 2]
    assert client.stored_when_acked[3] == [1, 2, 3]
    assert [(ref, s) for ref, s, _by in client.acks_to_device()] == [
        (1, "stored"), (2, "stored"), (3, "stored"),
    ]


async def test_a_message_not_committed_stops_the_acks_and_resets_the_link() -> None:
    client = FakeClient()
    resets: list[int] = []
    order = PubackOrder(cast(MqttClient, client), lambda: resets.append(1))
    loop = asyncio.get_running_loop()
    done = [loop.create_future() for _ in range(3)]
    for i, fut in enumerate(done):
        order.add(Message("t", b"", 1, False, mid=i + 1, conn=1), fut)
    order.add(Message("t", b"", 0, False, mid=0, conn=1), None)  # QoS 0: nothing to ack
    done[2].set_result(True)
    done[0].set_result(True)
    await asyncio.sleep(0)
    assert client.acked == [1]
    done[1].set_result(False)  # not committed: the broker must send 2 and 3 again
    await asyncio.sleep(0)
    assert client.acked == [1] and resets == [1]


async def test_a_heartbeat_ev_list_is_answered_with_the_states_ahead_of_the_device(
    village: VillageSide,
) -> None:
    store = village.store
    for c in (1, 2, 3, 4):
        await store.insert_event(village._record(_accepted(village, c)))
    await store.advance_state(DEV, 1, "received")
    await store.advance_state(DEV, 3, "acked", acked_by="Li Wei")
    await store.advance_state(DEV, 4, "received")
    client = FakeClient()
    village.client = cast(MqttClient, client)
    ev: list[list[object]] = [
        [1, "stored"],  # the gateway has received: tell it
        [2, "stored"],  # the same state: nothing to say
        [3, "sending"],  # acked, by whom
        [4, "received"],  # the same
        [9, "sending"],  # never stored here: the device sends it again itself
    ]
    done = await village.handle(hb_with_ev(10, ev, mid=21))
    assert done is not None and await asyncio.wait_for(done, 5)
    assert client.acks_to_device() == [(1, "received", None), (3, "acked", "Li Wei")]
    assert village.metrics.counts["sync_acks"] == 2


def _accepted(village: VillageSide, counter: int) -> Any:
    from gateway import intake

    return intake.Accepted(village.registry.devices[DEV], "alarm", counter, {"c": counter})


async def test_a_message_is_never_acknowledged_while_the_disk_is_full(
    village: VillageSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every write fails as on a full disk: however often the broker sends the alarm again, it
    # is neither PUBACKed (it stays with the broker) nor answered `stored` (the device keeps it).
    def full(_rec: Any, **_kw: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_exception(StoreFullError("write failed; the disk is full"))
        return fut

    with monkeypatch.context() as m:
        m.setattr(village.store, "insert_event", full)
        client = FakeClient()
        village.client = cast(MqttClient, client)
        for attempt in range(MAX_WRITE_ATTEMPTS + 3):
            done = await village.handle(up("alarm", 5, mid=30 + attempt))
            assert done is not None and await asyncio.wait_for(done, 5) is False
        assert client.acks_to_device() == []
        assert village.metrics.counts["store_gave_up"] == 0
    # Space is back: the next copy is stored and answered.
    done = await village.handle(up("alarm", 5, mid=40))
    assert done is not None and await asyncio.wait_for(done, 5) is True
    assert client.acks_to_device() == [(5, "stored", None)]
