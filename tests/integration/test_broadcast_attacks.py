"""Forged and replayed broadcasts never play (protocol §8.1.1, §8.2.1, §2.1).

Over a thousand attack messages, on both brokers and from every position an attacker could
hold, against protocol-level speakers and one running the real firmware: without the centre's
key at the centre broker, replaying or tampering with what the centre really signed, as a
provisioned device on the village broker, and with the gateway's broker password but no device
key. Between them, genuine broadcasts still play, and at the end every speaker's played log
holds the genuine ones only."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from device_fw import okproto
from gateway import bcpolicy
from harness.protodevice import ProtoDevice
from harness.protospeaker import ProtoSpeaker
from harness.stack import HOST, LocalStack
from protocol.signed import encode_json
from tests.bc_support import CentreStandIn, broadcast, now_ms
from tests.support import wait_for
from transport.keys import generate_private_key
from transport.mqtt import MqttClient, MqttError

pytestmark = pytest.mark.integration

VILLAGE = "v-demo"
SPEAKERS = ("spk-a1", "spk-a2", "spk-a3")
FIRMWARE = "spk-fw1"  # a speaker running the real firmware in MicroPython


@pytest.fixture
async def centre(stack: LocalStack) -> AsyncIterator[CentreStandIn]:
    async with CentreStandIn(stack) as c:
        yield c


def rejected(stack: LocalStack) -> dict[str, int]:
    got: dict[str, int] = stack.gateway_metrics().get("rejected", {})
    return got


def tamper(payload: bytes, rng: random.Random) -> bytes:
    """Change what the centre signed, keeping its signature: the text, the target, the expiry,
    the priority or the gateway."""
    sig, body_bytes = payload.split(b" ", 1)
    body: dict[str, Any] = json.loads(body_bytes)
    change = rng.choice(("text", "area", "expires", "severity", "gw", "id"))
    if change == "text":
        body["text"] = "紧急通知：水库决堤，立即撤离！"
    elif change == "area":
        body["area"] = [{"village": VILLAGE, "groups": [], "speakers": ["spk-a3"]}]
    elif change == "expires":
        body["expires"] += 3_600_000
    elif change == "severity":
        body["severity"], body["urgency"] = "Extreme", "Immediate"
    elif change == "gw":
        body["gw"] = "gw-other"
    else:
        body["id"] = body["id"] + "x"
    return sig + b" " + encode_json(body)


async def test_a_thousand_attack_broadcasts_play_nowhere(
    stack: LocalStack, centre: CentreStandIn
) -> None:
    assert stack.village_broker is not None
    rng = random.Random(20171407)
    speakers: list[ProtoSpeaker] = []
    for dev_id in SPEAKERS:
        key, password = stack.register_device(dev_id, f"h-{dev_id}", role="speaker")
        spk = ProtoSpeaker(dev_id, key, HOST, stack.village_broker.port, password)
        await spk.connect()
        speakers.append(spk)
    firmware = stack.add_speaker(FIRMWARE, "h-fw1")
    firmware.start()
    firmware.wait_for(lambda st: st["connected"], 15)
    fw_key = bytes.fromhex(firmware.config["key"])
    everyone = (*SPEAKERS, FIRMWARE)
    key, password = stack.register_device("btn-evil", "h-evil")
    evil = ProtoDevice("btn-evil", key, HOST, stack.village_broker.port, password)
    await evil.connect()
    # A login with the gateway's rights (a stolen service password). Not the gateway's own:
    # the broker makes the client id the user name, so that one would take the gateway's place.
    stack.village_broker.write_acl(["gateway", "svc-insider"])
    stack.village_broker.add_user("svc-insider", "stolen")
    stack.village_broker.reload()
    insider = MqttClient("svc-insider", HOST, stack.village_broker.port,
                         username="svc-insider", password="stolen")
    await insider.connect()
    sent = {"centre": 0, "village_device": 0, "village_insider": 0}
    genuine: list[str] = []
    try:
        # Genuine broadcasts, captured by the attacker as they travel.
        captured: list[bytes] = []
        for i in range(3):
            body = broadcast(stack.gateway_id, VILLAGE, text=f"第{i + 1}次正式通知。")
            captured.append(await centre.send(body))
            genuine.append(body["id"])
        for bc_id in genuine:
            await centre.wait_states(bc_id, {s: "played" for s in everyone}, timeout=30)

        forger = generate_private_key(stack.root / "forger.key")
        topic = centre.topic()
        expected: dict[str, int] = {}

        async def at_centre(payload: bytes, reason: str, on_topic: str = topic) -> None:
            await centre.publish_raw(on_topic, payload)
            expected[reason] = expected.get(reason, 0) + 1
            sent["centre"] += 1

        # 1. Signed by someone else, or not signed at all.
        for i in range(150):
            body = broadcast(stack.gateway_id, VILLAGE, severity="Extreme", urgency="Immediate",
                             text=f"伪造警报{i}")
            await at_centre(centre.sign(body, key=forger), "bc_bad_signature")
        for _ in range(50):
            junk = os.urandom(rng.randrange(1, 300))
            await at_centre(rng.choice((junk, b"0" * 128 + b" {}", b"")), "bc_bad_signature")
        # 2. What the centre really signed, changed: text, target, expiry, priority, gateway, id.
        for i in range(200):
            await at_centre(tamper(captured[i % len(captured)], rng), "bc_bad_signature")
        # 3. What the centre really signed, replayed as it was.
        for i in range(150):
            await at_centre(captured[i % len(captured)], "bc_replay")
        # 4. Signed by the centre but expired (an old broadcast kept and played back later).
        for i in range(50):
            old = broadcast(stack.gateway_id, VILLAGE, valid_s=-(i + 1))
            await at_centre(centre.sign(old), "bc_expired")
        # 5. Signed by the centre for another gateway, replayed onto this one.
        for _ in range(50):
            other = broadcast("gw-neighbour", VILLAGE)
            await at_centre(centre.sign(other, topic="ok/v1/gw/gw-neighbour/down/bc"),
                            "bc_bad_signature")
            await at_centre(centre.sign(other, topic=topic), "bc_wrong_gateway")

        # 6. A provisioned device (a button) on the village broker: forged copies straight to
        #    the speakers' topics. The broker's ACL drops them.
        fake_key = bytes(32)
        for i in range(200):
            target = everyone[i % len(everyone)]
            fields = {"id": f"evil-{i}", "mt": "Alert", "st": "Actual", "pri": 0,
                      "exp": now_ms() + 600_000, "text": "假警报"}
            t, p = okproto.encode_bc(fake_key, target, now_ms() + 10**6, fields)
            await evil.publish_raw(t, p)
            sent["village_device"] += 1
        # 7. A service password stolen, but no device key: forged MACs, and genuine
        #    copies replayed (the attacker sniffed them; rebuilt here with the speaker's key).
        fw_sent = 0
        for i in range(20):  # the firmware speaker gets its share too
            fields = {"id": f"insider-fw-{i}", "mt": "Alert", "st": "Actual", "pri": 0,
                      "exp": now_ms() + 600_000, "text": "假警报"}
            bad_key = os.urandom(32) if i % 2 else fw_key
            counter = now_ms() + 10**6 if i % 2 else 1000 + i  # forged MAC, or an old counter
            t, p = okproto.encode_bc(bad_key, FIRMWARE, counter, fields)
            await insider.publish(t, p, qos=1)
            sent["village_insider"] += 1
            fw_sent += 1
        for i in range(150):
            target = speakers[i % len(speakers)]
            fields = {"id": f"insider-{i}", "mt": "Alert", "st": "Actual", "pri": 0,
                      "exp": now_ms() + 600_000, "text": "假警报"}
            t, p = okproto.encode_bc(os.urandom(32), target.id, now_ms() + 10**6, fields)
            await insider.publish(t, p, qos=1)
            sent["village_insider"] += 1
        for i in range(150):
            target = speakers[i % len(speakers)]
            old = bcpolicy.speaker_fields(
                bcpolicy.parse_broadcast(json.loads(captured[0].split(b" ", 1)[1]),
                                         stack.gateway_id, stack.gateway_id, 0)
            )
            old["id"] = f"replayed-{i}"
            t, p = okproto.encode_bc(target.key, target.id, 1000 + i, old)  # an old counter
            await insider.publish(t, p, qos=1)
            sent["village_insider"] += 1

        # Genuine traffic still flows after the storm.
        last = broadcast(stack.gateway_id, VILLAGE, text="演练结束。")
        await centre.send(last)
        genuine.append(last["id"])
        await centre.wait_states(last["id"], {s: "played" for s in everyone}, timeout=30)
        await wait_for(
            lambda: all(rejected(stack).get(r, 0) >= n for r, n in expected.items()), 20
        )
        await wait_for(lambda: sum(s.log.rejected for s in speakers) >= 300, 20)
        await wait_for(lambda: sum(firmware.status()["refused"].values()) >= fw_sent, 20)
        await asyncio.sleep(0.5)

        total = sum(sent.values())
        assert total >= 1000, sent
        for spk in speakers:
            assert sorted(spk.log.played) == sorted(genuine), spk.id
        fw_played = [p["id"] for p in firmware.played() if p["result"] == "played"]
        assert sorted(fw_played) == sorted(genuine)
        assert sum(firmware.status()["refused"].values()) == fw_sent
        got = rejected(stack)
        for reason, n in expected.items():
            assert got.get(reason, 0) == n, (reason, got)
        # The insider's messages reached the speakers and were each refused there; the
        # device's never got past the broker.
        assert sum(s.log.rejected for s in speakers) == sent["village_insider"] - fw_sent
        assert stack.gateway_proc is not None and stack.gateway_proc.running
    finally:
        for s in speakers:
            await s.close()
        await evil.close()
        try:
            await insider.disconnect()
        except MqttError:
            pass
