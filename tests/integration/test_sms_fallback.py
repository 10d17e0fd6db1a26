"""The second path end to end: a real firmware button, the gateway with a virtual modem, the
centre with another; the network between the two modems is `harness.smsrelay`. The centre's
modem is read here with the modem driver and each SMS handed to `centre.smsin` (the centre's
own modem task belongs to its escalation chain), on the centre's database.

Thresholds are short (`link_down_s`, `receipt_deadline_s`: 1 s) so that every test is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from centre.ingest import Metrics
from centre.live import LiveHub
from centre.smsin import SmsIngest
from centre.store import Store
from harness.protodevice import ProtoDevice
from harness.smsrelay import SmsRelay
from harness.stack import HOST, LocalStack
from harness.vmodem import VModemProcess, control, read_sent
from modem import IncomingSms, Modem
from tests.support import await_until, wait_until

pytestmark = pytest.mark.integration

CENTRE_NUMBER = "+8613800000000"
GATEWAY_NUMBER = "+8613900000099"
LEADER, GRID, FAMILY = "13800138001", "13800138002", "13800138003"


@dataclass
class Rig:
    stack: LocalStack
    gw_modem: VModemProcess
    centre_modem: VModemProcess
    relay: SmsRelay


def modem_section(port: str, **extra: object) -> str:
    values: dict[str, object] = {
        "port": port, "centre_number": CENTRE_NUMBER, "link_down_s": 1.0,
        "receipt_deadline_s": 1.0, "poll_interval_s": 0.5, "reopen_interval_s": 0.2,
        "command_timeout_s": 2.0,
    } | extra
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n[modem]\n" + "\n".join(lines) + "\n"


@contextlib.contextmanager
def make_rig(tmp_path: Path, **modem: object) -> Iterator[Rig]:
    stack = LocalStack(tmp_path / "stack", resend_after_s=2.0)
    stack.setup()
    gw_modem = VModemProcess(tmp_path / "gw-modem")
    centre_modem = VModemProcess(tmp_path / "centre-modem")
    try:
        gw_modem.start()
        centre_modem.start()
        text = stack.gateway_config.read_text().replace("heartbeat_s = 30.0", "heartbeat_s = 0.5")
        stack.gateway_config.write_text(text + modem_section(gw_modem.port, **modem))
        stack.start()
        yield Rig(stack, gw_modem, centre_modem,
                  SmsRelay(gw_modem.dir, {CENTRE_NUMBER: centre_modem.dir}, GATEWAY_NUMBER))
    finally:
        stack.stop()
        gw_modem.stop()
        centre_modem.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with make_rig(tmp_path) as r:
        yield r


def wait(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    return wait_until(pred, timeout, what)


async def await_(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    return await await_until(pred, timeout, what)


def put_card(stack: LocalStack, hid: str, *, group: str = "g3") -> None:
    stack.api("PUT", f"/api/households/{hid}", {
        "village": stack.village, "group": group, "name": "张秀英", "address": "三组5号",
        "contacts": [
            {"kind": "leader", "name": "李联户长", "phone": LEADER},
            {"kind": "grid", "name": "王网格员", "phone": GRID},
            {"kind": "family", "name": "张儿子", "relation": "儿子", "phone": FAMILY},
        ],
    })


def gauges(stack: LocalStack) -> dict[str, Any]:
    g: dict[str, Any] = stack.gateway_metrics().get("gauges", {})
    return g


def counts(stack: LocalStack) -> dict[str, Any]:
    c: dict[str, Any] = stack.gateway_metrics().get("counts", {})
    return c


@contextlib.asynccontextmanager
async def centre_sms_reader(rig: Rig) -> AsyncIterator[SmsIngest]:
    """The centre's modem, read as its modem task would, each SMS to `handle_incoming`."""
    store = Store(rig.stack.centre_dir / "centre.db")
    await store.open()
    handler = SmsIngest(store, Metrics(), LiveHub())
    m = Modem(rig.centre_modem.port, poll_interval=0.5, reopen_interval=0.2)
    await m.start()

    async def read() -> None:
        async for ev in m.events():
            if isinstance(ev, IncomingSms):
                await handler.handle_incoming(ev)

    task = asyncio.create_task(read())
    try:
        yield handler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await m.close()
        await store.close()


async def test_uplink_cut_press_goes_by_sms_to_centre_and_contacts_then_reconciles_once(rig: Rig) -> None:
    stack = rig.stack
    assert stack.centre_broker is not None
    put_card(stack, "h-001")
    await await_(lambda: gauges(stack).get("contacts_version", 0) > 0, 20, "contact list at the gateway")
    # The gateway confirmed the version (§11.1): the centre holds nothing more for it.
    await await_(lambda: stack.api("GET", "/api/metrics")["pending_downlinks"] == 0, 20,
                 "the contact list confirmed")
    button = stack.add_button("btn-0001", "h-001")
    button.start()
    button.wait_for(lambda st: st["connected"])

    stack.centre_broker.stop()
    cut = time.monotonic()
    button.press(150)
    st = button.wait_for(lambda st: any(r["state"] == "stored" for r in st.get("recent", [])))
    counter = max(r["c"] for r in st["recent"] if r["kind"] == "alarm")
    alarm_id = f"gw-demo:btn-0001:{counter}"

    # The gateway texts the centre's modem and the household's contacts, each once.
    def texted() -> list[dict[str, Any]]:
        rows = read_sent(rig.gw_modem.dir)
        return rows if {r["to"] for r in rows} >= {CENTRE_NUMBER, LEADER, GRID, FAMILY} else []

    rows = await await_(texted, 20, "SMS to the centre and the contacts")
    assert time.monotonic() - cut < 15
    by_to = {r["to"]: r for r in rows}
    assert len(rows) == 4
    assert by_to[CENTRE_NUMBER]["text"].startswith(f"OK1 A {alarm_id} v-demo h-001 ")
    assert by_to[CENTRE_NUMBER]["parts"] <= 2
    family_text = by_to[FAMILY]["text"]
    assert "张秀英" in family_text and "三组5号" in family_text and "一键报警" in family_text

    # The network carries it to the centre's modem; the centre ingests it, marked as by SMS.
    async with centre_sms_reader(rig) as handler:
        assert [r["to"] for r in rig.relay.step()] == [CENTRE_NUMBER]
        await await_(lambda: handler.metrics.counts["sms_alarms"] == 1, 10, "the SMS alarm ingested")
        alarm = stack.api("GET", f"/api/alarms/{alarm_id}")
        assert alarm["state"] == "open" and alarm["household"] == "h-001"
        kinds = [s["kind"] for s in stack.api("GET", f"/api/alarms/{alarm_id}/timeline")]
        assert kinds[:2] == ["received", "arrived_by_sms"]
        # A replay of the same text is refused and counted.
        control(rig.centre_modem.dir, {"cmd": "reply", "from": "+8613700000000",
                                       "text": by_to[CENTRE_NUMBER]["text"]})
        await await_(lambda: handler.metrics.rejected["sms_replay"] == 1, 10, "the replay refused")
        # A forged one (another signature) too.
        forged = by_to[CENTRE_NUMBER]["text"][:-86] + "A" * 86
        control(rig.centre_modem.dir, {"cmd": "reply", "from": "+8613700000000", "text": forged})
        await await_(lambda: handler.metrics.rejected["sms_bad_signature"] == 1, 10, "forgery refused")

    # The line returns: the MQTT copy is a duplicate, `received` reaches the button, and the
    # SMS the gateway sent show on the alarm's timeline.
    stack.centre_broker.start()
    button.wait_for(lambda st: any(r["c"] == counter and r["state"] == "received"
                                   for r in st.get("recent", [])), timeout=30)

    def timeline_has_sms() -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = stack.api("GET", f"/api/alarms/{alarm_id}/timeline")
        sms = [s for s in steps if s["kind"] == "gateway_sms"]
        return steps if {s["detail"]["to"] for s in sms} == {"centre", "leader", "grid", "family"} else []

    steps = wait(timeline_has_sms, 20, "the gateway's SMS on the timeline")
    assert [s["kind"] for s in steps].count("received") == 1
    alarms = [a for a in stack.api("GET", "/api/alarms?limit=1000") if a["device"] == "btn-0001"]
    assert [a["id"] for a in alarms] == [alarm_id]
    # At most once per recipient, also after the line returned.
    assert len(read_sent(rig.gw_modem.dir)) == 4
    assert counts(stack).get("sms_sent") == 4


async def test_local_alert_plays_near_the_household_unless_it_refuses(rig: Rig) -> None:
    stack = rig.stack
    assert stack.centre_broker is not None and stack.village_broker is not None
    put_card(stack, "h-001")
    put_card(stack, "h-002")
    stack.api("PUT", "/api/households/h-002", {
        "village": stack.village, "group": "g3", "name": "赵大爷", "address": "三组7号",
    })
    await await_(lambda: gauges(stack).get("contacts_version", 0) > 0, 20, "contact list")
    speaker = stack.add_speaker("spk-g3", "h-spk", groups=["g3"])
    far = stack.add_speaker("spk-far", "h-spk2", groups=["g9"])
    speaker.start()
    far.start()
    stack.wait_devices_connected()
    key, password = stack.register_device("btn-proto", "h-001")
    dev = ProtoDevice("btn-proto", key, HOST, stack.village_broker.port, password)
    await dev.connect()
    try:
        stack.centre_broker.stop()
        c = await dev.send("alarm")
        await dev.wait_ack(c, "stored")
        played = await await_(lambda: [p for p in speaker.played() if p["id"].startswith("gwl.")],
                              20, "the local alert played")
        assert "三组5号" in (played[0]["text"] or "") and "张秀英" not in (played[0]["text"] or "")
        assert not [p for p in far.played() if p["id"].startswith("gwl.")]
        assert counts(stack).get("local_alerts") == 1
        # A household that refuses the local alert: its alarm plays on no speaker.
        stack.centre_broker.start()
        await dev.wait_ack(c, "received", timeout=30)
        version = gauges(stack)["contacts_version"]
        assert stack.api("PUT", "/api/households/h-002/local_alert", {"allowed": False}) == {
            "allowed": False}
        await await_(lambda: gauges(stack).get("contacts_version", 0) > version, 20, "new list")
        key2, password2 = stack.register_device("btn-h2", "h-002")
        dev2 = ProtoDevice("btn-h2", key2, HOST, stack.village_broker.port, password2)
        await dev2.connect()
        try:
            stack.centre_broker.stop()
            c2 = await dev2.send("alarm")
            await dev2.wait_ack(c2, "stored")
            await await_(lambda: "event=local_alert_skipped" in (stack.root / "gateway.log").read_text(),
                         15, "the local alert skipped")
            assert "reason=household_refuses" in (stack.root / "gateway.log").read_text()
            assert counts(stack).get("local_alerts") == 1
            assert len([p for p in speaker.played() if p["id"].startswith("gwl.")]) == 1
        finally:
            await dev2.close()
    finally:
        await dev.close()


async def test_modem_faults_are_reported_and_the_alarm_waits_for_the_line(rig: Rig) -> None:
    stack = rig.stack
    assert stack.centre_broker is not None and stack.village_broker is not None
    key, password = stack.register_device("btn-proto", "h-009")
    dev = ProtoDevice("btn-proto", key, HOST, stack.village_broker.port, password)
    await dev.connect()
    try:
        for fault, state, reason in (
            ({"network": "none"}, "no_network", "NoNetwork"),
            ({"sim": "missing"}, "sim_missing", "SimMissing"),
            ({"unplug": True}, "gone", "ModemGone"),
        ):
            control(rig.gw_modem.dir, {"cmd": "fault", **fault})
            await await_(lambda state=state: gauges(stack).get("modem") == state, 10, f"modem {state}")
            stack.centre_broker.stop()
            c = await dev.send("alarm")
            await dev.wait_ack(c, "stored")
            await await_(lambda reason=reason: counts(stack).get(f"sms_failed_{reason}", 0) >= 1, 15,
                         f"the failed send ({reason}) counted")
            log = (stack.root / "gateway.log").read_text()
            assert f"event=modem_fault state={state}" in log and "event=sms_failed" in log
            assert read_sent(rig.gw_modem.dir) == []
            # The line returns: the alarm goes to the centre as always, and the gateway's
            # heartbeat tells the centre what its modem lacks (protocol §11.5).
            stack.centre_broker.start()
            await dev.wait_ack(c, "received", timeout=30)
            await await_(lambda state=state: f"event=gateway_modem gw=gw-demo state={state}"
                         in (stack.root / "centre.log").read_text(), 10, "the centre told")
            control(rig.gw_modem.dir, {"cmd": "fault", "network": "ok", "sim": "present", "plug": True})
            await await_(lambda: gauges(stack).get("modem") == "ok", 10, "modem ok again")
        assert "event=modem_ok" in (stack.root / "gateway.log").read_text()
    finally:
        await dev.close()


@pytest.fixture
def deadline_rig(tmp_path: Path) -> Iterator[Rig]:
    with make_rig(tmp_path, link_down_s=600.0, receipt_deadline_s=1.0) as r:
        yield r


async def test_alarm_not_received_within_the_deadline_goes_by_sms_once_across_a_restart(
    deadline_rig: Rig,
) -> None:
    # The uplink stays up but the centre does not answer (its process is stopped): the alarm's
    # own deadline starts the second path, long before `link_down_s`.
    rig = deadline_rig
    stack = rig.stack
    assert stack.centre_proc is not None and stack.village_broker is not None
    stack.centre_proc.stop()
    key, password = stack.register_device("btn-proto", "h-404")
    dev = ProtoDevice("btn-proto", key, HOST, stack.village_broker.port, password)
    await dev.connect()
    try:
        c = await dev.send("alarm")
        await dev.wait_ack(c, "stored")
        rows = await await_(lambda: read_sent(rig.gw_modem.dir), 15, "the SMS to the centre")
        assert [r["to"] for r in rows] == [CENTRE_NUMBER]  # no card: no contacts
        assert gauges(stack).get("centre_link") == "up"
        assert "event=local_alert" not in (stack.root / "gateway.log").read_text()
        # A restart of the gateway while the alarm still waits: nothing is sent twice.
        assert stack.gateway_proc is not None
        stack.gateway_proc.stop()
        (stack.gateway_dir / "metrics.json").unlink()  # only the new process's counts from here
        stack.start_gateway()
        # Several sweeps of the new process with the alarm still past its deadline.
        await await_(lambda: counts(stack).get("fallback_sweeps", 0) >= 5, 15, "sweeps")
        assert counts(stack).get("forwarded", 0) >= 1
        assert len(read_sent(rig.gw_modem.dir)) == 1
    finally:
        await dev.close()
