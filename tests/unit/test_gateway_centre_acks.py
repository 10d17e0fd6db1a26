"""The gateway's handling of the centre's acks without a broker (gateway/forwarder.py): checked
in batches, committed in the store's group commit rather than one commit each, done in order,
relayed to the device, and an `acked` confirmed to the centre (§6.6) only once committed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import GatewayConfig
from gateway.forwarder import CentreSide
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store import EventRecord, Store
from gateway.village import VillageSide
from protocol.signed import encode_json, sign_frame, verify_frame
from transport.mqtt import Message, MqttClient

GW = "gw-1"
DEV = "btn-1"
CENTRE_KEY = Ed25519PrivateKey.generate()
GW_KEY = Ed25519PrivateKey.generate()
ACK_TOPIC = f"ok/v1/gw/{GW}/down/ack"


class Village:
    """What CentreSide uses of VillageSide: send_ack."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, str, str | None]] = []

    def send_ack(self, device: str, counter: int, state: str, by: str | None = None) -> None:
        self.sent.append((device, counter, state, by))


class Client:
    """What CentreSide uses of MqttClient to confirm: publish_nowait."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1) -> asyncio.Future[None]:
        self.published.append((topic, payload))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def confs(self) -> list[dict[str, Any]]:
        pub = GW_KEY.public_key()
        return [verify_frame(pub, t, p, 24 * 1024) for t, p in self.published if t.endswith("/conf")]


def ack(counter: int, state: str, *, key: Ed25519PrivateKey = CENTRE_KEY, mid: int = 0,
        **extra: Any) -> Message:
    body = {"id": f"{GW}:{DEV}:{counter}", "s": state, "at": 5, **extra}
    return Message(ACK_TOPIC, sign_frame(key, ACK_TOPIC, encode_json(body)), 1, False, mid=mid)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "gw.db")
    await s.start()
    try:
        for counter in range(1, 61):
            await s.insert_event(
                EventRecord(DEV, counter, "alarm", None, "v-1", "h-1", 1_000 + counter, None, None)
            )
        yield s
    finally:
        await s.close()


def centre_side(store: Store, village: Village) -> tuple[CentreSide, Client]:
    cfg = cast(GatewayConfig, SimpleNamespace(gateway_id=GW))
    side = CentreSide(
        cfg, store, Registry(), Metrics(), GW_KEY, CENTRE_KEY.public_key(),
        cast(VillageSide, village),
    )
    client = Client()
    side.client = cast(MqttClient, client)
    return side, client


async def test_a_burst_of_centre_acks_is_committed_together_and_done_in_order(
    store: Store,
) -> None:
    village = Village()
    side, client = centre_side(store, village)
    msgs = [ack(c, "received", mid=c) for c in range(1, 61)]
    msgs.append(ack(3, "acked", mid=61, by="Li", note="doctor"))
    msgs.append(ack(4, "acked", key=Ed25519PrivateKey.generate(), mid=62))  # forged
    msgs.append(ack(5, "lost", mid=63))  # not a state
    commits = store.commits
    finished: list[int] = []

    def note(mid: int) -> Callable[[object], None]:
        return lambda _f: finished.append(mid)

    dones = [side._on_ack(m) for m in msgs]  # as the message loop does: nothing awaited
    for m, done in zip(msgs, dones, strict=True):
        done.add_done_callback(note(m.mid))
    assert await asyncio.gather(*dones) == [True] * len(msgs)
    stored = [mid for mid in finished if mid <= 61]
    assert stored == sorted(stored)  # what went to the store is done in the order it came
    assert store.commits - commits <= 3
    assert village.sent == [(DEV, c, "received", None) for c in range(1, 61)] + [
        (DEV, 3, "acked", "Li")
    ]
    assert side.metrics.rejected["centre_bad_signature"] == 1
    assert side.metrics.rejected["centre_bad_field"] == 1
    await asyncio.sleep(0)  # confirmations go out at the end of the loop's turn
    (conf,) = client.confs()
    assert (conf["gw"], conf["acks"], conf["bc"]) == (GW, [[f"{GW}:{DEV}:3", "acked"]], [])


async def test_an_ack_that_cannot_be_committed_is_not_confirmed(store: Store) -> None:
    village = Village()
    side, client = centre_side(store, village)
    await store.db.execute("PRAGMA query_only = 1")  # every write fails, as on a full disk
    done = side._on_ack(ack(7, "acked", by="Li"))
    assert await done is False  # the centre sends it again: it is still held there
    await asyncio.sleep(0)
    assert client.confs() == [] and village.sent == []
    await store.db.execute("PRAGMA query_only = 0")
    assert await side._on_ack(ack(7, "acked", by="Li")) is True
    await asyncio.sleep(0)
    assert [c["acks"] for c in client.confs()] == [[[f"{GW}:{DEV}:7", "acked"]]]
    assert village.sent == [(DEV, 7, "acked", "Li")]


async def test_the_confirmation_on_connect_names_nothing(store: Store) -> None:
    side, client = centre_side(store, Village())
    side._publish_conf(cast(MqttClient, client), [], [])
    (conf,) = client.confs()
    assert (conf["acks"], conf["bc"]) == ([], [])
    assert json.loads(client.published[0][1].split(b" ", 1)[1]) == conf
