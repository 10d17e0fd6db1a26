"""Broadcasts from the centre's API to speakers running the real firmware (MicroPython unix
port, heap limit as on an ESP32), and every speaker's state back in the centre's report."""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness.simspeaker import SimSpeaker
from harness.stack import LocalStack

pytestmark = pytest.mark.integration

NOTICE = "村委会通知：明天上午九点在村部开会，请各户派一人参加。"


def send(stack: LocalStack, **fields: Any) -> str:
    body: dict[str, Any] = {
        "by": "Li",
        "urgency": "Expected",
        "severity": "Minor",
        "certainty": "Observed",
        "valid_for_s": 600,
        "area": [{"village": stack.village}],
        "text": NOTICE,
    }
    body.update(fields)
    created: dict[str, Any] = stack.api("POST", "/api/broadcasts", body)
    return str(created["id"])


def report(stack: LocalStack, bc_id: str) -> dict[str, str]:
    detail = stack.api("GET", f"/api/broadcasts/{bc_id}")
    return {s["device"]: s["state"] for s in detail["speakers"]}


def wait_report(stack: LocalStack, bc_id: str, want: dict[str, str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    got: dict[str, str] = {}
    while time.monotonic() < deadline:
        got = report(stack, bc_id)
        if all(got.get(d) == s for d, s in want.items()):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{bc_id}: wanted {want}, the centre shows {got}")


def start(*speakers: SimSpeaker) -> None:
    for s in speakers:
        s.start()
    for s in speakers:
        s.wait_for(lambda st: st["connected"], 10)


def played_ids(spk: SimSpeaker, result: str = "played") -> list[str]:
    return [p["id"] for p in spk.played() if p["result"] == result]


def test_a_village_broadcast_plays_on_every_targeted_speaker_and_no_other(stack: LocalStack) -> None:
    north = [stack.add_speaker(f"spk-n{i}", f"h-n{i}", groups=["north"]) for i in range(2)]
    south = stack.add_speaker("spk-s1", "h-s1", groups=["south"])
    start(*north, south)
    whole = send(stack)
    wait_report(stack, whole, {s.device_id: "played" for s in [*north, south]})
    only_north = send(stack, area=[{"village": stack.village, "groups": ["north"]}])
    wait_report(stack, only_north, {s.device_id: "played" for s in north})
    time.sleep(1.0)  # room for a wrong copy to arrive and play
    for s in north:
        assert played_ids(s) == [whole, only_north]
        entry = s.played()[0]
        assert entry["text"] == NOTICE  # the Chinese text reached the TTS module intact
    assert played_ids(south) == [whole]
    assert set(report(stack, only_north)) == {s.device_id for s in north}


def test_an_urgent_broadcast_interrupts_a_routine_one_which_then_plays_again_from_the_start(
    stack: LocalStack,
) -> None:
    # Slow speech, so the routine notice is still playing when the warning comes.
    spk = stack.add_speaker("spk-p1", "h-p1", sim_ms_per_char=150)
    start(spk)
    routine = send(stack)
    spk.wait_state(routine, "playing", 15)
    urgent = send(stack, severity="Extreme", urgency="Immediate", clip="siren",
                  text="山洪预警：请立即撤离到高处！", confirm_extreme=True)
    wait_report(stack, urgent, {"spk-p1": "played"}, timeout=30)
    wait_report(stack, routine, {"spk-p1": "played"}, timeout=60)
    log = [(p["id"], p["result"]) for p in spk.played()]
    assert log == [(routine, "preempted"), (urgent, "played"), (routine, "played")]
    assert spk.played()[1]["clip"] == "siren"


def test_an_offline_speaker_gets_a_valid_broadcast_when_it_returns_never_an_expired_one(
    stack: LocalStack,
) -> None:
    spk = stack.add_speaker("spk-o1", "h-o1")
    start(spk)
    spk.set_network(False)
    spk.wait_for(lambda st: not st["connected"], 10)
    short = send(stack, valid_for_s=3, text="三秒后过期的通知。")
    lasting = send(stack, text="仍然有效的通知。")
    time.sleep(4.0)  # the short one expires while the speaker is away
    spk.set_network(True)
    wait_report(stack, lasting, {"spk-o1": "played"}, timeout=30)
    wait_report(stack, short, {"spk-o1": "expired"}, timeout=30)
    time.sleep(0.5)
    assert played_ids(spk) == [lasting]
    assert short not in [p["id"] for p in spk.played()]


def test_a_cancel_from_the_centre_stops_a_broadcast_while_it_plays(stack: LocalStack) -> None:
    spk = stack.add_speaker("spk-c1", "h-c1", sim_ms_per_char=200)
    start(spk)
    bc = send(stack)
    spk.wait_state(bc, "playing", 15)
    stack.api("POST", f"/api/broadcasts/{bc}/cancel", {"by": "Li", "note": "sent by mistake"})
    wait_report(stack, bc, {"spk-c1": "cancelled"}, timeout=20)
    assert played_ids(spk) == []
    assert [p["result"] for p in spk.played()] == ["cancelled"]
