"""The gateway under faults: crashes, a lost uplink, and hostile or broken input."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from device_fw import okproto
from harness.protodevice import ProtoDevice
from harness.stack import HOST, LocalStack
from tests.refusal import broker_refuses
from tests.support import wait_for
from transport.mqtt import MqttClient

pytestmark = pytest.mark.integration


def centre_alarms(stack: LocalStack, device: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = stack.api("GET", "/api/alarms?limit=1000")
    return [r for r in rows if r["device"] == device]


async def test_alarm_survives_gateway_kill_before_forwarding(
    stack: LocalStack, proto_device: ProtoDevice
) -> None:
    assert stack.centre_broker and stack.gateway_proc
    stack.centre_broker.stop()  # nothing can be forwarded: the alarm sits in the outbox
    c = await proto_device.send("alarm")
    await proto_device.wait_ack(c, "stored")
    stack.gateway_proc.kill()  # SIGKILL: no shutdown code runs
    stack.centre_broker.start()
    await asyncio.to_thread(stack.start_gateway)
    await proto_device.wait_ack(c, "received", timeout=20)
    rows = await wait_for(lambda: centre_alarms(stack, "btn-proto"))
    assert [r["counter"] for r in rows] == [c]


async def test_gateway_killed_mid_forward_delivers_each_alarm_once(
    stack: LocalStack, proto_device: ProtoDevice
) -> None:
    assert stack.gateway_proc
    counters = [await proto_device.send("alarm") for _ in range(30)]
    await proto_device.wait_ack(counters[-1], "stored")
    stack.gateway_proc.kill()
    await asyncio.to_thread(stack.start_gateway)
    for c in counters:
        await proto_device.wait_ack(c, "received", timeout=20)
    rows = centre_alarms(stack, "btn-proto")
    assert sorted(r["counter"] for r in rows) == counters  # each exactly once


async def test_centre_broker_outage_queues_alarms_and_delivers_in_order(
    stack: LocalStack, proto_device: ProtoDevice
) -> None:
    assert stack.centre_broker
    stack.centre_broker.stop()
    counters = []
    for _ in range(20):
        counters.append(await proto_device.send("alarm"))
    for c in counters:
        await proto_device.wait_ack(c, "stored")
    await asyncio.sleep(2.0)  # the outage lasts a while; the gateway keeps retrying
    assert stack.gateway_metrics()["gauges"]["outbox"] >= 0
    stack.centre_broker.start()
    for c in counters:
        await proto_device.wait_ack(c, "received", timeout=40)
    rows = centre_alarms(stack, "btn-proto")
    by_arrival = sorted(rows, key=lambda r: (r["received_at"], r["seq"]))
    assert [r["counter"] for r in by_arrival] == counters
    assert [r["seq"] for r in by_arrival] == sorted(r["seq"] for r in rows)


async def test_resent_alarm_is_stored_once(stack: LocalStack, proto_device: ProtoDevice) -> None:
    topic, payload, c = proto_device.frame("alarm")
    for _ in range(3):
        await proto_device.publish_raw(topic, payload)
    await proto_device.wait_ack(c, "received")
    await asyncio.sleep(0.5)
    assert len(centre_alarms(stack, "btn-proto")) == 1
    assert stack.gateway_metrics()["counts"]["duplicates"] >= 2


async def test_bad_input_is_rejected_with_reasons_and_loses_nothing(
    stack: LocalStack, proto_device: ProtoDevice
) -> None:
    assert stack.village_broker
    good = await proto_device.send("alarm")
    await proto_device.wait_ack(good, "received")

    key = proto_device.key
    dev = proto_device.id
    topic = okproto.topic_up(dev, "alarm")
    # Malformed frame, bad JSON under a good MAC, bad field, wrong MAC, oversized.
    await proto_device.publish_raw(topic, b"hello")
    await proto_device.publish_raw(topic, okproto.frame(key, topic, b"{not json"))
    await proto_device.publish_raw(topic, okproto.frame(key, topic, b'{"t":"alarm","d":"btn-proto","c":-1}'))
    _t, forged, _c = ProtoDevice(dev, bytes(32), HOST, 1, "x").frame("alarm", 999)
    await proto_device.publish_raw(topic, forged)
    await proto_device.publish_raw(topic, b"a" * 64 + b" " + b"x" * 1000)
    # A replayed heartbeat.
    hb_topic, hb, _ = proto_device.frame("hb", bat=90)
    await proto_device.publish_raw(hb_topic, hb, qos=1)
    await proto_device.publish_raw(hb_topic, hb, qos=1)

    # An unknown device: registered with the broker but not with the gateway.
    stack.village_broker.add_user("btn-ghost", "pw-ghost")
    stack.village_broker.reload()
    ghost = ProtoDevice("btn-ghost", bytes(range(32)), HOST, stack.village_broker.port, "pw-ghost")
    await ghost.connect()
    try:
        await ghost.send("alarm")
    finally:
        await ghost.close()

    expected = {"malformed", "bad_json", "bad_field", "bad_mac", "oversized", "replay", "unknown_device"}
    rejected = await wait_for(
        lambda: (r := stack.gateway_metrics().get("rejected", {})) and expected <= set(r) and r
    )
    assert all(rejected[k] >= 1 for k in expected)
    log = (stack.root / "gateway.log").read_text()
    for reason in expected:
        assert f"event=rejected reason={reason}" in log

    # The gateway is still running and still works; what was stored is still there.
    assert stack.gateway_proc is not None and stack.gateway_proc.running
    after = await proto_device.send("alarm")
    await proto_device.wait_ack(after, "received")
    assert {r["counter"] for r in centre_alarms(stack, dev)} == {good, after}


async def test_device_cannot_publish_on_another_devices_topic(
    stack: LocalStack, proto_device: ProtoDevice
) -> None:
    assert stack.village_broker
    key, _password = stack.register_device("btn-victim", "h-victim")
    # btn-proto forges an alarm for btn-victim, with btn-victim's own key even: the broker's
    # ACL confines btn-proto to its own topics, so the gateway never sees it.
    topic, payload = okproto.encode_up(key, "btn-victim", "alarm", 1, {})
    await proto_device.publish_raw(topic, payload)
    marker = await proto_device.send("alarm")
    await proto_device.wait_ack(marker, "received")
    await asyncio.sleep(0.3)
    assert centre_alarms(stack, "btn-victim") == []
    assert stack.gateway_metrics()["counts"].get("stored_alarm") == 1


async def test_anonymous_client_is_refused_by_the_village_broker(stack: LocalStack) -> None:
    assert stack.village_broker
    client = MqttClient("anon", HOST, stack.village_broker.port)
    with pytest.raises(Exception, match=r"(?i)refused|not authori[sz]ed|bad user"):
        await client.connect(timeout=5)


async def test_revoking_from_the_gateway_command_line_also_closes_the_broker_door(
    stack: LocalStack,
) -> None:
    assert stack.village_broker
    _key, password = stack.register_device("btn-gone", "h-gone")
    ok = MqttClient("btn-gone", HOST, stack.village_broker.port, username="btn-gone", password=password)
    await ok.connect(timeout=5)
    await ok.disconnect()
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "onekey.cli", "gateway", "device", "revoke",
         "--config", str(stack.gateway_config), "--id", "btn-gone"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "broker login btn-gone removed" in proc.stdout
    await broker_refuses(stack, "btn-gone", password)


async def test_a_centre_ack_lost_with_a_gateway_crash_still_reaches_the_device(
    stack: LocalStack,
) -> None:
    assert stack.village_broker and stack.gateway_proc
    key, password = stack.register_device("btn-lost", "h-lost")
    dev = ProtoDevice("btn-lost", key, HOST, stack.village_broker.port, password)
    await dev.connect()
    c = await dev.send("alarm")
    await dev.wait_ack(c, "stored")
    await dev.close()
    # The village broker goes away, so the centre's `received` can only wait in the gateway's
    # memory; then the gateway dies with it.
    stack.village_broker.stop()
    await wait_for(lambda: [r for r in centre_alarms(stack, "btn-lost") if r["counter"] == c], 15)
    await asyncio.sleep(0.5)  # the centre's ack is committed at the gateway
    stack.gateway_proc.kill()
    stack.village_broker.start()
    back = ProtoDevice("btn-lost", key, HOST, stack.village_broker.port, password)
    await back.connect()
    await asyncio.to_thread(stack.start_gateway)
    try:
        await back.wait_ack(c, "received", timeout=20)
    finally:
        await back.close()
