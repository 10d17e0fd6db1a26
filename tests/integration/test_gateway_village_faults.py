"""The gateway's village side under faults: an uplink outage."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from onekey.protodevice import ProtoDevice
from onekey.stack import LocalStack
from tests.support import wait_for

pytestmark = pytest.mark.integration


def gateway_stats(stack: LocalStack) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "onekey.cli", "gateway", "stats", "--config", str(stack.gateway_config)],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


async def test_stats_show_the_alarms_waiting_while_the_centre_link_is_down(
    stack: LocalStack, proto_device: ProtoDevice
) -> None:
    assert stack.centre_broker
    stack.centre_broker.stop()
    counters = [await proto_device.send("alarm") for _ in range(3)]
    for c in counters:
        await proto_device.wait_ack(c, "stored")
    await wait_for(lambda: gateway_stats(stack)["gauges"].get("outbox") == 3, timeout=20)
    # Each failed reconnect logs the backlog, not what happened to be in flight.
    await wait_for(
        lambda: "event=centre_link_down" in (log := (stack.root / "gateway.log").read_text())
        and " outbox=3 " in log,
        timeout=30,
    )
    stack.centre_broker.start()
    for c in counters:
        await proto_device.wait_ack(c, "received", timeout=40)
    await wait_for(lambda: gateway_stats(stack)["gauges"].get("outbox") == 0, timeout=20)
