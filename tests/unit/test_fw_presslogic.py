"""The button's press logic (device_fw/presslogic.py) driven with synthetic pin sequences, on
the MicroPython unix port and under CPython: debounce, alarm hold threshold, cancel long press,
cancel window, replay, test switch, clock wrap."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from device_fw import presslogic

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

STEP = 5  # ms between samples


def samples(segments: list[tuple[int, int]], start: int = 0) -> list[tuple[int, bool]]:
    """(pressed, duration_ms) segments -> (time, pressed) samples every STEP ms."""
    out = []
    t = start
    for pressed, ms in segments:
        for _ in range(ms // STEP):
            out.append((t & presslogic.CLOCK_MASK, bool(pressed)))
            t += STEP
    return out


def chatter(ms: int) -> list[tuple[int, int]]:
    return [(i % 2, STEP) for i in range(ms // STEP)]


UP, DOWN = 0, 1
W = 1000  # cancel window for the window cases, ms

CASES: dict[str, dict[str, Any]] = {
    "short_press_raises_alarm_when_threshold_crossed": {
        "cfg": {},
        "seq": [(UP, 50), (DOWN, 150), (UP, 200)],
        "want": [(150, "alarm")],
    },
    "press_shorter_than_hold_raises_nothing": {
        "cfg": {},
        "seq": [(UP, 50), (DOWN, 80), (UP, 200)],
        "want": [],
    },
    "contact_bounce_alone_raises_nothing": {
        "cfg": {},
        "seq": [(UP, 50), *chatter(300), (UP, 200)],
        "want": [],
    },
    "bounce_then_hold_counts_from_last_edge": {
        "cfg": {},
        "seq": [(UP, 50), *chatter(30), (DOWN, 200), (UP, 100)],
        "want": [(175, "alarm")],  # last raw edge at 75 (chatter ends high), +100
    },
    "configured_long_hold_ignores_shorter_presses": {
        "cfg": {"alarm_hold_ms": 1500},
        "seq": [(UP, 50), (DOWN, 1000), (UP, 300), (DOWN, 1600), (UP, 100)],
        "want": [(1350 + 1500, "alarm")],
    },
    "short_press_in_window_replays_and_never_raises_second_alarm": {
        "cfg": {"cancel_window_ms": W},
        "seq": [(UP, 50), (DOWN, 150), (UP, 200), (DOWN, 150), (UP, 100), (DOWN, 150), (UP, 50)],
        "want": [(150, "alarm"), (500, "replay"), (750, "replay")],
    },
    "long_second_press_in_window_cancels": {
        "cfg": {"cancel_window_ms": 120000},
        "seq": [(UP, 50), (DOWN, 150), (UP, 300), (DOWN, 2500), (UP, 100)],
        "want": [(150, "alarm"), (600, "replay"), (2500, "cancel")],
    },
    "holding_the_alarm_press_does_not_cancel_it": {
        "cfg": {},
        "seq": [(UP, 50), (DOWN, 3000), (UP, 100)],
        "want": [(150, "alarm")],
    },
    "long_press_after_window_raises_new_alarm": {
        "cfg": {"cancel_window_ms": W},
        "seq": [(UP, 50), (DOWN, 150), (UP, 1200), (DOWN, 2500), (UP, 100)],
        "want": [(150, "alarm"), (1500, "alarm")],
    },
    "press_after_cancel_raises_new_alarm": {
        "cfg": {},
        "seq": [(UP, 50), (DOWN, 150), (UP, 200), (DOWN, 2100), (UP, 200), (DOWN, 150), (UP, 50)],
        "want": [(150, "alarm"), (500, "replay"), (2400, "cancel"), (2800, "alarm")],
    },
    "dropout_shorter_than_debounce_keeps_the_hold": {
        "cfg": {},
        "seq": [(UP, 50), (DOWN, 150), (UP, 200), (DOWN, 1000), (UP, 10), (DOWN, 1200), (UP, 50)],
        "want": [(150, "alarm"), (500, "replay"), (2400, "cancel")],
    },
    "clock_wrap_is_harmless": {
        "cfg": {},
        "start": presslogic.CLOCK_MASK + 1 - 120,
        "seq": [(UP, 50), (DOWN, 150), (UP, 200), (DOWN, 2100), (UP, 50)],
        "want": [(150, "alarm"), (500, "replay"), (2400, "cancel")],
    },
    "test_switch_gives_one_test_per_press": {
        "cfg": {},
        "switch": "test",
        "seq": [(UP, 50), *chatter(20), (DOWN, 200), (UP, 100), (DOWN, 100), (UP, 50)],
        "want": [(95, "test"), (400, "test")],  # last edge at 65, +30 debounce
    },
}


def _case_input(name: str) -> dict[str, Any]:
    c = CASES[name]
    start = c.get("start", 0)
    return {
        "name": name,
        "cfg": c["cfg"],
        "switch": c.get("switch", "main"),
        "samples": samples(c["seq"], start),
    }


def _expected(name: str) -> list[list[Any]]:
    c = CASES[name]
    start = c.get("start", 0)
    return [[(start + t) & presslogic.CLOCK_MASK, ev] for t, ev in c["want"]]


def _run_cpython(case: dict[str, Any]) -> list[list[Any]]:
    cfg = case["cfg"]
    logic: presslogic.PressLogic | presslogic.TestSwitch
    if case["switch"] == "test":
        logic = presslogic.TestSwitch()
    else:
        logic = presslogic.PressLogic(
            cfg.get("alarm_hold_ms", 100),
            cfg.get("cancel_hold_ms", 2000),
            cfg.get("cancel_window_ms", 120000),
        )
    out = []
    for t, pressed in case["samples"]:
        ev = logic.update(pressed, t)
        if ev is not None:
            out.append([t, ev])
    return out


RUNNER = r"""
import sys, json
import presslogic

with open(sys.argv[1]) as f:
    cases = json.load(f)
for case in cases:
    cfg = case["cfg"]
    if case["switch"] == "test":
        logic = presslogic.TestSwitch()
    else:
        logic = presslogic.PressLogic(cfg.get("alarm_hold_ms", 100), cfg.get("cancel_hold_ms", 2000),
                                      cfg.get("cancel_window_ms", 120000))
    out = []
    for t, pressed in case["samples"]:
        ev = logic.update(pressed, t)
        if ev is not None:
            out.append([t, ev])
    print(json.dumps({"name": case["name"], "events": out}))
"""


@pytest.fixture(scope="module")
def micropython_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("presslogic")
    (d / "cases.json").write_text(json.dumps([_case_input(n) for n in CASES]))
    script = fw.write_script(d, "run.py", RUNNER)
    lines = fw.micropython_json_lines(script, str(d / "cases.json"), heapsize="2M")
    return {r["name"]: r["events"] for r in lines}


@pytest.mark.parametrize("name", list(CASES))
def test_press_logic_micropython(name: str, micropython_results: dict[str, Any]) -> None:
    assert micropython_results[name] == _expected(name)


@pytest.mark.parametrize("name", list(CASES))
def test_press_logic_cpython(name: str) -> None:
    assert _run_cpython(_case_input(name)) == _expected(name)


def test_window_expiry_is_seen_without_presses() -> None:
    logic = presslogic.PressLogic(100, 2000, 1000)
    for t in range(0, 200, 5):
        logic.update(t < 150, t)
    assert logic.active(500)
    assert not logic.active(1200)


def test_a_wake_by_the_button_is_one_alarm_even_while_still_held() -> None:
    logic = presslogic.PressLogic(alarm_hold_ms=100, cancel_hold_ms=2000, cancel_window_ms=120000)
    assert logic.woken(True, 0) == presslogic.ALARM
    events = [logic.update(True, t) for t in range(10, 3000, 10)]
    assert [e for e in events if e] == []  # the rest of the wake press raises nothing
    assert [logic.update(False, t) for t in range(3000, 3100, 10)] == [None] * 10
    # A later long press inside the window cancels the alarm the wake raised.
    events = [logic.update(True, t) for t in range(3100, 5300, 10)]
    assert [e for e in events if e] == [presslogic.REPLAY, presslogic.CANCEL]


def test_a_wake_by_a_press_already_released_is_still_an_alarm() -> None:
    logic = presslogic.PressLogic()
    assert logic.woken(False, 0) == presslogic.ALARM
    assert logic.active(50)
    assert [logic.update(False, t) for t in range(0, 500, 10)] == [None] * 50
