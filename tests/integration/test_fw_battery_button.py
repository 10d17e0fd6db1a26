"""A battery button sleeps between check-ins (deep sleep, simulated as on the board: RAM lost,
a new boot at each wake), checks in on its timer, and a press while it sleeps wakes it and the
alarm reaches the centre. harness/deepsleep.py plays the sleeping chip."""

from __future__ import annotations

from typing import Any

import pytest

from harness.simdevice import SimButton
from harness.stack import LocalStack
from tests.support import wait_until

pytestmark = pytest.mark.integration

BATTERY = {
    "power": "battery",
    "checkin_s": 3,
    "awake_s": 8,
    "awake_after_alarm_s": 3,
    "retry_s": 2,
    "cancel_window_s": 3,
}


def wait(pred: Any, timeout: float, what: str) -> Any:
    return wait_until(pred, timeout, what)


def asleep(button: SimButton) -> bool:
    return bool(button.status().get("asleep"))


def test_battery_button_checks_in_then_sleeps_and_wakes_on_its_timer(stack: LocalStack) -> None:
    button = stack.add_button("btn-0101", "h-001", **BATTERY)
    button.start()
    first = button.status()
    assert first["power"] == "battery" and first["woke"] == "power"
    wait(lambda: asleep(button), 20, "the button never went to sleep after its check-in")
    assert button.running  # asleep is powered on
    wait(lambda: button.keeper is not None and len(button.keeper.sleeps) >= 2, 30,
         "the check-in timer never woke the button")
    assert button.keeper is not None
    first_sleep = button.keeper.sleeps[0]
    assert first_sleep.woke_by == "timer"
    assert first_sleep.ms == BATTERY["checkin_s"] * 1000  # nothing was waiting: the full period
    assert 2.5 <= first_sleep.slept_s <= 6
    # Each wake checked in: the gateway heard heartbeats from every boot.
    log = button.log_path.read_text()
    assert log.count("woke by timer") >= 1


def test_press_while_asleep_wakes_the_button_and_the_alarm_reaches_the_centre(
    stack: LocalStack,
) -> None:
    button = stack.add_button("btn-0102", "h-002", **BATTERY)
    button.start()
    wait(lambda: asleep(button), 20, "the button never went to sleep")
    button.press(150)  # answered once the press has woken it and the firmware is up
    st = button.status()
    assert st["woke"] == "button"
    alarms = wait(
        lambda: [a for a in stack.api("GET", "/api/alarms?limit=100")
                 if a["device"] == "btn-0102" and a["kind"] == "alarm"],
        20, "the alarm never reached the centre",
    )
    assert len(alarms) == 1
    # The wake is one alarm, not two: the rest of the held press belongs to it.
    st = button.wait_for(lambda s: any(r["kind"] == "alarm" and r["state"] in ("stored", "received")
                                       for r in s["recent"]), timeout=15)
    assert [r["kind"] for r in st["recent"]].count("alarm") == 1
    # It stays awake after the press (feedback, cancel window), then sleeps again.
    wait(lambda: asleep(button), 30, "the button never slept again after the alarm")
