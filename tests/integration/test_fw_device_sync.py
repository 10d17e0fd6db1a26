"""§4.3 end to end: a real firmware button (MicroPython unix port), the village broker, the
gateway, the centre. An ack lost while the button was away (its queued copy taken from the
broker's session, as a broker restart before its autosave or a lost session would) reaches the
button all the same: on reconnect it lists what it still waits for, and the gateway answers
from its events table."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from device_fw import okproto
from harness.stack import HOST, LocalStack

pytestmark = pytest.mark.integration


def newest(st: dict[str, Any], kind: str = "alarm") -> dict[str, Any] | None:
    items = [r for r in st.get("recent", []) if r["kind"] == kind]
    return max(items, key=lambda r: r["c"]) if items else None


def state_is(kind: str, state: str) -> Any:
    def pred(st: dict[str, Any]) -> bool:
        item = newest(st, kind)
        return item is not None and item["state"] == state

    return pred


def take_queued_acks(port: int, device: str, password: str, key: bytes, until: str) -> list[str]:
    """Connects as the device (its login, its persistent session), takes the acks queued for
    it, PUBACKing them so that the broker forgets them, until one says `until`; returns the
    states taken."""
    taken: list[str] = []
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device, clean_session=False)
    client.username_pw_set(device, password)

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = okproto.open_down(key, device, msg.topic, msg.payload)
        taken.append(str(body["s"]))
        if body["s"] == until:
            done.set()

    client.on_message = on_message
    client.connect(HOST, port)
    client.subscribe(okproto.topic_down(device), qos=1)
    client.loop_start()
    try:
        assert done.wait(20), f"no {until!r} ack queued for {device}; took {taken}"
    finally:
        client.disconnect()
        client.loop_stop()
        client.reinitialise()
    return taken


def test_an_ack_lost_while_the_button_was_away_reaches_it_after_it_reconnects(stack: LocalStack) -> None:
    assert stack.village_broker is not None
    button = stack.add_button("btn-0001", "h-001", hb_interval_s=60)
    button.start()
    try:
        button.wait_for(lambda st: st["connected"])
        button.press(150)
        st = button.wait_for(state_is("alarm", "received"), timeout=30)
        counter = newest(st)["c"]  # type: ignore[index]
        assert st["ev"] == [[counter, "received"]]
        button.set_network(False)
        button.wait_for(lambda st: not st["connected"])
        alarm_id = f"{stack.gateway_id}:btn-0001:{counter}"
        stack.api("POST", f"/api/alarms/{alarm_id}/ack", {"by": "Wang", "note": "doctor on the way"})
        # The gateway relays `acked`; the broker queues it for the absent button; it is lost.
        mqtt_cfg = button.config["mqtt"]
        taken = take_queued_acks(
            stack.village_broker.port, "btn-0001", mqtt_cfg["password"], bytes.fromhex(button.config["key"]),
            "acked",
        )  # fmt: skip
        assert taken[-1] == "acked"
        button.set_network(True)
        # Only the heartbeat sent on reconnect (ev) can bring it now: the gateway's village link
        # never went down, and the next periodic heartbeat is a minute away.
        st = button.wait_for(state_is("alarm", "acked"), timeout=15)
        assert st["led"] == "acked" and st["ev"] == [] and st["outbox"] == 0
    finally:
        button.stop()
