"""Signed gateway-to-centre messages (§6, §8.3), for tests and simulations that play a gateway.

Bodies come from the link's codec (`protocol.uplink`, `protocol.reports`); keyword arguments
add or override fields, so that a test can also send what the codec would never make."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from centre.config import CentreConfig
from protocol import reports, topics, uplink
from protocol.signed import encode_json, sign_frame
from transport.mqtt import Message, MqttConnectError, MqttError


def event_body(
    gw: str,
    device: str,
    counter: int,
    kind: str = "alarm",
    *,
    seq: int | None = None,
    ref: int | None = None,
    village: str = "v-demo",
    household: str = "h-1",
    gw_ts: int = 1_700_000_000_000,
    **extra: Any,
) -> dict[str, Any]:
    ev = uplink.new_event(
        gw, counter if seq is None else seq, kind, device, counter,
        village=village, household=household, gw_ts=gw_ts, ref_counter=ref,
    )
    return uplink.encode_event(ev) | extra


def signed_event(key: Ed25519PrivateKey, body: dict[str, Any], gw: str | None = None) -> tuple[str, bytes]:
    """(topic, payload) for `body` published by gateway `gw` (default: body's gw)."""
    topic = topics.event(gw or str(body["gw"]))
    return topic, sign_frame(key, topic, encode_json(body))


def signed_heartbeat(
    key: Ed25519PrivateKey,
    gw: str,
    ts: int,
    outbox: int = 0,
    devices: int = 1,
    villages: list[str] | None = None,
    store: uplink.StoreState | None = None,
) -> tuple[str, bytes]:
    topic = topics.heartbeat(gw)
    hb = uplink.Heartbeat(
        gw, ts, outbox, devices, None if villages is None else tuple(villages), store=store
    )
    return topic, sign_frame(key, topic, encode_json(uplink.encode_heartbeat(hb)))


def signed_reports(
    key: Ed25519PrivateKey, gw: str, bc: str, items: list[tuple[str, str, int]]
) -> tuple[str, bytes]:
    """A §8.3 report message: `items` as (device, wire state, at ms)."""
    topic = topics.reports(gw)
    batch = reports.ReportBatch(gw, bc, tuple(reports.Report(d, s, at) for d, s, at in items))
    return topic, sign_frame(key, topic, encode_json(reports.encode(batch)))


def signed_conf(
    key: Ed25519PrivateKey,
    gw: str,
    acks: Sequence[tuple[str, str]] = (),
    bc: Sequence[str] = (),
    ts: int = 1_700_000_000_000,
) -> tuple[str, bytes]:
    """A §6.6 confirmation: `acks` as (event id, state), `bc` broadcast ids."""
    topic = f"ok/v1/gw/{gw}/up/conf"
    body = {"gw": gw, "ts": ts, "acks": [list(a) for a in acks], "bc": list(bc)}
    return topic, sign_frame(key, topic, encode_json(body))


@dataclass
class FakeBroker:
    """An in-memory stand-in for the centre broker and the centre's MQTT client: pass
    `factory` as `client_factory`. Successive clients (one per reconnect) share it."""

    fail_connects: int = 0
    hold_pubacks: bool = False
    clients: list[FakeClient] = field(default_factory=list)
    published: list[tuple[str, bytes]] = field(default_factory=list)
    on_publish: Callable[[str, bytes], None] | None = None
    # The centre's persistent session: messages delivered and not yet PUBACKed by the
    # client (manual ack) are delivered again to the next client, in order, as a broker does.
    unacked: list[Message] = field(default_factory=list)
    acked: list[Message] = field(default_factory=list)
    on_ack: Callable[[Message], None] | None = None
    _mid: int = field(default=0, init=False)

    def next_mid(self) -> int:
        self._mid += 1
        return self._mid

    def factory(self, _cfg: CentreConfig) -> FakeClient:
        c = FakeClient(self)
        self.clients.append(c)
        return c


class FakeClient:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.inbox: asyncio.Queue[Message | MqttError] = asyncio.Queue()
        self.subscriptions: list[str] = []
        self.held: list[asyncio.Future[None]] = []
        self.connected = False

    async def connect(self) -> None:
        if self.broker.fail_connects > 0:
            self.broker.fail_connects -= 1
            raise MqttConnectError("refused")
        self.connected = True
        for msg in self.broker.unacked:  # the session's in-flight messages, sent again
            self.inbox.put_nowait(msg)

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscriptions.append(topic)

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1) -> asyncio.Future[None]:
        if not self.connected:
            raise MqttError("not connected")
        if self.broker.on_publish is not None:
            self.broker.on_publish(topic, payload)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.broker.hold_pubacks:
            self.held.append(fut)
        else:
            self.broker.published.append((topic, payload))
            fut.set_result(None)
        return fut

    async def messages(self) -> AsyncIterator[Message]:
        while True:
            item = await self.inbox.get()
            if isinstance(item, MqttError):
                raise item
            yield item

    def drop(self) -> None:
        self.connected = False
        for f in self.held:
            if not f.done():
                f.set_exception(MqttError("connection ended before PUBACK"))
        self.inbox.put_nowait(MqttError("connection lost"))

    def deliver(self, topic: str, payload: bytes) -> None:
        msg = Message(topic, payload, 1, False, mid=self.broker.next_mid())
        self.broker.unacked.append(msg)
        self.inbox.put_nowait(msg)

    def ack(self, msg: Message) -> None:
        """The client's PUBACK (manual ack): the message leaves the session."""
        if not self.connected or msg not in self.broker.unacked:
            return
        self.broker.unacked.remove(msg)
        self.broker.acked.append(msg)
        if self.broker.on_ack is not None:
            self.broker.on_ack(msg)

    async def disconnect(self) -> None:
        self.connected = False


async def wait_until(cond: Callable[[], bool], within: float = 5.0) -> None:
    """Poll `cond` (state spread over tasks and processes) until true; TimeoutError after
    `within` seconds."""
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - the condition has no event to wait on
            await asyncio.sleep(0.005)
