"""The AT channel on plain bytes: responses, unsolicited codes in the middle of them, echo,
garbage, errors and timeouts, with no port at all."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from modem import pdu, same_number
from modem.at import Channel, Urc
from modem.errors import CmsError, CommandError, ModemGone, ModemTimeout


class Wire:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.urcs: list[Urc] = []
        self.wrote = asyncio.Event()
        self.channel = Channel(self._write, self.urcs.append)

    def _write(self, data: bytes) -> None:
        self.written.append(data)
        self.wrote.set()

    def answer(self, data: bytes) -> None:
        self.channel.feed(data)


async def _written(wire: Wire, count: int) -> None:
    while len(wire.written) < count:
        wire.wrote.clear()
        await asyncio.wait_for(wire.wrote.wait(), 2)


async def test_a_command_returns_its_information_lines() -> None:
    w = Wire()
    task = asyncio.create_task(w.channel.command("AT+CSQ", prefix="+CSQ:"))
    await _written(w, 1)
    assert w.written == [b"AT+CSQ\r"]
    w.answer(b"\r\n+CSQ: 21,99\r\n\r\nOK\r\n")
    assert await task == ["+CSQ: 21,99"]
    assert w.channel.garbage == 0


async def test_echo_before_ate0_is_not_garbage() -> None:
    w = Wire()
    task = asyncio.create_task(w.channel.command("ATE0"))
    await _written(w, 1)
    w.answer(b"ATE0\r\r\nOK\r\n")
    assert await task == []
    assert w.channel.garbage == 0


async def test_unsolicited_codes_inside_a_response_go_to_their_handler() -> None:
    w = Wire()
    now = dt.datetime.now(dt.UTC)
    report = pdu.encode_status_report(5, "+8613800138000", 0, now, now)
    task = asyncio.create_task(w.channel.send_pdu(20, "00AB", prompt_timeout=1, timeout=1))
    await _written(w, 1)
    # The prompt arrives split, with an incoming message notice before it.
    w.answer(b'\r\n+CMTI: "SM",3\r\n\r\n')
    w.answer(b"> ")
    await _written(w, 2)
    assert w.written[1] == b"00AB\x1a"
    w.answer(b"\r\n+CMGS: 5\r\n\r\n+CDS: 25\r\n" + report.encode() + b"\r\nRDY\r\n\r\nOK\r\n")
    assert await task == ["+CMGS: 5"]
    assert w.urcs == [Urc('+CMTI: "SM",3'), Urc("+CDS: 25", report)]
    assert w.channel.garbage == 0


async def test_garbage_lines_are_counted_and_ignored() -> None:
    w = Wire()
    w.answer(b"\r\n\x00\xff junk\r\n+WEIRD: 1\r\n")
    task = asyncio.create_task(w.channel.command("AT+CPIN?", prefix="+CPIN:"))
    await _written(w, 1)
    w.answer(b"\r\nnoise in the middle\r\n+CPIN: READY\r\n\r\nOK\r\n")
    assert await task == ["+CPIN: READY"]
    assert w.channel.garbage == 3


async def test_a_cds_notice_without_its_pdu_counts_as_garbage() -> None:
    w = Wire()
    w.answer(b"\r\n+CDS: 25\r\nnot hex at all\r\n")
    assert w.urcs == []
    assert w.channel.garbage == 2


async def test_an_endless_line_is_dropped() -> None:
    w = Wire()
    w.answer(b"x" * 5000)
    assert w.channel.garbage == 1


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [(b"\r\n+CMS ERROR: 331\r\n", CmsError, 331), (b"\r\n+CME ERROR: 10\r\n", CommandError, 10),
     (b"\r\nERROR\r\n", CommandError, None)],
)
async def test_errors_are_typed_with_their_code(
    answer: bytes, error: type[Exception], code: int | None
) -> None:
    w = Wire()
    task = asyncio.create_task(w.channel.command("AT+CMGD=1"))
    await _written(w, 1)
    w.answer(answer)
    with pytest.raises(error) as info:
        await task
    assert getattr(info.value, "code", None) == code


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("+8613900139000", "13900139000", True), ("+8613900139000", "+86 139-0013-9000", True),
     ("013900139000", "+8613900139000", True), ("+8613900139000", "+8613900139001", False),
     ("+8613900139000", "139000", False), ("", "", False)],
)
def test_phone_numbers_in_national_and_international_form_match(a: str, b: str, same: bool) -> None:
    assert same_number(a, b) is same


async def test_cms_error_names_its_meaning() -> None:
    exc = CmsError(331, "AT+CMGS=20")
    assert exc.meaning == "no network service"
    assert "+CMS ERROR 331 (no network service)" in str(exc)


async def test_a_send_refused_before_the_prompt_raises_its_error() -> None:
    w = Wire()
    task = asyncio.create_task(w.channel.send_pdu(20, "00AB", prompt_timeout=1, timeout=1))
    await _written(w, 1)
    w.answer(b"\r\n+CMS ERROR: 310\r\n")
    with pytest.raises(CmsError):
        await task
    assert len(w.written) == 1  # the PDU was never sent


async def test_no_answer_times_out_and_a_late_ok_is_not_taken_for_the_next_command() -> None:
    w = Wire()
    with pytest.raises(ModemTimeout, match=r"did not answer AT within 0\.05 s"):
        await w.channel.command("AT", timeout=0.05)
    w.answer(b"\r\nOK\r\n")  # the late answer
    assert w.channel.stray == 1
    task = asyncio.create_task(w.channel.command("AT+CSQ", prefix="+CSQ:"))
    await _written(w, 2)
    w.answer(b"\r\n+CSQ: 5,99\r\n\r\nOK\r\n")
    assert await task == ["+CSQ: 5,99"]


async def test_a_prompt_that_never_comes_cancels_the_pdu_input_with_escape() -> None:
    w = Wire()
    with pytest.raises(ModemTimeout):
        await w.channel.send_pdu(20, "00AB", prompt_timeout=0.05, timeout=1)
    assert w.written[-1] == b"\x1b"


async def test_a_vanished_port_fails_the_waiting_command_and_every_later_one() -> None:
    w = Wire()
    task = asyncio.create_task(w.channel.command("AT"))
    await _written(w, 1)
    w.channel.gone(ModemGone("unplugged"))
    with pytest.raises(ModemGone):
        await task
    with pytest.raises(ModemGone):
        await w.channel.command("AT")
