"""Checks that a revoked device is shut out, at the village broker and at the gateway."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.protodevice import ProtoDevice
from harness.stack import HOST, LocalStack
from tests.support import wait_for
from transport.mqtt import MqttClient, MqttConnectError


async def broker_refuses(stack: LocalStack, user: str, password: str) -> str:
    """Returns the broker's refusal once it refuses `user` (it reloads its password file on
    SIGHUP, so give it a moment); fails the test after 10 s."""
    assert stack.village_broker is not None
    deadline = time.monotonic() + 10
    while True:
        client = MqttClient(f"{user}-probe", HOST, stack.village_broker.port, username=user,
                            password=password)
        try:
            await client.connect(timeout=5)
        except MqttConnectError as exc:
            return str(exc)
        await client.disconnect()
        assert time.monotonic() < deadline, "the broker still lets a revoked device in"
        await asyncio.sleep(0.1)


async def gateway_refuses(stack: LocalStack, device_id: str, key: bytes) -> None:
    """A broker that still let the device in (its password file not yet changed, say): the
    gateway refuses its alarm all the same, as from an unknown device."""
    assert stack.village_broker is not None
    stack.village_broker.add_user(device_id, "still-here")
    stack.village_broker.reload()
    before = stack.gateway_metrics().get("rejected", {}).get("unknown_device", 0)
    dev = ProtoDevice(device_id, key, HOST, stack.village_broker.port, "still-here")
    await dev.connect()
    try:
        c = await dev.send("alarm", counter=1_000_000)
        with pytest.raises(TimeoutError):
            await dev.wait_ack(c, "stored", timeout=2)
    finally:
        await dev.close()
        stack.village_broker.remove_user(device_id)
        stack.village_broker.reload()
    await wait_for(
        lambda: stack.gateway_metrics().get("rejected", {}).get("unknown_device", 0) > before, 10
    )
