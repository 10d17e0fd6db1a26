"""What the centre sends down (a staff ack, a broadcast copy) is held until the gateway confirms
it (§6.6), not until the centre broker's PUBACK: on the whole chain (protocol-level device,
village broker, gateway, centre broker with TLS, centre), with the centre broker killed before
its autosave while the gateway is away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from harness.protodevice import ProtoDevice
from harness.stack import LocalStack

pytestmark = pytest.mark.integration


async def until(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling processes over HTTP and files
            await asyncio.sleep(0.05)


async def centre_metrics(stack: LocalStack) -> dict[str, Any]:
    out: dict[str, Any] = await asyncio.to_thread(stack.api, "GET", "/api/metrics")
    return out


async def test_staff_ack_and_broadcast_survive_a_centre_broker_crash_while_the_gateway_is_away(
    stack: LocalStack, proto_device: ProtoDevice
) -> None:
    assert stack.gateway_proc is not None and stack.centre_broker is not None
    c = await proto_device.send("alarm")
    await proto_device.wait_ack(c, "received", timeout=20)
    alarm_id = f"{stack.gateway_id}:{proto_device.id}:{c}"

    await asyncio.to_thread(stack.gateway_proc.stop)  # the gateway is away
    sent_before = (await centre_metrics(stack))["counts"].get("downlinks_sent", 0)
    ack = {"by": "Wang", "note": "doctor on the way"}
    await asyncio.to_thread(stack.api, "POST", f"/api/alarms/{alarm_id}/ack", ack)
    bc = {
        "by": "Wang", "urgency": "Immediate", "severity": "Severe", "certainty": "Observed",
        "valid_for_s": 600, "area": [{"village": stack.village}], "text": "flood warning",
    }
    bc_id = (await asyncio.to_thread(stack.api, "POST", "/api/broadcasts", bc))["id"]

    async def broker_took_both() -> bool:
        counts = (await centre_metrics(stack))["counts"]
        return bool(int(counts.get("downlinks_sent", 0)) >= sent_before + 2)

    await until(broker_took_both)
    # Held for the gateway in the broker's memory only: a crash before its autosave loses it.
    await asyncio.to_thread(stack.centre_broker.kill)
    await asyncio.to_thread(stack.centre_broker.start)
    await asyncio.to_thread(stack.start_gateway)

    await proto_device.wait_ack(c, "acked", timeout=30)
    alarm = await asyncio.to_thread(stack.api, "GET", f"/api/alarms/{alarm_id}")
    assert alarm["state"] == "acked"

    async def all_confirmed() -> bool:
        return int((await centre_metrics(stack))["pending_downlinks"]) == 0

    await until(all_confirmed)  # the gateway confirmed the ack and the broadcast copy

    async def accepted_once() -> bool:
        # The gateway writes its counters file every few seconds: wait for the one after.
        return bool(stack.gateway_metrics().get("counts", {}).get("bc_accepted") == 1)

    await until(accepted_once)
    got = await asyncio.to_thread(stack.api, "GET", f"/api/broadcasts/{bc_id}")
    assert [g["state"] for g in got["gateways"]] == ["sent"]
