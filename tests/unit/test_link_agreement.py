"""Gateway and centre agree on the link (docs/protocol.md §6, §8.1, §8.3): what one side sends,
the other accepts, because both use the same codec (protocol/) with one value per limit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast, get_args

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from centre import bcreports, frames
from centre import broadcast as centre_bc
from centre.broadcast import BroadcastError, BroadcastIn, Reference
from gateway import bcpolicy
from gateway.broadcasts import BroadcastSide
from gateway.config import CentreBrokerConfig, GatewayConfig, VillageBrokerConfig
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store import Store, now_ms
from gateway.village import VillageSide
from harness.fakegateway import FakeBroker, FakeClient, wait_until
from protocol import broadcast, topics
from protocol.signed import verify_frame
from transport.brokers import CENTRE_MAX_PACKET
from transport.mqtt import MqttClient

NOW = 1_767_225_600_000
CENTRE_KEY = Ed25519PrivateKey.generate()


def test_the_centre_form_offers_exactly_the_wire_values() -> None:
    assert get_args(centre_bc.Status) == broadcast.STATUSES
    assert get_args(centre_bc.MsgType) == broadcast.MSG_TYPES
    assert get_args(centre_bc.Urgency) == broadcast.URGENCIES
    assert get_args(centre_bc.Severity) == broadcast.SEVERITIES
    assert get_args(centre_bc.Certainty) == broadcast.CERTAINTIES
    assert get_args(centre_bc.Clip) == broadcast.CLIPS


def _largest_request(**over: Any) -> BroadcastIn:
    fields: dict[str, Any] = {
        "by": "wang",
        "msgType": "Update",
        "references": [f"bc-{i}" for i in range(broadcast.MAX_REFERENCES)],
        "urgency": "Immediate",
        "severity": "Extreme",
        "certainty": "Observed",
        "valid_for_s": 3600,
        "area": [{"village": f"v-{i:03d}"} for i in range(broadcast.MAX_AREAS)],
        "text": "水" * 500,
        "clip": "siren",
        "repeat": 5,
    }
    return BroadcastIn.model_validate(fields | over)


def test_a_gateway_accepts_the_largest_copy_the_centre_sends() -> None:
    # 100 villages served by one gateway and 8 references: the gateway used to refuse more than
    # 64 villages (bad_field), so nothing played in any of them.
    refs = [Reference(f"bc-{i}", "centre:wang", NOW - 60_000) for i in range(broadcast.MAX_REFERENCES)]
    bc = centre_bc.build(_largest_request(), centre_id="centre", now=NOW, references=refs)
    plan = centre_bc.route(bc.area, {"gw-1": frozenset(a.village for a in bc.area)})
    topic, payload = centre_bc.signed_copy(CENTRE_KEY, bc, "gw-1", plan["gw-1"])
    body = verify_frame(CENTRE_KEY.public_key(), topic, payload, broadcast.MAX_FRAME)
    got = bcpolicy.parse_broadcast(body, "gw-1", topics.parse_down(topic)[0], NOW)
    assert len(got.areas) == 100 and len(got.references) == 8 and got.text == "水" * 500


def test_the_centre_refuses_to_sign_a_copy_a_gateway_would_refuse() -> None:
    # A Cancel without an area takes the union of the referenced broadcasts' areas; 201 groups
    # in one village is more than §8.1 allows, and the gateway would refuse the copy silently.
    area = (centre_bc.Area("v-1", tuple(f"g{i}" for i in range(201))),)
    cancel = centre_bc.Broadcast(
        id="bc-9", sender="centre:wang", sent=NOW, status="Actual", msg_type="Cancel",
        urgency="Immediate", severity="Extreme", certainty="Observed", expires=NOW + 60_000,
        area=area, language="zh-CN", text="", references=(Reference("bc-1", "centre:wang", NOW),),
    )
    with pytest.raises(BroadcastError, match="would be refused: area groups"):
        centre_bc.signed_copy(CENTRE_KEY, cancel, "gw-1", area)


async def test_reports_of_many_long_named_speakers_fit_the_centre_broker(tmp_path: Path) -> None:
    # 200 cancelled copies for speakers with 32-character ids used to go out as one report of
    # 16,430 bytes: over the centre broker's 16,384-byte packet limit, so the broker dropped the
    # gateway's connection, and the same report went out again after every reconnect.
    gw = "g" * 32
    cfg = GatewayConfig(
        gw, "v-1", tmp_path, "00" * 32, VillageBrokerConfig("localhost", 1, "u", "p"),
        CentreBrokerConfig("localhost", 1, tmp_path / "ca", tmp_path / "cert", tmp_path / "key"),
    )
    store = Store(tmp_path / "gw.db")
    await store.start()
    gw_key = Ed25519PrivateKey.generate()
    try:
        registry, metrics = Registry(), Metrics()
        side = BroadcastSide(
            cfg, store, registry, metrics, VillageSide(cfg, store, registry, metrics), gw_key,
            CENTRE_KEY.public_key(),
        )
        await side.init()
        body = {
            "id": "b" * 40, "gw": gw, "sender": "centre:wang", "sent": now_ms(), "status": "Actual",
            "msgType": "Alert", "urgency": "Immediate", "severity": "Extreme", "certainty": "Observed",
            "expires": now_ms() + 3_600_000, "area": [{"village": "v-1"}], "text": "t",
        }
        bc = broadcast.parse(body, gw, gw, now_ms())
        speakers = [f"spk-{i:028d}" for i in range(200)]
        assert await side.bcs.accept(bc, speakers, set(speakers), now_ms())
        await side.bcs.cancel_undelivered((bc.id,), now_ms())
        client = FakeClient(FakeBroker())
        await client.connect()
        side.centre_client = lambda: cast(MqttClient, client)
        task = asyncio.create_task(side.run())
        got: dict[str, str] = {}

        def all_reported() -> bool:
            for topic, payload in client.broker.published:
                header = 1 + 3 + 2 + len(topic.encode()) + 2  # PUBLISH QoS 1: type, length, topic, id
                assert header + len(payload) <= CENTRE_MAX_PACKET, len(payload)
                g, _, body = frames.open_uplink(topic, payload, lambda g: gw_key.public_key())
                for r in bcreports.parse_reports(body, g).reports:
                    got[r.device] = r.state
            return len(got) == 200

        try:
            await wait_until(all_reported, within=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert set(got) == set(speakers) and set(got.values()) == {"cancelled"}
        assert len(client.broker.published) == 2
    finally:
        await store.close()
