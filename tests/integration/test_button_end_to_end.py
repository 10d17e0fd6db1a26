"""Real firmware buttons (MicroPython unix port) through the whole system to the centre."""

from __future__ import annotations

from typing import Any

import pytest

from harness.stack import LocalStack

pytestmark = pytest.mark.integration


def newest(st: dict[str, Any], kind: str = "alarm") -> dict[str, Any] | None:
    items = [r for r in st.get("recent", []) if r["kind"] == kind]
    return max(items, key=lambda r: r["c"]) if items else None


def state_is(kind: str, state: str) -> Any:
    def pred(st: dict[str, Any]) -> bool:
        item = newest(st, kind)
        return item is not None and item["state"] == state

    return pred


def centre_events(stack: LocalStack, device: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = stack.api("GET", "/api/alarms?limit=1000")
    return [r for r in rows if r["device"] == device]


def wait_centre(stack: LocalStack, pred: Any, timeout: float = 15.0) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("the centre never showed it")
        time.sleep(0.05)


def test_press_reaches_centre_and_button_shows_stored_received_acked(stack: LocalStack) -> None:
    assert stack.centre_broker
    button = stack.add_button("btn-0001", "h-001")
    button.start()
    button.wait_for(lambda st: st["connected"])
    # Hold the uplink so that "stored" can be seen on its own before "received".
    stack.centre_broker.stop()
    button.press(150)
    st = button.wait_for(state_is("alarm", "stored"))
    assert st["led"] == "stored"
    counter = newest(st)["c"]  # type: ignore[index]
    stack.centre_broker.start()
    st = button.wait_for(state_is("alarm", "received"), timeout=30)
    assert st["led"] == "received"
    alarm_id = f"gw-demo:btn-0001:{counter}"
    alarm = stack.api("GET", f"/api/alarms/{alarm_id}")
    assert alarm["state"] == "open" and alarm["household"] == "h-001"
    stack.api("POST", f"/api/alarms/{alarm_id}/ack", {"by": "Wang", "note": "doctor on the way"})
    st = button.wait_for(state_is("alarm", "acked"))
    assert st["led"] == "acked"
    # The logged-in staff member (the stack's API token), not the body's `by`.
    assert stack.api("GET", f"/api/alarms/{alarm_id}")["acked_by"] == "Local stack"


def test_rebooted_button_resends_unacknowledged_alarm_and_centre_has_it_once(
    stack: LocalStack,
) -> None:
    assert stack.gateway_proc
    button = stack.add_button("btn-0002", "h-002", ack_timeout_s=2)
    button.start()
    button.wait_for(lambda st: st["connected"])
    stack.gateway_proc.stop()  # the gateway is away: nothing acknowledges the alarm
    button.press(150)
    st = button.wait_for(state_is("alarm", "sending"))
    counter = newest(st)["c"]  # type: ignore[index]
    st = button.wait_for(state_is("alarm", "failed"), timeout=10)
    assert st["led"] == "failed"
    button.kill()  # power cut with the alarm unacknowledged on flash
    stack.start_gateway()
    button.start()
    st = button.wait_for(state_is("alarm", "received"), timeout=30)
    assert newest(st)["c"] == counter  # type: ignore[index]
    rows = wait_centre(stack, lambda: centre_events(stack, "btn-0002"))
    assert [r["counter"] for r in rows] == [counter]


def test_long_press_cancels_and_test_switch_is_recorded_as_test(stack: LocalStack) -> None:
    button = stack.add_button("btn-0003", "h-003")
    button.start()
    button.wait_for(lambda st: st["connected"])
    button.press(150)
    st = button.wait_for(state_is("alarm", "received"))
    alarm_id = f"gw-demo:btn-0003:{newest(st)['c']}"  # type: ignore[index]
    button.press(2500)
    button.wait_for(state_is("cancel", "received"))
    alarm = wait_centre(
        stack,
        lambda: (a := stack.api("GET", f"/api/alarms/{alarm_id}"))["state"] == "cancelled" and a,
    )
    assert alarm["cancelled_at"] is not None
    button.test_press()
    button.wait_for(state_is("test", "received"))
    tests = [r for r in centre_events(stack, "btn-0003") if r["kind"] == "test"]
    assert len(tests) == 1 and tests[0]["state"] == "test"
