"""The asyncio MQTT client against a real Mosquitto: acks, ordering, and losing the broker."""

from __future__ import annotations

import asyncio
import os
import signal
import struct

import pytest

from transport.brokers import VillageBroker
from transport.mqtt import MqttClient, MqttConnectError, MqttError, Will
from transport.procs import free_port

try:
    from conftest_brokers import (  # type: ignore[import-not-found, unused-ignore]
        HOST,
        PASSWORDS,
        next_message,
        village_broker_fixture,
        village_client,
    )
except ImportError:
    from tests.integration.conftest_brokers import (
        HOST,
        PASSWORDS,
        next_message,
        village_broker_fixture,
        village_client,
    )

__all__ = ["village_broker_fixture"]

pytestmark = pytest.mark.integration


async def test_constructor_does_no_io() -> None:
    client = MqttClient("idle", HOST, 1, username="u", password="p")
    assert not client.connected
    with pytest.raises(MqttError):
        client.publish_nowait("ok/v1/x", b"")
    with pytest.raises(MqttError):
        client.closed()


async def test_connect_to_closed_port_fails_with_connect_error() -> None:
    client = MqttClient("nobody", HOST, free_port(HOST))
    with pytest.raises(MqttConnectError, match="refused"):
        await client.connect(timeout=5)


async def test_qos1_publish_waits_for_puback(village_broker: VillageBroker) -> None:
    pid = village_broker.pid
    assert pid is not None
    async with village_client(village_broker, "gateway") as gw:
        await gw.publish("ok/v1/dev/btn-1/down/ack", b"first", qos=1)
        # A frozen broker sends no PUBACK: the publish must not return.
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(MqttError, match="no PUBACK"):
                await gw.publish("ok/v1/dev/btn-1/down/ack", b"second", qos=1, timeout=0.3)
        finally:
            os.kill(pid, signal.SIGCONT)
        await gw.publish("ok/v1/dev/btn-1/down/ack", b"third", qos=1, timeout=5)


async def test_pipelined_publishes_complete_in_order(village_broker: VillageBroker) -> None:
    n = 1000
    async with (
        village_client(village_broker, "gateway") as gw,
        village_client(village_broker, "btn-1") as dev,
    ):
        await gw.subscribe("ok/v1/dev/+/up/#")
        done: list[int] = []
        futures = []
        for i in range(n):
            fut = dev.publish_nowait("ok/v1/dev/btn-1/up/test", str(i).encode(), qos=1)
            fut.add_done_callback(lambda f, i=i: done.append(i))
            futures.append(fut)
        async with asyncio.timeout(15):
            await asyncio.gather(*futures)
        assert done == list(range(n))

        received = []
        async with asyncio.timeout(15):
            async for msg in gw.messages():
                received.append(int(msg.payload))
                if len(received) == n:
                    break
        assert received == list(range(n))


async def test_qos0_publish_completes_when_written(village_broker: VillageBroker) -> None:
    async with (
        village_client(village_broker, "gateway") as gw,
        village_client(village_broker, "btn-1") as dev,
    ):
        await gw.subscribe("ok/v1/dev/+/up/#", qos=0)
        await dev.publish("ok/v1/dev/btn-1/up/hb", b"hb", qos=0)
        msg = await next_message(gw)
        assert (msg.payload, msg.qos) == (b"hb", 0)


async def test_messages_end_with_error_when_broker_is_killed(
    village_broker: VillageBroker,
) -> None:
    gw = village_client(village_broker, "gateway", keepalive=5)
    await gw.connect()
    try:
        await gw.subscribe("ok/v1/dev/+/up/#")
        closed = gw.closed()
        village_broker.kill()
        async with asyncio.timeout(5):
            with pytest.raises(MqttError):
                async for _ in gw.messages():
                    pass
            with pytest.raises(MqttError, match="lost"):
                await closed
        assert not gw.connected
        with pytest.raises(MqttError):
            await gw.publish("ok/v1/dev/btn-1/down/ack", b"late")
    finally:
        await gw.disconnect()


async def test_pending_publish_fails_when_connection_drops(village_broker: VillageBroker) -> None:
    pid = village_broker.pid
    assert pid is not None
    gw = village_client(village_broker, "gateway")
    await gw.connect()
    try:
        os.kill(pid, signal.SIGSTOP)
        fut = gw.publish_nowait("ok/v1/dev/btn-1/down/ack", b"pending", qos=1)
        await asyncio.sleep(0)  # let the loop write it
        village_broker.kill()
        async with asyncio.timeout(5):
            with pytest.raises(MqttError, match="before PUBACK"):
                await fut
    finally:
        await gw.disconnect()


async def test_disconnect_resolves_closed_and_ends_messages(
    village_broker: VillageBroker,
) -> None:
    gw = village_client(village_broker, "gateway")
    await gw.connect()
    closed = gw.closed()
    await gw.disconnect()
    assert closed.done() and closed.exception() is None
    assert [m async for m in gw.messages()] == []
    await gw.disconnect()  # twice is harmless


async def test_client_reconnects_with_connect_after_restart(
    village_broker: VillageBroker,
) -> None:
    gw = village_client(village_broker, "gateway")
    await gw.connect()
    village_broker.kill()
    with pytest.raises(MqttError):
        async with asyncio.timeout(5):
            await gw.closed()
    village_broker.start()
    await gw.connect()
    try:
        await gw.subscribe("ok/v1/dev/+/up/#")
        await gw.publish("ok/v1/dev/btn-1/down/ack", b"after restart")
    finally:
        await gw.disconnect()


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _connect_packet(client_id: str, user: str, password: str, will: Will) -> bytes:
    """An MQTT 3.1.1 CONNECT with a will, user name and password (spec §3.1)."""
    flags = 0x80 | 0x40 | 0x04 | (will.qos << 3)
    body = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", 30)
    body += _utf8(client_id) + _utf8(will.topic)
    body += struct.pack("!H", len(will.payload)) + will.payload
    body += _utf8(user) + _utf8(password)
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


async def test_will_is_published_when_device_vanishes(village_broker: VillageBroker) -> None:
    will = Will("ok/v1/dev/btn-1/up/will", b"offline")
    async with village_client(village_broker, "gateway") as gw:
        await gw.subscribe("ok/v1/dev/+/up/will")
        reader, writer = await asyncio.open_connection(village_broker.host, village_broker.port)
        try:
            writer.write(_connect_packet("btn-1", "btn-1", PASSWORDS["btn-1"], will))
            assert await reader.readexactly(4) == b"\x20\x02\x00\x00"  # CONNACK accepted
        finally:
            writer.close()  # no DISCONNECT: the broker must publish the will
            await writer.wait_closed()
        msg = await next_message(gw)
        assert (msg.topic, msg.payload) == (will.topic, will.payload)



async def test_manual_ack_leaves_an_unacknowledged_message_with_the_broker(
    village_broker: VillageBroker,
) -> None:
    """With manual_ack, a message handled but not acked (a crash before commit) comes back on
    the next connect of the same persistent session, in order; an acked one does not."""
    sub = village_client(village_broker, "gateway", clean_session=False, manual_ack=True)
    await sub.connect()
    await sub.subscribe("ok/v1/dev/+/up/#", qos=1)
    async with village_client(village_broker, "btn-1") as dev:
        for n in range(3):
            await dev.publish("ok/v1/dev/btn-1/up/alarm", f"m{n}".encode(), qos=1)
    first = await next_message(sub)
    assert first.payload == b"m0"
    sub.ack(first)
    second = await next_message(sub)
    third = await next_message(sub)
    assert (second.payload, third.payload) == (b"m1", b"m2")
    await asyncio.sleep(0.2)  # let the one PUBACK reach the broker before the "crash"
    await sub.abort()  # no PUBACK for m1 and m2
    again = village_client(village_broker, "gateway", clean_session=False, manual_ack=True)
    await again.connect()
    try:
        got = [await next_message(again), await next_message(again)]
        assert [m.payload for m in got] == [b"m1", b"m2"]
        for m in got:
            again.ack(m)
        sub.ack(first)  # a message of a closed connection: acking it does nothing
    finally:
        await again.disconnect()
    # Both acked now: a third session gets nothing more.
    last = village_client(village_broker, "gateway", clean_session=False, manual_ack=True)
    await last.connect()
    try:
        with pytest.raises(TimeoutError):
            await next_message(last, timeout=0.5)
    finally:
        await last.disconnect()
