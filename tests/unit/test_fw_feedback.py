"""What the button shows and sounds for each state (docs/protocol.md §7), sampled from
device_fw/feedback.py on the MicroPython unix port with a recording HAL."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

TIMES = [0, 50, 150, 250, 350, 450, 650, 950, 1050, 1250, 1450, 2500, 2950, 3100, 10050, 10550, 59000, 61000]

RUNNER = r"""
import sys, json
from feedback import Feedback, PATTERNS

class Hal:
    def __init__(self):
        self.led_now = None
        self.buzz_now = False
    def led(self, colour):
        self.led_now = colour
    def buzzer(self, on):
        self.buzz_now = on

times = json.loads(sys.argv[1])
out = {}
for name in PATTERNS:
    hal = Hal()
    fb = Feedback(hal)
    fb.show(name)
    rows = []
    for t in times:
        fb.step(t)
        rows.append([t, hal.led_now, hal.buzz_now, fb.name])
    out[name] = rows
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, tuple[Any, bool, str]]]:
    d = tmp_path_factory.mktemp("feedback")
    script = fw.write_script(d, "run.py", RUNNER)
    (out,) = fw.micropython_json_lines(script, json.dumps(TIMES))
    return {name: {t: (led, buzz, cur) for t, led, buzz, cur in rows} for name, rows in out.items()}


def leds(tl: dict[int, tuple[Any, bool, str]], *times: int) -> list[Any]:
    return [tl[t][0] for t in times]


def buzz(tl: dict[int, tuple[Any, bool, str]], *times: int) -> list[bool]:
    return [tl[t][1] for t in times]


def test_every_state_has_a_pattern(timeline: dict[str, Any]) -> None:
    want = {"idle", "sending", "stored", "received", "acked", "failed", "cancelled", "test_ok"}
    assert set(timeline) == want


def test_sending_is_fast_amber_blink_with_one_short_beep(timeline: dict[str, Any]) -> None:
    tl = timeline["sending"]
    assert leds(tl, 50, 150, 250, 350) == ["amber", None, "amber", None]
    assert buzz(tl, 50, 150, 250, 10050) == [True, False, False, False]


def test_stored_is_slow_green_blink_with_two_beeps(timeline: dict[str, Any]) -> None:
    tl = timeline["stored"]
    assert leds(tl, 50, 250, 650, 950, 1050, 1250) == ["green", None, None, None, "green", None]
    assert buzz(tl, 50, 150, 250, 350) == [True, False, True, False]


def test_received_is_green_double_blink_with_three_beeps(timeline: dict[str, Any]) -> None:
    tl = timeline["received"]
    assert leds(tl, 50, 150, 250, 350, 650) == ["green", None, "green", None, None]
    assert buzz(tl, 50, 150, 250, 350, 450, 650) == [True, False, True, False, True, False]


def test_acked_is_steady_green_for_a_minute_with_one_long_beep(timeline: dict[str, Any]) -> None:
    tl = timeline["acked"]
    assert leds(tl, 50, 650, 2500, 59000) == ["green"] * 4
    assert leds(tl, 61000) == [None] and tl[61000][2] == "idle"
    assert buzz(tl, 50, 650, 950) == [True, True, False]


def test_failed_is_fast_red_blink_and_long_beeps_every_ten_seconds(timeline: dict[str, Any]) -> None:
    tl = timeline["failed"]
    assert leds(tl, 50, 150, 250) == ["red", None, "red"]
    assert buzz(tl, 50, 650, 950, 1450, 2500) == [True, False, True, False, False]
    assert buzz(tl, 10050, 10550) == [True, False]  # repeated
    assert tl[61000][2] == "failed"  # until a stored ack arrives


def test_cancelled_and_test_ok_are_steady_for_three_seconds(timeline: dict[str, Any]) -> None:
    assert leds(timeline["cancelled"], 50, 2950, 3100) == ["amber", "amber", None]
    assert buzz(timeline["cancelled"], 50, 650, 950) == [True, True, False]
    assert leds(timeline["test_ok"], 50, 2950, 3100) == ["green", "green", None]
    assert buzz(timeline["test_ok"], 50, 150, 250, 350) == [True, False, True, False]


def test_idle_is_dark_and_silent(timeline: dict[str, Any]) -> None:
    tl = timeline["idle"]
    assert all(led is None and not b for led, b, _ in tl.values())
