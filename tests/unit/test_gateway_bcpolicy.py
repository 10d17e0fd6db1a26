"""The gateway's broadcast rules (§8.1.1, §8.2) without I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from device_fw import okproto
from gateway import bcpolicy
from gateway.bcpolicy import BroadcastRejected
from gateway.registry import Device

NOW = 1_767_225_600_000
GW = "gw-1"


def body(**over: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "id": "bc-1",
        "gw": GW,
        "sender": "centre/staff-1",
        "sent": NOW,
        "status": "Actual",
        "msgType": "Alert",
        "references": [],
        "urgency": "Immediate",
        "severity": "Extreme",
        "certainty": "Observed",
        "expires": NOW + 60_000,
        "area": [{"village": "v-1", "groups": [], "speakers": []}],
        "language": "zh-CN",
        "text": "山洪预警，请立即转移到高处。",
        "clip": "siren",
        "repeat": 2,
    }
    b.update(over)
    return b


def dev(dev_id: str, village: str = "v-1", groups: tuple[str, ...] = (), role: str = "speaker",
        enabled: bool = True) -> Device:
    return Device(dev_id, b"k" * 32, role, village, "h-1", enabled, groups)


def reason_of(**over: Any) -> str:
    with pytest.raises(BroadcastRejected) as exc:
        bcpolicy.parse_broadcast(body(**over), GW, GW, NOW)
    return exc.value.reason


def test_a_good_broadcast_parses_and_gets_its_priority() -> None:
    bc = bcpolicy.parse_broadcast(body(), GW, GW, NOW)
    assert bc.priority == 0 and bc.repeat == 2 and bc.areas[0].village == "v-1"
    assert bcpolicy.parse_broadcast(body(severity="Severe", urgency="Expected"), GW, GW, NOW).priority == 1
    assert bcpolicy.parse_broadcast(body(severity="Minor"), GW, GW, NOW).priority == 2


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"gw": "gw-2"}, "wrong_gateway"),
        ({"expires": NOW}, "expired"),
        ({"expires": NOW - 1}, "expired"),
        ({"id": "bad id"}, "bad_field"),
        ({"id": "x" * 41}, "bad_field"),
        ({"status": "Draft"}, "bad_field"),
        ({"msgType": "Ack"}, "bad_field"),
        ({"msgType": "Cancel", "references": []}, "bad_field"),
        ({"urgency": "Soon"}, "bad_field"),
        ({"severity": None}, "bad_field"),
        ({"certainty": 3}, "bad_field"),
        ({"repeat": 0}, "bad_field"),
        ({"repeat": 6}, "bad_field"),
        ({"repeat": True}, "bad_field"),
        ({"clip": "dog"}, "bad_field"),
        ({"text": "x" * 501}, "bad_field"),
        ({"text": "\U0001f600"}, "bad_field"),
        ({"text": "a\x07b"}, "bad_field"),
        ({"text": "", "clip": None}, "bad_field"),
        ({"area": []}, "bad_field"),
        ({"area": [{"village": "V 1"}]}, "bad_field"),
        ({"area": [{"village": "v-1", "speakers": ["ok", "Not Ok"]}]}, "bad_field"),
        ({"expires": 1.5e12}, "bad_field"),
        ({"sender": ""}, "bad_field"),
        ({"references": "bc-0"}, "bad_field"),
    ],
)
def test_each_bad_broadcast_is_refused_with_its_reason(over: dict[str, Any], reason: str) -> None:
    assert reason_of(**over) == reason


def test_a_copy_sent_on_another_gateways_topic_is_refused() -> None:
    with pytest.raises(BroadcastRejected) as exc:
        bcpolicy.parse_broadcast(body(), GW, "gw-2", NOW)
    assert exc.value.reason == "wrong_gateway"


def test_targets_follow_villages_groups_and_speakers() -> None:
    devices = [
        dev("spk-a", groups=("north",)),
        dev("spk-b", groups=("south", "school")),
        dev("spk-c"),
        dev("spk-x", village="v-2"),
        dev("spk-off", enabled=False),
        dev("btn-1", role="button"),
    ]
    whole = bcpolicy.parse_broadcast(body(), GW, GW, NOW)
    assert bcpolicy.targets(whole, devices) == ["spk-a", "spk-b", "spk-c"]
    school = bcpolicy.parse_broadcast(
        body(area=[{"village": "v-1", "groups": ["school"], "speakers": ["spk-c"]}]), GW, GW, NOW
    )
    assert bcpolicy.targets(school, devices) == ["spk-b", "spk-c"]
    two = bcpolicy.parse_broadcast(
        body(area=[{"village": "v-2"}, {"village": "v-1", "groups": ["north"]}]), GW, GW, NOW
    )
    assert bcpolicy.targets(two, devices) == ["spk-a", "spk-x"]
    # A group name in another village does not reach this village's speakers.
    other = bcpolicy.parse_broadcast(body(area=[{"village": "v-2", "groups": ["north"]}]), GW, GW, NOW)
    assert bcpolicy.targets(other, devices) == []


def test_the_speaker_copy_is_a_valid_frame_that_round_trips() -> None:
    bc = bcpolicy.parse_broadcast(body(), GW, GW, NOW)
    key = bytes(range(32))
    topic, payload = okproto.encode_bc(key, "spk-a", NOW + 1, bcpolicy.speaker_fields(bc))
    got = okproto.open_down(key, "spk-a", topic, payload)
    assert got["text"] == bc.text and got["pri"] == 0 and got["rep"] == 2 and got["clip"] == "siren"
    assert payload.isascii()  # §8.2: non-ASCII text travels as \\uXXXX escapes


def test_the_longest_chinese_broadcast_fits_a_speaker_copy() -> None:
    bc = bcpolicy.parse_broadcast(
        body(id="A" * 40, msgType="Update", references=["B" * 40], text="水" * 500, status="Exercise"),
        GW, GW, NOW,
    )
    topic, payload = okproto.encode_bc(b"k" * 32, "s" * 32, okproto.MAX_INT - 1, bcpolicy.speaker_fields(bc))
    assert len(payload) <= okproto.MAX_BC_PAYLOAD
    assert okproto.open_down(b"k" * 32, "s" * 32, topic, payload)["ref"] == "B" * 40


def test_a_cancel_copy_carries_the_reference_and_no_text() -> None:
    bc = bcpolicy.parse_broadcast(
        body(id="bc-2", msgType="Cancel", references=["bc-1"], text="", clip=None), GW, GW, NOW
    )
    fields = bcpolicy.speaker_fields(bc)
    assert fields["mt"] == "Cancel" and fields["ref"] == "bc-1" and "text" not in fields


def test_rows_round_trip() -> None:
    bc = bcpolicy.parse_broadcast(body(), GW, GW, NOW)
    row = json.loads(json.dumps(bcpolicy.to_row(bc)))
    assert bcpolicy.from_row(row) == bc
