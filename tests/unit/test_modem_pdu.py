"""SMS PDUs: published vectors, and every PDU we build read back by an independent library
(python-gsmmodem-new's pdu module, a test dependency) and every PDU it builds read by ours."""

from __future__ import annotations

import datetime as dt

import gsmmodem.pdu as ref
import pytest

from modem import pdu

CHINESE_LONG = (
    "紧急报警：幸福村三组张三（12号）于14:05按下一键报警。请立即前往查看，并回复1或收到确认；"
    "无法前往请回复0。家属电话13900139000。本短信由乡镇一键报警中心发送。"
)
WHEN = dt.datetime(2026, 11, 27, 20, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def test_published_sms_submit_vector_is_reproduced() -> None:
    # The SMS-SUBMIT example of the classic PDU tutorial (dreamfabric): "hellohello" to
    # +46708251358, no status report, relative validity 0xAA (4 days).
    parts = pdu.encode_submit("+46708251358", "hellohello", status_report=False, validity_minutes=4 * 1440)
    assert [p.hex for p in parts] == ["00" + "11000B916407281553F80000AA0AE8329BFD4697D9EC37"]
    assert parts[0].tpdu_len == 23


def test_published_sms_deliver_vector_is_read() -> None:
    msg = pdu.decode("07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37")
    assert isinstance(msg, pdu.Deliver)
    assert (msg.smsc, msg.sender, msg.text) == ("+27381000015", "27838890001", "hellohello")
    assert msg.timestamp == dt.datetime(1999, 3, 29, 15, 16, 59, tzinfo=dt.timezone(dt.timedelta(hours=2)))


def test_published_status_report_vector_is_read() -> None:
    # The SMS-STATUS-REPORT in python-gsmmodem's tests: reference 214 delivered to +31628870634.
    msg = pdu.decode("07917248010080F006D60B911326880736F4111011719551401110117195714000")
    assert isinstance(msg, pdu.StatusReport)
    got = (msg.mr, msg.recipient, msg.status, msg.delivered, msg.final)
    assert got == (214, "+31628870634", 0, True, True)
    assert msg.discharge == dt.datetime(2011, 1, 11, 17, 59, 17, tzinfo=dt.timezone(dt.timedelta(hours=1)))


def test_plain_ascii_goes_as_gsm7_and_chinese_as_ucs2() -> None:
    assert pdu.split_text("Alarm at house 12 [test] €")[0] == pdu.DCS_GSM7
    assert pdu.split_text("收到")[0] == pdu.DCS_UCS2


@pytest.mark.parametrize("text", ["hello", "收到", "1", "{curly} ~ €uro ^|", "é" * 160])
def test_single_part_submit_is_identical_to_the_reference_library(text: str) -> None:
    ours = pdu.encode_submit("+8613800138000", text, validity_minutes=None)
    theirs = ref.encodeSmsSubmitPdu("+8613800138000", text, reference=0)
    assert len(ours) == len(theirs) == 1
    assert ours[0].hex == str(theirs[0])
    assert ours[0].tpdu_len == theirs[0].tpduLength


@pytest.mark.parametrize("text", [CHINESE_LONG, "A" * 200 + "[]" * 60, "x" * 161, "字" * 71, "字" * 300])
def test_concatenated_parts_are_read_by_the_reference_library(text: str) -> None:
    parts = pdu.encode_submit("+8613800138000", text, concat_ref=42)
    assert len(parts) > 1
    joined = []
    for seq, part in enumerate(parts, start=1):
        theirs = ref.decodeSmsPdu(part.hex)
        assert theirs["type"] == "SMS-SUBMIT"
        assert theirs["tpdu_length"] == part.tpdu_len
        (udh,) = theirs["udh"]
        assert (udh.reference, udh.parts, udh.number) == (42, len(parts), seq)
        joined.append(theirs["text"])
    assert "".join(joined) == text


def test_part_sizes_follow_the_standard_limits() -> None:
    assert len(pdu.encode_submit("+86138", "a" * 160)) == 1
    assert len(pdu.encode_submit("+86138", "a" * 161)) == 2
    assert len(pdu.encode_submit("+86138", "a" * 306)) == 2  # 153 + 153
    assert len(pdu.encode_submit("+86138", "a" * 307)) == 3
    assert len(pdu.encode_submit("+86138", "字" * 70)) == 1
    assert len(pdu.encode_submit("+86138", "字" * 71)) == 2
    assert len(pdu.encode_submit("+86138", "字" * 134)) == 2  # 67 + 67
    # An escape pair (€ takes two septets) or a surrogate pair is never cut in two.
    _, parts = pdu.split_text("a" * 152 + "€" + "b" * 10)
    assert parts[0] == "a" * 152 and parts[1].startswith("€")
    _, parts = pdu.split_text("字" * 66 + "😀" + "x" * 5)
    assert parts[0] == "字" * 66 and parts[1].startswith("😀")


@pytest.mark.parametrize("text", [CHINESE_LONG, "B" * 400, "ok"])
def test_reference_library_parts_are_read_by_ours(text: str) -> None:
    theirs = ref.encodeSmsSubmitPdu("+8613800138000", text, reference=9)
    decoded = [pdu.decode(str(p)) for p in theirs]
    assert all(isinstance(d, pdu.Submit) for d in decoded)
    assert "".join(d.text for d in decoded if isinstance(d, pdu.Submit)) == text
    for d in decoded:
        assert isinstance(d, pdu.Submit) and d.number == "+8613800138000" and d.mr == 9


@pytest.mark.parametrize("text", ["收到", "1", "yes, on my way [5 min]", CHINESE_LONG[:60]])
def test_deliver_we_build_is_read_by_both(text: str) -> None:
    hx = pdu.encode_deliver("+8613900139000", text, WHEN)
    ours = pdu.decode(hx)
    theirs = ref.decodeSmsPdu(hx)
    assert isinstance(ours, pdu.Deliver)
    assert (ours.sender, ours.text, ours.timestamp) == ("+8613900139000", text, WHEN)
    assert (theirs["type"], theirs["number"], theirs["text"]) == ("SMS-DELIVER", "+8613900139000", text)
    assert theirs["time"].utcoffset() == WHEN.utcoffset()


def test_concatenated_deliver_carries_its_header() -> None:
    hx = pdu.encode_deliver("+8613900139000", "第二部分", WHEN, concat=pdu.Concat(7, 3, 2))
    msg = pdu.decode(hx)
    assert isinstance(msg, pdu.Deliver) and msg.concat == pdu.Concat(7, 3, 2) and msg.text == "第二部分"
    hx7 = pdu.encode_deliver("+8613900139000", "part two", WHEN, concat=pdu.Concat(200, 2, 2))
    msg7 = pdu.decode(hx7)
    assert isinstance(msg7, pdu.Deliver) and msg7.text == "part two" and msg7.concat == pdu.Concat(200, 2, 2)
    assert ref.decodeSmsPdu(hx7)["text"] == "part two"


def test_status_report_we_build_is_read_by_both() -> None:
    hx = pdu.encode_status_report(77, "+8613800138000", 0x41, WHEN, WHEN)
    ours = pdu.decode(hx)
    assert isinstance(ours, pdu.StatusReport)
    assert (ours.mr, ours.recipient, ours.delivered, ours.final) == (77, "+8613800138000", False, True)
    theirs = ref.decodeSmsPdu(hx)
    assert (theirs["reference"], theirs["status"]) == (77, 0x41)


def test_sixteen_bit_concatenation_reference_is_read() -> None:
    # IEI 0x08 (16-bit reference), as some networks send: header 06 08 04 12 34 02 01.
    body = bytes([6, 0x08, 4, 0x12, 0x34, 2, 1]) + "你好".encode("utf-16-be")
    tpdu = bytes([0x44]) + pdu.encode_address("+8613900139000") + bytes([0, 8]) + pdu.encode_timestamp(WHEN)
    msg = pdu.decode("00" + (tpdu + bytes([len(body)]) + body).hex())
    assert isinstance(msg, pdu.Deliver) and msg.text == "你好" and msg.concat == pdu.Concat(0x1234, 2, 1)


def test_alphanumeric_sender_is_read() -> None:
    name = pdu.pack7(pdu.gsm7_septets("CMCC") or [])
    tpdu = bytes([0x04, 7, 0xD0]) + name + bytes([0, 0]) + pdu.encode_timestamp(WHEN) + bytes([2])
    tpdu += pdu.pack7(pdu.gsm7_septets("hi") or [])
    msg = pdu.decode("00" + tpdu.hex())
    assert isinstance(msg, pdu.Deliver) and msg.sender == "CMCC" and msg.text == "hi"


@pytest.mark.parametrize("bad", ["", "zz", "00", "0004", "000B91", "0004" + "0B91" + "00" * 3,
                                 "07917283010010F5040BC87238880900F10000993092516195800AFF",
                                 "0003000000", "0044" + "0B916831930031F9" + "0008" + "00" * 7 + "0509"])
def test_garbage_raises_only_pdu_error(bad: str) -> None:
    with pytest.raises(pdu.PduError):
        pdu.decode(bad)


@pytest.mark.parametrize("number", ["", "+", "12ab", "+86 138 0013 8000 0000 0000 1"])
def test_bad_numbers_are_refused_with_the_number_named(number: str) -> None:
    with pytest.raises(pdu.PduError, match="phone number"):
        pdu.encode_submit(number, "hi")


def test_text_beyond_the_basic_plane_survives_a_split() -> None:
    # The reference library cannot encode these; our own decoder reads what we built.
    text = "平安" + "😀" * 40
    parts = pdu.encode_submit("+8613800138000", text)
    decoded = [pdu.decode(p.hex) for p in parts]
    assert len(parts) == 2
    assert "".join(d.text for d in decoded if isinstance(d, pdu.Submit)) == text


def test_validity_is_encoded_in_the_relative_format() -> None:
    assert pdu._relative_validity(5) == 0
    assert pdu._relative_validity(60) == 11
    assert pdu._relative_validity(24 * 60) == 167
    assert pdu._relative_validity(4 * 1440) == 0xAA
    assert pdu._relative_validity(63 * 7 * 1440) == 255
