"""The modem driver against the virtual modem over a real pseudo-terminal, and `onekey vmodem`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from harness.vmodem import VirtualModem, VModemError, VModemProcess, control, read_sent
from modem import (
    CmsError,
    DeliveryReport,
    Event,
    IncomingSms,
    Modem,
    ModemGone,
    ModemTimeout,
    NoNetwork,
    SimMissing,
)

pytestmark = pytest.mark.integration

CONTACT = "+8613900139000"
CENTRE = "+8613800138000"
LONG_ZH = ("【一键报警】幸福村三组张三（幸福村三组12号）于14:05按下一键报警，中心60秒内无人应答。"
           "请立即前往查看，到达或确认后回复1或收到；无法前往请回复0。")


@pytest.fixture
def vmodem(tmp_path: Path) -> Iterator[VirtualModem]:
    vm = VirtualModem(tmp_path / "vm", report_delay=0.05)
    vm.start()
    t = threading.Thread(target=vm.serve, daemon=True)
    t.start()
    try:
        yield vm
    finally:
        vm.request_stop()
        t.join(5)
        vm.stop()


def _modem(vm: VirtualModem, **kw: float) -> Modem:
    opts: dict[str, float] = {"command_timeout": 1.0, "send_timeout": 2.0, "poll_interval": 30,
                              "reopen_interval": 0.1}
    opts.update(kw)
    return Modem(str(vm.link), **opts)  # type: ignore[arg-type]


@pytest.fixture
async def modem(vmodem: VirtualModem) -> AsyncIterator[Modem]:
    m = _modem(vmodem)
    await m.start()
    try:
        yield m
    finally:
        await m.close()


async def _next(m: Modem, kind: type[Event], timeout: float = 5.0) -> Event:
    async def find() -> Event:
        async for ev in m.events():
            if isinstance(ev, kind):
                return ev
        raise AssertionError("events ended")

    return await asyncio.wait_for(find(), timeout)


async def _state(m: Modem, state: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while m.state != state:
        assert time.monotonic() < deadline, f"state stayed {m.state} ({m.detail}), expected {state}"
        await asyncio.sleep(0.02)


async def test_long_chinese_text_arrives_as_one_decoded_message_in_parts(
    modem: Modem, vmodem: VirtualModem,
) -> None:
    assert modem.state == "ok"
    assert len(LONG_ZH) > 70
    result = await modem.send_sms(CENTRE, LONG_ZH)
    assert result.parts == 2 and len(result.refs) == 2
    (row,) = read_sent(vmodem.dir)
    assert (row["to"], row["text"], row["parts"], row["refs"]) == (CENTRE, LONG_ZH, 2, list(result.refs))


async def test_plain_ascii_is_sent_and_recorded(modem: Modem, vmodem: VirtualModem) -> None:
    result = await modem.send_sms("13800138000", "TEST alarm h-001 [ok]")
    assert result.parts == 1
    assert read_sent(vmodem.dir)[-1]["text"] == "TEST alarm h-001 [ok]"


async def test_delivery_reports_are_matched_to_the_message(modem: Modem) -> None:
    result = await modem.send_sms(CENTRE, LONG_ZH)
    reports = [await _next(modem, DeliveryReport), await _next(modem, DeliveryReport)]
    assert all(isinstance(r, DeliveryReport) and r.refs == result.refs and r.delivered for r in reports)
    assert {r.ref for r in reports if isinstance(r, DeliveryReport)} == set(result.refs)
    last = reports[-1]
    assert isinstance(last, DeliveryReport) and last.message_delivered


async def test_a_failed_delivery_is_reported_as_final_and_not_delivered(
    modem: Modem, vmodem: VirtualModem,
) -> None:
    vmodem.fault(reports="fail")
    result = await modem.send_sms(CENTRE, "1")
    report = await _next(modem, DeliveryReport)
    assert isinstance(report, DeliveryReport)
    got = (report.refs, report.delivered, report.final, report.message_delivered)
    assert got == (result.refs, False, True, False)


async def test_an_incoming_reply_is_read_decoded_and_deleted(modem: Modem, vmodem: VirtualModem) -> None:
    vmodem.inject_sms(CONTACT, "收到")
    sms = await _next(modem, IncomingSms)
    assert isinstance(sms, IncomingSms) and (sms.sender, sms.text, sms.parts) == (CONTACT, "收到", 1)
    deadline = time.monotonic() + 3
    while vmodem.status()["stored"]:
        assert time.monotonic() < deadline, "the message was not deleted from the SIM"
        await asyncio.sleep(0.02)


async def test_an_incoming_concatenated_reply_is_joined(modem: Modem, vmodem: VirtualModem) -> None:
    vmodem.inject_sms(CONTACT, "我是家属王五，已经在路上，十分钟到。", parts=3)
    sms = await _next(modem, IncomingSms)
    assert isinstance(sms, IncomingSms)
    assert (sms.text, sms.parts) == ("我是家属王五，已经在路上，十分钟到。", 3)


async def test_messages_stored_while_nobody_listened_are_read_at_start(vmodem: VirtualModem) -> None:
    vmodem.inject_sms(CONTACT, "1")
    m = _modem(vmodem)
    await m.start()
    try:
        sms = await _next(m, IncomingSms)
        assert isinstance(sms, IncomingSms) and sms.text == "1"
    finally:
        await m.close()


async def test_a_module_left_inside_a_send_by_a_killed_program_is_taken_back(
    vmodem: VirtualModem,
) -> None:
    fd = os.open(vmodem.link, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"AT+CMGS=20\r")  # then the program dies before the PDU and Ctrl-Z
        deadline = time.monotonic() + 5
        while not vmodem.status()["pdu_input"]:
            assert time.monotonic() < deadline, "the virtual modem never entered PDU input"
            await asyncio.sleep(0.02)
    finally:
        os.close(fd)
    m = _modem(vmodem)
    await m.start()
    try:
        assert m.state == "ok", m.detail
        assert (await m.send_sms(CONTACT, "1")).refs
    finally:
        await m.close()


async def test_no_network_is_a_state_and_a_typed_error_until_it_returns(
    modem: Modem, vmodem: VirtualModem,
) -> None:
    vmodem.fault(network="none")
    with pytest.raises(NoNetwork, match="no network service"):
        await modem.send_sms(CENTRE, "1")
    assert modem.state == "no_network"
    with pytest.raises(NoNetwork, match="not registered"):
        await modem.send_sms(CENTRE, "1")
    vmodem.fault(network="ok")
    await modem.send_sms(CENTRE, "1")  # a send in no_network asks the module again
    assert modem.state == "ok"


async def test_the_network_state_recovers_by_polling(vmodem: VirtualModem) -> None:
    m = _modem(vmodem, poll_interval=0.2)
    await m.start()
    try:
        vmodem.fault(network="none")
        await _state(m, "no_network")
        assert "check the antenna" in m.detail
        vmodem.fault(network="ok")
        await _state(m, "ok")
    finally:
        await m.close()


async def test_a_missing_sim_is_a_state_and_a_typed_error(vmodem: VirtualModem) -> None:
    vmodem.fault(sim="missing")
    m = _modem(vmodem, poll_interval=0.2)
    await m.start()
    try:
        assert m.state == "sim_missing"
        assert "SIM not inserted" in m.detail
        with pytest.raises(SimMissing, match="insert or unlock"):
            await m.send_sms(CENTRE, "1")
        vmodem.fault(sim="present")
        await _state(m, "ok")
    finally:
        await m.close()


async def test_a_sim_pulled_while_running_fails_the_send_as_sim_missing(
    modem: Modem, vmodem: VirtualModem,
) -> None:
    vmodem.fault(sim="missing")
    with pytest.raises(SimMissing, match="310"):
        await modem.send_sms(CENTRE, "1")
    assert modem.state == "sim_missing"


async def test_cms_error_carries_its_code_and_the_next_send_goes_through(
    modem: Modem, vmodem: VirtualModem,
) -> None:
    vmodem.fault(cms=500, count=1)
    with pytest.raises(CmsError) as info:
        await modem.send_sms(CENTRE, "1")
    assert (info.value.code, info.value.meaning) == (500, "unknown error")
    assert modem.state == "ok"
    await modem.send_sms(CENTRE, "1")
    assert len(read_sent(vmodem.dir)) == 1


async def test_slow_answers_raise_modem_timeout(vmodem: VirtualModem) -> None:
    m = _modem(vmodem, command_timeout=0.3, poll_interval=30)
    await m.start()
    try:
        vmodem.fault(delay=1.0)
        with pytest.raises(ModemTimeout, match="did not answer AT\\+CMGS"):
            await m.send_sms(CENTRE, "1")
        vmodem.fault(delay=0)
    finally:
        await m.close()


async def test_unplugged_mid_send_raises_modem_gone_and_the_modem_comes_back(
    modem: Modem, vmodem: VirtualModem
) -> None:
    vmodem.fault(delay=0.5)
    send = asyncio.create_task(modem.send_sms(CENTRE, LONG_ZH))
    deadline = time.monotonic() + 3
    while not vmodem.status()["pdu_input"]:  # the module took AT+CMGS; its prompt is late
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    vmodem.fault(unplug=True)
    with pytest.raises(ModemGone, match=r"is gone"):
        await asyncio.wait_for(send, 5)
    await _state(modem, "gone")
    with pytest.raises(ModemGone):
        await modem.send_sms(CENTRE, "1")
    vmodem.fault(delay=0, plug=True)
    await _state(modem, "ok")
    await modem.send_sms(CENTRE, "1")
    assert read_sent(vmodem.dir)[-1]["text"] == "1"


async def test_a_modem_plugged_in_after_start_is_found(tmp_path: Path) -> None:
    m = Modem(str(tmp_path / "vm" / "ttyV0"), command_timeout=1.0, reopen_interval=0.1)
    await m.start()
    vm = VirtualModem(tmp_path / "vm", report_delay=0.05)
    t: threading.Thread | None = None
    try:
        assert m.state == "gone" and "cannot open" in m.detail
        vm.start()
        t = threading.Thread(target=vm.serve, daemon=True)
        t.start()
        await _state(m, "ok")
    finally:
        await m.close()
        vm.request_stop()
        if t is not None:
            t.join(5)
        vm.stop()


async def test_garbage_lines_are_counted_and_sending_goes_on(modem: Modem, vmodem: VirtualModem) -> None:
    vmodem.fault(garbage=6)
    deadline = time.monotonic() + 3
    while modem.garbage < 6:
        assert time.monotonic() < deadline, f"garbage counted {modem.garbage}"
        await asyncio.sleep(0.02)
    await modem.send_sms(CENTRE, "1")
    vmodem.inject_sms(CONTACT, "1")
    assert isinstance(await _next(modem, IncomingSms), IncomingSms)


def _onekey(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onekey.cli", "vmodem", *args], capture_output=True,
                          text=True, timeout=30, check=False)


async def test_the_command_line_drives_a_running_virtual_modem(tmp_path: Path) -> None:
    d = tmp_path / "vm"
    proc = VModemProcess(d)
    port = proc.start()
    m = Modem(port, command_timeout=1.0, reopen_interval=0.1, poll_interval=0.3)
    try:
        await m.start()
        assert m.state == "ok"
        await m.send_sms(CENTRE, LONG_ZH)
        out = await asyncio.to_thread(_onekey, "sent", "--dir", str(d))
        assert out.returncode == 0
        assert json.loads(out.stdout.splitlines()[-1])["text"] == LONG_ZH

        out = await asyncio.to_thread(_onekey, "send-reply", "--dir", str(d), "--from", CONTACT,
                                      "--text", "收到")
        assert out.returncode == 0, out.stderr
        sms = await _next(m, IncomingSms)
        assert isinstance(sms, IncomingSms) and (sms.sender, sms.text) == (CONTACT, "收到")

        out = await asyncio.to_thread(_onekey, "fault", "--dir", str(d), "--network", "none")
        assert out.returncode == 0 and json.loads(out.stdout)["network"] == "none"
        with pytest.raises(NoNetwork):
            await m.send_sms(CENTRE, "1")

        out = await asyncio.to_thread(_onekey, "fault", "--dir", str(d), "--unplug")
        assert json.loads(out.stdout)["plugged"] is False
        await _state(m, "gone")
        out = await asyncio.to_thread(_onekey, "fault", "--dir", str(d), "--plug", "--network", "ok")
        await _state(m, "ok")
    finally:
        await m.close()
        proc.stop()
    out = await asyncio.to_thread(_onekey, "status", "--dir", str(d))
    assert out.returncode == 2 and "start one with `onekey vmodem run" in out.stderr


def test_control_refuses_an_unknown_request(vmodem: VirtualModem) -> None:
    with pytest.raises(VModemError, match="unknown command"):
        control(vmodem.dir, {"cmd": "explode"})
