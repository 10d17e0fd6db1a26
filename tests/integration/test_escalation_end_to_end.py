"""The escalation chain end to end: a firmware button (MicroPython unix port), the real gateway
and centre processes, and the virtual modem (`onekey vmodem`) on a pseudo-terminal. Short T1
and T2 (config) keep each test within seconds."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.stack import LocalStack
from harness.vmodem import VModemProcess, control, read_sent
from tests.support import wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
T1_S, T2_S = 1.0, 3.0
LEADER, SON, DAUGHTER = "13800000001", "13800000003", "13800000004"
CARD = {
    "village": "v-demo",
    "group": "二组",
    "name": "张秀英",
    "address": "东头3号",
    "contacts": [
        {"kind": "leader", "name": "李明", "phone": LEADER},
        {"kind": "family", "name": "张伟", "relation": "儿子", "phone": SON},
    ],
}


class EscalationStack:
    def __init__(self, stack: LocalStack, vmodem: VModemProcess) -> None:
        self.stack = stack
        self.vmodem = vmodem

    def sent_to(self) -> list[str]:
        return [m["to"] for m in read_sent(self.vmodem.dir)]

    def chain(self, alarm: str) -> dict[str, Any]:
        out: dict[str, Any] = self.stack.api("GET", f"/api/alarms/{alarm}/escalation")
        return out

    def timeline_kinds(self, alarm: str) -> list[str]:
        return [s["kind"] for s in self.stack.api("GET", f"/api/alarms/{alarm}/timeline")]

    def reply(self, number: str, text: str) -> None:
        control(self.vmodem.dir, {"cmd": "reply", "from": number, "text": text})

    def fault(self, **kw: Any) -> None:
        control(self.vmodem.dir, {"cmd": "fault", **kw})

    def press(self, device: str) -> str:
        button = self.stack.buttons.get(device) or self.stack.add_button(device, "h-001")
        if not button.running:
            button.start()
            button.wait_for(lambda st: st["connected"])
        before = {r["id"] for r in self.stack.api("GET", "/api/alarms?kind=alarm")}
        button.press(150)
        rows = wait(lambda: [r for r in self.stack.api("GET", "/api/alarms?kind=alarm")
                             if r["id"] not in before and r["device"] == device])
        return str(rows[0]["id"])


def wait(pred: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    value: T = wait_until(pred, timeout, what or str(pred))
    return value


@pytest.fixture
def esc(tmp_path: Path) -> Iterator[EscalationStack]:
    vmodem = VModemProcess(tmp_path / "vmodem")
    port = vmodem.start()
    stack = LocalStack(tmp_path / "stack", resend_after_s=2.0)
    try:
        stack.setup()
        with stack.centre_config.open("a") as f:
            f.write(
                f'\n[escalation]\nt1_s = {T1_S}\nt2_s = {T2_S}\nrounds = 1\nperiod_s = 0.1\n'
                f'\n[modem]\nport = "{port}"\n'
            )
        stack.start()
        stack.api("PUT", "/api/households/h-001", CARD)
        yield EscalationStack(stack, vmodem)
    finally:
        stack.stop()
        vmodem.stop()


def centre_metrics_text(esc: EscalationStack) -> str:
    import urllib.request

    st = esc.stack
    req = urllib.request.Request(
        f"http://127.0.0.1:{st.http_port}/metrics",
        headers={"Authorization": f"Bearer {st.centre_token_file.read_text().strip()}"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(resp.read().decode())


def test_unanswered_alarm_goes_to_contact_one_then_two_who_confirms(esc: EscalationStack) -> None:
    alarm = esc.press("btn-e1")
    wait(lambda: esc.sent_to() == [LEADER], what="the leader's SMS")
    (first,) = read_sent(esc.vmodem.dir)
    assert "张秀英" in first["text"] and "东头3号" in first["text"] and "回复1" in first["text"]
    chain = wait(lambda: (c := esc.chain(alarm))["messages"][0]["delivery"] == "delivered" and c,
                 what="the leader's delivery report")
    assert chain["state"] == "running" and chain["messages"][0]["state"] == "sent"
    due = chain["step_due"]
    wait(lambda: esc.sent_to() == [LEADER, SON], what="the son's SMS after T2")
    assert time.time() * 1000 >= due
    esc.reply("+86" + SON, "收到")
    chain = wait(lambda: (c := esc.chain(alarm))["state"] == "confirmed" and c,
                 what="the confirmation")
    assert chain["confirmed_by"]["name"] == "张伟" and chain["confirmed_by"]["relation"] == "儿子"
    kinds = esc.timeline_kinds(alarm)
    for kind in ("escalation_started", "sms_sent", "sms_delivered", "sms_timeout", "sms_confirmed"):
        assert kind in kinds
    assert esc.stack.api("GET", f"/api/alarms/{alarm}")["state"] == "open"  # staff still act


def test_staff_acknowledgement_stops_the_chain(esc: EscalationStack) -> None:
    # A long T2 for this household, so that the acknowledgement surely lands within it.
    esc.stack.api("PUT", "/api/escalation/policy/households/h-001", {"t2_s": 60})
    alarm = esc.press("btn-e2")
    wait(lambda: esc.sent_to() == [LEADER], what="the leader's SMS")
    due = esc.chain(alarm)["step_due"]
    esc.stack.api("POST", f"/api/alarms/{alarm}/ack", {"note": "on the phone with them"})
    chain = wait(lambda: (c := esc.chain(alarm))["state"] == "stopped" and c, what="the stop")
    assert chain["end_reason"] == "acked" and chain["ended_at"] < due
    assert "escalation_stopped" in esc.timeline_kinds(alarm)
    assert esc.sent_to() == [LEADER]  # a stopped chain sends nothing more (unit-tested past T2)


def test_centre_killed_mid_send_resumes_without_a_duplicate_sms(esc: EscalationStack) -> None:
    assert esc.stack.centre_proc is not None
    esc.fault(delay=2.0)  # every answer of the modem takes 2 s: the kill lands mid-send
    alarm = esc.press("btn-e3")
    wait(lambda: any(m["state"] == "sending" for m in esc.chain(alarm)["messages"]),
         what="the leader's SMS being sent")
    esc.stack.centre_proc.send_signal(signal.SIGKILL)
    esc.stack.centre_proc.wait(10)
    esc.fault(delay=0)
    esc.stack.start_centre()
    wait(lambda: esc.chain(alarm)["messages"][0]["state"] == "unknown",
                 what="the interrupted SMS marked unknown")
    wait(lambda: SON in esc.sent_to(), timeout=T2_S + 20, what="the son's SMS after T2")
    assert esc.sent_to().count(LEADER) <= 1 and esc.sent_to().count(SON) == 1
    assert [m["name"] for m in esc.chain(alarm)["messages"]] == ["李明", "张伟"]
    assert "sms_unknown" in esc.timeline_kinds(alarm)


def test_modem_unplugged_mid_chain_raises_the_alert(esc: EscalationStack) -> None:
    # A third contact: should the son's send race the unplugging (failed, never re-sent), the
    # chain still has someone to ask once the modem is back.
    esc.stack.api("PUT", "/api/households/h-001", {**CARD, "contacts": [
        *CARD["contacts"], {"kind": "family", "name": "张丽", "relation": "女儿", "phone": DAUGHTER},
    ]})
    alarm = esc.press("btn-e4")
    wait(lambda: esc.sent_to() == [LEADER], what="the leader's SMS")
    esc.fault(unplug=True)
    modem = wait(lambda: (m := esc.stack.api("GET", "/api/modem"))["alert"] and m,
                 what="the modem alert")
    assert modem["state"] == "gone"
    # Prometheus sees it too (onekey_modem_state, docs/centre.md, Metrics).
    wait(lambda: 'state="gone"} 1.0' in centre_metrics_text(esc), what="the modem state in /metrics")
    wait(lambda: "modem_gone" in esc.timeline_kinds(alarm), what="modem_gone on the timeline")
    time.sleep(T2_S + 0.5)
    assert esc.sent_to() == [LEADER]  # the son's SMS waits for the modem
    esc.fault(plug=True)
    sent = wait(lambda: len(s := esc.sent_to()) >= 2 and s, what="the next SMS once plugged")
    assert sent[1] in (SON, DAUGHTER) and len(set(sent)) == len(sent)
    assert not esc.stack.api("GET", "/api/modem")["alert"]
    assert "modem_back" in esc.timeline_kinds(alarm)
