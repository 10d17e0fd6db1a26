"""Device supervision end to end with the real firmware (MicroPython unix port), the real gateway
and centre: a speaker killed is reported lost at the centre within its grace and restored when
it comes back; a battery button that sleeps and checks in is not lost, one that misses its
check-ins is; a low battery reading is raised once, not on every heartbeat, and cleared with
hysteresis. Periods are scaled down in the gateway's [supervision] settings and the devices'
configurations, so each test takes seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.stack import LocalStack
from tests.support import wait_until

pytestmark = pytest.mark.integration

# Mains: heartbeat every 1 s, lost after 3 missed (3 s), or 2 s after a last will.
# Battery: check-in every 2 s, lost after 2 missed + 1 s (5 s).
SUPERVISION: dict[str, int | float] = {
    "mains_period_s": 1,
    "mains_missed": 3,
    "will_grace_s": 2.0,
    "battery_period_s": 2,
    "battery_missed": 2,
    "battery_margin_s": 1,
    "check_s": 0.2,
}
SLACK_S = 3.0  # forwarding, the centre's commit and this test's polling


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    s = LocalStack(tmp_path / "stack", resend_after_s=2.0, supervision=SUPERVISION)
    s.setup()
    try:
        s.start()
        yield s
    finally:
        s.stop()


def wait(pred: Any, timeout: float, what: str) -> Any:
    return wait_until(pred, timeout, what)


def events(stack: LocalStack, device: str, what: str | None = None) -> list[dict[str, Any]]:
    evs = stack.api("GET", "/api/device-events?limit=1000")
    return [e for e in evs if e["device"] == device and (what is None or e["what"] == what)]


def device(stack: LocalStack, device_id: str) -> dict[str, Any] | None:
    for d in stack.api("GET", f"/api/devices?village={stack.village}"):
        if d["id"] == device_id:
            return dict(d)
    return None


def test_killed_speaker_is_reported_lost_at_the_centre_in_time_and_restored(
    stack: LocalStack,
) -> None:
    speaker = stack.add_speaker("spk-0001", "h-001", hb_interval_s=1)
    speaker.start()
    seen = wait(lambda: device(stack, "spk-0001"), 20, "the speaker never reached the list")
    assert (seen["status"], seen["power"], seen["period_s"], seen["lost_after_s"]) == (
        "ok", "mains", 1, 3
    )
    time.sleep(4)  # alive and heard: longer than its grace, and not lost
    assert events(stack, "spk-0001", "lost") == []

    killed = time.monotonic()
    speaker.kill()
    wait(lambda: events(stack, "spk-0001", "lost"), 3 + SLACK_S,
         "the killed speaker was not reported lost at the centre within its grace")
    took = time.monotonic() - killed
    assert took <= 3 + SLACK_S
    dev = device(stack, "spk-0001")
    assert dev is not None and dev["status"] == "lost"
    (item,) = stack.api("GET", "/api/device-events?open=true")
    assert (item["device"], item["what"], item["raised"]) == ("spk-0001", "lost", True)

    speaker.start()
    wait(lambda: events(stack, "spk-0001", "restored"), 20, "the speaker was never restored")
    dev = device(stack, "spk-0001")
    assert dev is not None and dev["status"] == "ok"
    lost = stack.api("GET", f"/api/device-events/{item['id']}")
    assert lost["cleared_at"] is not None
    assert len(events(stack, "spk-0001", "lost")) == 1


def test_battery_button_is_not_lost_while_it_sleeps_but_is_once_it_misses_its_check_ins(
    stack: LocalStack,
) -> None:
    button = stack.add_button(
        "btn-0001", "h-002", power="battery", checkin_s=2, awake_s=8, awake_after_alarm_s=3,
        retry_s=2,
    )
    button.start()
    dev = wait(lambda: device(stack, "btn-0001"), 20, "the button never reached the list")
    assert (dev["power"], dev["period_s"], dev["lost_after_s"]) == ("battery", 2, 5)
    # It sleeps (a clean DISCONNECT each time) and checks in: several sleeps, longer than its
    # grace, and it is never lost.
    wait(lambda: button.keeper is not None and len(button.keeper.sleeps) >= 3, 30,
         "the button did not sleep and wake three times")
    assert events(stack, "btn-0001", "lost") == []

    wait(lambda: button.asleep, 10, "the button did not go back to sleep")
    killed = time.monotonic()
    button.kill()  # the cell dies while it sleeps: no will, no DISCONNECT, just silence
    wait(lambda: events(stack, "btn-0001", "lost"), 5 + 2 + SLACK_S,
         "the button that missed its check-ins was not reported lost")
    # Lost once its last check-in is 5 s old; it had checked in at most 2 s before the kill.
    assert time.monotonic() - killed <= 5 + SLACK_S
    assert device(stack, "btn-0001") is not None


def test_low_battery_is_raised_once_and_cleared_only_above_the_ok_mark(
    stack: LocalStack,
) -> None:
    # A plug-in button with a backup cell: mains, a heartbeat every second with its reading.
    button = stack.add_button("btn-0002", "h-003", hb_interval_s=1)
    button.start()
    wait(lambda: device(stack, "btn-0002"), 20, "the button never reached the list")
    button.set_battery(15)
    wait(lambda: events(stack, "btn-0002", "low_battery"), 10, "low battery never raised")
    dev = device(stack, "btn-0002")
    assert dev is not None and (dev["status"], dev["bat"]) == ("low_battery", 15)
    hb_before = button.status()["hb_sent"]
    wait(lambda: button.status()["hb_sent"] >= hb_before + 3, 10, "no more heartbeats")
    button.set_battery(25)  # above the low mark, not above the clear mark: still low
    wait(lambda: button.status()["hb_sent"] >= hb_before + 6, 10, "no more heartbeats")
    time.sleep(1)  # the last of them through the gateway and to the centre
    assert len(events(stack, "btn-0002", "low_battery")) == 1
    assert events(stack, "btn-0002", "battery_ok") == []

    button.set_battery(35)
    wait(lambda: events(stack, "btn-0002", "battery_ok"), 10, "battery_ok never came")
    dev = device(stack, "btn-0002")
    assert dev is not None and (dev["status"], dev["bat"]) == ("ok", 35)
    assert len(events(stack, "btn-0002", "low_battery")) == 1
