"""Checks on gateway messages at the centre (§6), without I/O: every input is either accepted
or refused with exactly one reason."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from centre import frames
from centre.store import Event
from harness.fakegateway import event_body, signed_event, signed_heartbeat
from protocol.signed import encode_json, sign_frame, verify_frame

GW_KEY = Ed25519PrivateKey.generate()
GW_PUB = GW_KEY.public_key()


def key_for(gw: str) -> Ed25519PublicKey | None:
    return GW_PUB if gw == "gw-1" else None


def reason(topic: str, payload: bytes) -> str:
    with pytest.raises(frames.Rejected) as info:
        gw, kind, body = frames.open_uplink(topic, payload, key_for)
        if kind == "event":
            frames.parse_event(body, gw)
        else:
            frames.parse_heartbeat(body, gw)
    return info.value.reason


def test_a_good_event_parses() -> None:
    topic, payload = signed_event(GW_KEY, event_body("gw-1", "btn-1", 7, dev_ts=1_700_000_000))
    gw, kind, body = frames.open_uplink(topic, payload, key_for)
    ev = frames.parse_event(body, gw)
    assert (gw, kind, ev.id, ev.kind, ev.counter, ev.dev_ts) == (
        "gw-1", "event", "gw-1:btn-1:7", "alarm", 7, 1_700_000_000
    )


def test_a_good_cancel_and_heartbeat_parse() -> None:
    topic, payload = signed_event(GW_KEY, event_body("gw-1", "btn-1", 8, "cancel", ref=7))
    gw, _, body = frames.open_uplink(topic, payload, key_for)
    assert frames.parse_event(body, gw).ref == "gw-1:btn-1:7"
    topic, payload = signed_heartbeat(GW_KEY, "gw-1", ts=5, outbox=-1, devices=3)
    gw, kind, body = frames.open_uplink(topic, payload, key_for)
    assert kind == "hb" and frames.parse_heartbeat(body, gw) == frames.Heartbeat("gw-1", 5, -1, 3)


def test_refusals_name_their_reason() -> None:
    good = event_body("gw-1", "btn-1", 7)
    topic, payload = signed_event(GW_KEY, good)
    assert reason("ok/v1/gw/gw-1/up/other", payload) == "bad_topic"
    assert reason("ok/v1/gw/GW!/up/event", payload) == "bad_topic"
    assert reason("ok/v1/dev/btn-1/up/alarm", payload) == "bad_topic"
    # Another gateway's key, or a body changed after signing.
    _, forged = signed_event(Ed25519PrivateKey.generate(), good)
    assert reason(topic, forged) == "bad_signature"
    assert reason(topic, payload.replace(b'"counter":7', b'"counter":8')) == "bad_signature"
    # A message signed for one topic replayed on another is refused too.
    _, hb = signed_heartbeat(GW_KEY, "gw-1", ts=1)
    assert reason(topic, hb) == "bad_signature"
    # Signed by gw-1 but not enrolled under that topic.
    t2, p2 = signed_event(GW_KEY, event_body("gw-2", "btn-1", 7))
    assert reason(t2, p2) == "unknown_gateway"
    assert reason(topic, b"x" * 200) == "malformed"
    assert reason(topic, b"0" * 9000) == "oversized"


def test_the_body_must_name_the_topics_gateway() -> None:
    body = event_body("gw-2", "btn-1", 7)
    topic, payload = signed_event(GW_KEY, body, gw="gw-1")
    assert reason(topic, payload) == "topic_mismatch"
    hb_topic = frames.heartbeat_topic("gw-1")
    hb = encode_json({"gw": "gw-2", "ts": 1, "outbox": 0, "devices": 0})
    assert reason(hb_topic, sign_frame(GW_KEY, hb_topic, hb)) == "topic_mismatch"


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "fire"},
        {"device": "BTN 1"},
        {"counter": 0},
        {"counter": 7.0},
        {"counter": True},
        {"id": "gw-1:btn-1:8"},
        {"seq": -1},
        {"seq": "1"},
        {"gw_ts": None},
        {"village": ""},
        {"village": 5},
        {"household": "x" * 200},
        {"dev_ts": "soon"},
        {"ref": "gw-1:btn-1:3"},  # a ref on an alarm
    ],
)
def test_bad_fields_are_refused(change: dict[str, Any]) -> None:
    body = {**event_body("gw-1", "btn-1", 7), **change}
    topic, payload = signed_event(GW_KEY, body, gw="gw-1")
    assert reason(topic, payload) == "bad_field"


@pytest.mark.parametrize("ref", [None, 5, "gw-1:btn-2:3", "gw-2:btn-1:3", "gw-1:btn-1:x", "gw-1:btn-1:0"])
def test_a_cancel_may_only_cancel_its_own_devices_alarm(ref: object) -> None:
    body = {**event_body("gw-1", "btn-1", 7, "cancel"), "ref": ref}
    topic, payload = signed_event(GW_KEY, body, gw="gw-1")
    assert reason(topic, payload) == "bad_field"


def test_random_bytes_never_raise_anything_but_rejected() -> None:
    rng = random.Random(1)
    topic, payload = signed_event(GW_KEY, event_body("gw-1", "btn-1", 7))
    for _ in range(500):
        data = bytearray(payload)
        for _ in range(rng.randint(1, 5)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            gw, _, body = frames.open_uplink(topic, bytes(data), key_for)
            frames.parse_event(body, gw)
        except frames.Rejected:
            pass


def test_bodies_that_are_signed_but_not_objects_are_refused() -> None:
    topic = frames.event_topic("gw-1")
    for body in (b"[1,2]", b"\xff\xfe", b"null"):
        assert reason(topic, sign_frame(GW_KEY, topic, body)) == "bad_json"


def _event(**kw: Any) -> Event:
    base: dict[str, Any] = dict(
        id="gw-1:btn-1:7", gw="gw-1", seq=1, kind="alarm", device="btn-1", counter=7, ref=None,
        village="v", household="h", gw_ts=1, dev_ts=None, dev_up=None, received_at=1000,
        state="open", acked_by=None, acked_note=None, acked_at=None, cancelled_at=None,
    )
    base.update(kw)
    return Event(**base)


def test_acks_carry_the_current_state_signed_by_the_centre() -> None:
    centre = Ed25519PrivateKey.generate()
    topic, payload = frames.signed_ack(centre, "gw-1", frames.ack_body(_event()))
    assert topic == "ok/v1/gw/gw-1/down/ack"
    assert verify_frame(centre.public_key(), topic, payload) == {
        "id": "gw-1:btn-1:7", "s": "received", "at": 1000
    }
    acked = _event(state="acked", acked_by="Li", acked_note="coming", acked_at=2000)
    _, payload = frames.signed_ack(centre, "gw-1", frames.ack_body(acked))
    body = json.loads(payload[129:])
    assert body == {"id": "gw-1:btn-1:7", "s": "acked", "at": 2000, "by": "Li", "note": "coming"}
