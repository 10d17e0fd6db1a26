"""The gateway's village side under faults: kill -9 mid-stream, a village broker that loses what
it held, a device that missed its acks, a withheld alarm injected later, an uplink outage."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from typing import Any

import pytest

from device_fw import okproto
from harness.protodevice import ProtoDevice
from harness.stack import HOST, LocalStack
from tests.support import wait_for

pytestmark = pytest.mark.integration


def stored_events(stack: LocalStack) -> list[tuple[str, int]]:
    """(device, counter) of every device event in the gateway's database, in seq order (not the
    gateway's own supervision events, §6.2.1)."""
    conn = sqlite3.connect(f"file:{stack.gateway_dir / 'gateway.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT device, counter FROM events WHERE kind != 'supervision' ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [(str(r[0]), int(r[1])) for r in rows]


def supervision_events(stack: LocalStack) -> list[int]:
    """seq of the gateway's own supervision events (§6.2.1)."""
    conn = sqlite3.connect(f"file:{stack.gateway_dir / 'gateway.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT seq FROM events WHERE kind = 'supervision'").fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


def counts(stack: LocalStack) -> dict[str, int]:
    data: dict[str, int] = stack.gateway_metrics().get("counts", {})
    return data


async def connect_device(stack: LocalStack, dev_id: str, *, clean: bool = True) -> ProtoDevice:
    key, password = stack.register_device(dev_id, f"h-{dev_id}")
    assert stack.village_broker is not None
    dev = ProtoDevice(dev_id, key, HOST, stack.village_broker.port, password, clean=clean)
    await dev.connect()
    return dev


async def again(stack: LocalStack, dev: ProtoDevice, *, clean: bool) -> ProtoDevice:
    """The same device (key, password, counter) on a new connection."""
    assert stack.village_broker is not None
    password = dev.client._password or ""
    back = ProtoDevice(dev.id, dev.key, HOST, stack.village_broker.port, password, clean=clean)
    back.counter = dev.counter
    await back.connect()
    return back


async def test_gateway_killed_mid_stream_loses_nothing_and_keeps_each_devices_order(
    stack: LocalStack,
) -> None:
    assert stack.village_broker and stack.gateway_proc
    n_devices, per_device = 8, 100
    devices = []
    for i in range(n_devices):
        key, password = stack.register_device(f"pd-{i}", f"h-{i}", reload=False)
        devices.append(ProtoDevice(f"pd-{i}", key, HOST, stack.village_broker.port, password))
    stack.village_broker.reload()
    await asyncio.gather(*(d.connect() for d in devices))
    await wait_for(lambda: stack.gateway_metrics().get("gauges", {}).get("devices") == n_devices)

    async def publish_all() -> None:
        # A steady stream: every device sends one alarm per round, as fast as the broker
        # takes them; the broker PUBACKs each, so from here on only the gateway can lose one.
        for _ in range(per_device):
            futs = []
            for d in devices:
                topic, payload, _c = d.frame("alarm")
                futs.append(d.client.publish_nowait(topic, payload, qos=1))
            await asyncio.gather(*futs)

    publisher = asyncio.create_task(publish_all())
    total = n_devices * per_device
    try:
        for threshold in (total // 5, total // 2):
            await wait_for(lambda t=threshold: len(stored_events(stack)) >= t, timeout=60, every=0.01)
            stack.gateway_proc.kill()  # SIGKILL while alarms keep arriving
            await asyncio.to_thread(stack.start_gateway)
        await publisher
        try:
            await wait_for(lambda: len(stored_events(stack)) >= total, timeout=30)
        except TimeoutError:
            pass  # the assertions below say what is missing
    finally:
        publisher.cancel()
        for d in devices:
            await d.close()
    events = stored_events(stack)
    for d in devices:
        counters = [c for dev, c in events if dev == d.id]
        missing = sorted(set(range(1, per_device + 1)) - set(counters))
        assert missing == [], f"{d.id} lost {missing}"
        assert counters == list(range(1, per_device + 1)), f"{d.id} out of order: {counters}"
    assert len(events) == total  # none twice


async def test_a_received_lost_with_a_village_broker_crash_still_reaches_the_device(
    stack: LocalStack,
) -> None:
    assert stack.village_broker
    dev = await connect_device(stack, "btn-vb", clean=False)
    await dev.close()
    # A graceful restart saves the device's persistent session (its subscription) to disk.
    await asyncio.to_thread(stack.village_broker.restart)
    dev = await again(stack, dev, clean=False)
    c = await dev.send("alarm")
    await dev.wait_ack(c, "stored", timeout=20)
    await dev.close()
    # The centre's `received` is relayed while the device is away: it waits in the village
    # broker's memory (the stored ack and the received ack, both PUBACKed by the broker) ...
    await wait_for(lambda: counts(stack).get("acks_out_confirmed", 0) >= 2, timeout=20)
    # ... which a crash loses: nothing saved since the restart.
    stack.village_broker.kill()
    await asyncio.to_thread(stack.village_broker.start)
    back = await again(stack, dev, clean=False)
    try:
        await back.wait_ack(c, "received", timeout=20)
    finally:
        await back.close()


def hb_with_ev(dev: ProtoDevice, ev: list[list[object]]) -> tuple[str, bytes]:
    """§4.3: a heartbeat listing the events the device still waits on, built by hand."""
    dev.counter += 1
    topic = okproto.topic_up(dev.id, "hb")
    body = json.dumps(
        {"t": "hb", "d": dev.id, "c": dev.counter, "ev": ev}, separators=(",", ":")
    ).encode()
    return topic, okproto.frame(dev.key, topic, body)


async def test_a_device_that_missed_its_acks_learns_the_state_from_its_heartbeat(
    stack: LocalStack,
) -> None:
    dev = await connect_device(stack, "btn-sync", clean=True)
    c = await dev.send("alarm")
    await dev.wait_ack(c, "stored", timeout=20)
    await dev.close()  # a clean session: whatever is sent to it now is dropped by the broker
    await wait_for(lambda: counts(stack).get("centre_received", 0) >= 1, timeout=20)
    back = await again(stack, dev, clean=True)
    try:
        assert back.acks.seen == {}
        await back.publish_raw(*hb_with_ev(back, [[c, "stored"]]), qos=0)
        await back.wait_ack(c, "received", timeout=20)
    finally:
        await back.close()


async def test_a_withheld_alarm_injected_after_later_ones_is_rejected_as_replay(
    stack: LocalStack, proto_device: ProtoDevice
) -> None:
    topic, withheld, first = proto_device.frame("alarm")  # captured on the village network
    later = [await proto_device.send("alarm") for _ in range(okproto.REORDER_COUNTERS + 2)]
    await proto_device.wait_ack(later[-1], "stored", timeout=20)
    await proto_device.publish_raw(topic, withheld)
    await wait_for(lambda: stack.gateway_metrics().get("rejected", {}).get("replay", 0) >= 1)
    log = (stack.root / "gateway.log").read_text()
    assert f"event=rejected reason=replay device={proto_device.id}" in log
    assert first not in proto_device.acks.seen
    assert [c for dev, c in stored_events(stack) if dev == proto_device.id] == later


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
    # The backlog: the three alarms and the supervision event saying the device was first
    # heard (§6.2.1), all waiting for the centre.
    # (The supervision task raises that one on its own beat: counted each time.)
    def waiting() -> int:
        return 3 + len(supervision_events(stack))

    await wait_for(lambda: gateway_stats(stack)["gauges"].get("outbox") == waiting(), timeout=20)
    # Each failed reconnect logs the backlog, not what happened to be in flight.
    # (a reconnect that failed before the supervision event was raised logged 3)
    await wait_for(
        lambda: "event=centre_link_down" in (log := (stack.root / "gateway.log").read_text())
        and (" outbox=3 " in log or f" outbox={waiting()} " in log),
        timeout=30,
    )
    stack.centre_broker.start()
    for c in counters:
        await proto_device.wait_ack(c, "received", timeout=40)
    await wait_for(lambda: gateway_stats(stack)["gauges"].get("outbox") == 0, timeout=20)
