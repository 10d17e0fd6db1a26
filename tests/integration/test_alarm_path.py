"""The alarm path on real parts with protocol-level devices: gateway, both brokers, centre."""

from __future__ import annotations

import asyncio

import pytest

from harness.protodevice import ProtoDevice
from harness.stack import LocalStack

pytestmark = pytest.mark.integration


async def test_alarm_reaches_centre_and_acks_come_back(
    stack: LocalStack, proto_device: ProtoDevice
) -> None:
    c = await proto_device.send("alarm", up=1234)
    await proto_device.wait_ack(c, "stored")
    await proto_device.wait_ack(c, "received")
    alarm_id = f"gw-demo:btn-proto:{c}"
    alarm = await asyncio.to_thread(stack.api, "GET", f"/api/alarms/{alarm_id}")
    assert alarm["household"] == "h-proto" and alarm["kind"] == "alarm"
    ack = {"by": "Wang", "note": "on the way"}
    await asyncio.to_thread(stack.api, "POST", f"/api/alarms/{alarm_id}/ack", ack)
    await proto_device.wait_ack(c, "acked")
