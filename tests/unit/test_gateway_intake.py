"""The gateway's per-message check: every reason of §3.4 and the replay rule of §5."""

from __future__ import annotations

import pytest

from device_fw import okproto
from gateway import intake
from gateway.registry import Device, Registry

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    r.devices["btn-1"] = Device("btn-1", KEY, "button", "v1", "h1", True)
    r.devices["btn-off"] = Device("btn-off", KEY, "button", "v1", "h2", False)
    return r


def alarm(counter: int, key: bytes = KEY, dev: str = "btn-1") -> tuple[str, bytes]:
    topic, payload = okproto.encode_up(key, dev, "alarm", counter, {"up": 5})
    return topic, payload


def test_good_alarm_is_accepted(reg: Registry) -> None:
    res = intake.check(reg, *alarm(7))
    assert isinstance(res, intake.Accepted)
    assert (res.device.id, res.kind, res.counter) == ("btn-1", "alarm", 7)


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("ok/v1/dev/btn-1/up/alarm", b"x" * 600, "oversized"),
        ("ok/v1/dev/btn-1/up/fire", b"a" * 64 + b" {}", "bad_topic"),
        ("ok/v2/dev/btn-1/up/alarm", b"a" * 64 + b" {}", "bad_topic"),
        ("ok/v1/dev/btn-1/up/alarm", b"not a frame", "malformed"),
        ("ok/v1/dev/btn-1/up/alarm", b"A" * 64 + b" {}", "malformed"),
        ("ok/v1/dev/nobody/up/alarm", b"a" * 64 + b" {}", "unknown_device"),
        ("ok/v1/dev/btn-1/up/alarm", b"a" * 64 + b" {}", "bad_mac"),
    ],
)
def test_rejections_carry_their_reason(
    reg: Registry, topic: str, payload: bytes, reason: str
) -> None:
    res = intake.check(reg, topic, payload)
    assert isinstance(res, intake.Rejected)
    assert res.reason == reason


def test_wrong_key_is_bad_mac(reg: Registry) -> None:
    res = intake.check(reg, *alarm(3, key=OTHER_KEY))
    assert isinstance(res, intake.Rejected) and res.reason == "bad_mac"


def test_message_moved_to_another_topic_is_bad_mac(reg: Registry) -> None:
    _topic, payload = alarm(3)
    res = intake.check(reg, "ok/v1/dev/btn-1/up/test", payload)
    assert isinstance(res, intake.Rejected) and res.reason == "bad_mac"


def test_revoked_device_is_refused_and_says_so(reg: Registry) -> None:
    res = intake.check(reg, *alarm(3, dev="btn-off"))
    assert isinstance(res, intake.Rejected)
    assert res.reason == "unknown_device" and "revoked" in res.detail


def test_body_for_another_device_is_topic_mismatch(reg: Registry) -> None:
    topic = okproto.topic_up("btn-1", "alarm")
    body = okproto.encode_body([("t", "alarm"), ("d", "btn-2"), ("c", 4)])
    res = intake.check(reg, topic, okproto.frame(KEY, topic, body))
    assert isinstance(res, intake.Rejected) and res.reason == "topic_mismatch"


def test_heartbeat_replay_is_rejected(reg: Registry) -> None:
    hb = okproto.encode_up(KEY, "btn-1", "hb", 10, {"bat": 90})
    assert isinstance(intake.check(reg, *hb), intake.Accepted)
    again = intake.check(reg, *hb)
    assert isinstance(again, intake.Rejected) and again.reason == "replay"
    older = intake.check(reg, *okproto.encode_up(KEY, "btn-1", "hb", 9, {}))
    assert isinstance(older, intake.Rejected) and older.reason == "replay"
    assert isinstance(intake.check(reg, *okproto.encode_up(KEY, "btn-1", "hb", 11, {})), intake.Accepted)


def test_event_below_floor_is_replay_but_resend_is_accepted(reg: Registry) -> None:
    reg.event_floor["btn-1"] = 100
    res = intake.check(reg, *alarm(100))
    assert isinstance(res, intake.Rejected) and res.reason == "replay"
    # Above the floor the same alarm may arrive any number of times: the store deduplicates.
    assert isinstance(intake.check(reg, *alarm(101)), intake.Accepted)
    assert isinstance(intake.check(reg, *alarm(101)), intake.Accepted)
