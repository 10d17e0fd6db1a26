"""The TTS module driver (device_fw/tts.py): frame bytes checked against vectors written from
the two modules' frame layouts (XFS5152CE: 0xFD, big-endian length, command, encoding,
UTF-16LE text; SYN6288: the same head, UTF-16BE text and an XOR checksum), under CPython and on
the MicroPython unix port; text chunking; and the driver's conversation with a module
(accepted, refused, silent, stopped mid-sentence) on the unix port."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from device_fw import tts

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

# (text, frame in hex): LEN = 2 (command, encoding) + 2 bytes per character, big-endian.
VECTORS = [
    ("", "fd00020103"),
    ("A", "fd000401034100"),
    ("你好", "fd00060103604f7d59"),
    ("村民请注意", "fd000c01035167116cf78be86c0f61"),
    ("Hi，1。", "fd000c0103480069000cff31000230"),
    ("😀", "fd000401033f00"),  # outside the BMP: "?" (the protocol never sends it)
    ("啊" * 300, "fd025a0103" + "4a55" * 300),
]
COMMANDS = [(tts.STOP_FRAME, "fd000102"), (tts.STATUS_FRAME, "fd000121")]

# SYN6288 (text, frame in hex): LEN = 3 (command, parameter, checksum) + 2 bytes per character,
# the text big-endian, the last byte the XOR of every byte before it.
SYN6288_VECTORS = [
    ("", "fd00030103fc"),
    ("A", "fd000501030041bb"),
    ("你好", "fd000701034f60597df3"),
    ("村民请注意", "fd000d010367516c118bf76ce8610f2f"),
    ("Hi，1。", "fd000d010300480069ff0c0031300223"),
]
# Stop and status query as SYN6288 drivers and its datasheet write them.
SYN6288_COMMANDS = [(tts.CMD_STOP, "fd000202fd"), (tts.CMD_STATUS, "fd000221de")]


def decode(frame: bytes) -> str:
    """An independent reading of a synthesis frame: the text it carries."""
    assert frame[0] == 0xFD and (frame[1] << 8 | frame[2]) == len(frame) - 3
    assert frame[3] == 0x01 and frame[4] == 0x03
    return frame[5:].decode("utf-16-le")


@pytest.mark.parametrize(("text", "hexed"), VECTORS, ids=[f"v{i}" for i in range(len(VECTORS))])
def test_synthesis_frames_match_the_vectors(text: str, hexed: str) -> None:
    frame = tts.synth_frame(text)
    assert frame.hex() == hexed
    if text != "😀":
        assert decode(frame) == text


def test_command_frames_match_the_vectors() -> None:
    for frame, hexed in COMMANDS:
        assert frame.hex() == hexed


@pytest.mark.parametrize(("text", "hexed"), SYN6288_VECTORS, ids=[f"s{i}" for i in range(5)])
def test_syn6288_frames_carry_big_endian_text_and_an_xor_checksum(text: str, hexed: str) -> None:
    frame = tts.synth_frame(text, tts.SYN6288)
    assert frame.hex() == hexed
    assert frame[0] == 0xFD and (frame[1] << 8 | frame[2]) == len(frame) - 3
    assert frame[3:5] == b"\x01\x03" and frame[5:-1].decode("utf-16-be") == text
    x = 0
    for b in frame:
        x ^= b
    assert x == 0


def test_syn6288_command_frames_match_the_vectors() -> None:
    for cmd, hexed in SYN6288_COMMANDS:
        assert tts.command_frame(cmd, tts.SYN6288).hex() == hexed


def test_syn6288_takes_at_most_200_bytes_of_text() -> None:
    full = tts.synth_frame("啊" * 100, tts.SYN6288)
    assert full[:5].hex() == "fd00cb0103" and full[-1] == 0x34
    with pytest.raises(ValueError, match="does not fit"):
        tts.synth_frame("啊" * 101, tts.SYN6288)
    with pytest.raises(ValueError, match=r"2\.\.200 for the syn6288"):
        tts.Tts(None, None, 202, tts.SYN6288)


def test_a_text_longer_than_a_frame_is_refused() -> None:
    tts.synth_frame("字" * (tts.MAX_TEXT_BYTES // 2))
    with pytest.raises(ValueError, match="does not fit"):
        tts.synth_frame("字" * (tts.MAX_TEXT_BYTES // 2 + 1))


@pytest.mark.parametrize("max_chars", [1, 7, 20, 100])
def test_chunks_cover_the_text_in_order_within_the_limit(max_chars: int) -> None:
    text = "村民们请注意：明天上午九点，在村委会开会。请准时参加！Bring your ID card, please." * 4
    ranges = tts.chunks(text, max_chars)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(text)
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end == start
    assert all(0 < b - a <= max_chars for a, b in ranges)


def test_chunks_break_after_punctuation_when_there_is_some() -> None:
    text = "第一句话比较长一些。第二句话也不短，还有第三句。"
    pieces = [text[a:b] for a, b in tts.chunks(text, 12)]
    assert pieces[0] == "第一句话比较长一些。"
    assert "".join(pieces) == text
    assert tts.chunks("", 10) == []
    plain = "无标点的一段很长的文字"
    assert [plain[a:b] for a, b in tts.chunks(plain, 4)] == ["无标点的", "一段很长", "的文字"]


VECTOR_RUNNER = r"""
import sys, json, binascii
import tts
with open(sys.argv[1]) as f:
    cases = json.load(f)
out = []
for text, max_chars in cases:
    out.append([binascii.hexlify(tts.synth_frame(text)).decode(), tts.chunks(text, max_chars),
                binascii.hexlify(tts.synth_frame(text[:100], tts.SYN6288)).decode()])
print(json.dumps(out))
"""


def test_the_unix_port_builds_the_same_frames_and_chunks(tmp_path: Path) -> None:
    # MicroPython's json does not join surrogate pairs: the case outside the BMP stays here.
    cases = [[text, 7] for text, _ in VECTORS if text != "😀"]
    cases.append(["村民们请注意：明天上午九点，在村委会开会。", 6])
    script = fw.write_script(tmp_path, "vectors.py", VECTOR_RUNNER)
    data = tmp_path / "cases.json"  # a file: the unix port crashes on very long arguments
    data.write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")
    (got,) = fw.micropython_json_lines(script, str(data))
    for (text, max_chars), (hexed, ranges, syn) in zip(cases, got, strict=True):
        assert hexed == tts.synth_frame(text).hex()
        assert syn == tts.synth_frame(text[:100], tts.SYN6288).hex()
        assert [tuple(r) for r in ranges] == tts.chunks(text, max_chars)


DRIVER_RUNNER = r"""
import sys, json, asyncio
import tts

class Uart:
    # A module that answers each frame as told: `mode` is ok, refuse or silent; it stays busy
    # for `busy` status queries after each synthesis frame.
    def __init__(self, mode, busy=2):
        self.mode = mode
        self.busy = busy
        self.left = 0
        self.frames = []
        self.out = bytearray()
    def write(self, buf):
        self.frames.append(bytes(buf))
        if self.mode == "silent":
            return len(buf)
        cmd = buf[3]
        if cmd == 0x01:
            self.out.append(0x45 if self.mode == "refuse" else 0x41)
            self.left = self.busy
        elif cmd == 0x21:
            self.out.append(0x4E if self.left > 0 else 0x4F)
            self.left -= 1
        else:
            self.out.append(0x41)
        return len(buf)
    def any(self):
        return len(self.out)
    def read(self):
        data = bytes(self.out)
        self.out = bytearray()
        return data

tones = []

async def case(name):
    if name == "ok":
        u = Uart("ok")
        t = tts.Tts(u, tones.append, 8)
        done = await t.play("chime", "第一句。第二句也在这里。", 2, lambda: False, lambda: False)
        return {"done": done, "cmds": [f[3] for f in u.frames], "tones": tones}
    if name == "stop":
        u = Uart("ok", busy=1000)
        t = tts.Tts(u, tones.append, 200)
        polls = []
        def stop():
            polls.append(1)
            return len(polls) > 3
        done = await t.play(None, "一直说下去", 1, stop, lambda: False)
        return {"done": done, "last": u.frames[-1][3]}
    if name == "expired":
        u = Uart("ok")
        t = tts.Tts(u, tones.append, 200)
        done = await t.play(None, "只说一遍", 3, lambda: False, lambda: True)
        return {"done": done, "synth": len([f for f in u.frames if f[3] == 1])}
    t = tts.Tts(Uart(name), tones.append, 200)
    try:
        await t.say("你好", lambda: False)
        return {"error": None}
    except tts.TtsError as e:
        return {"error": str(e)}

print(json.dumps(asyncio.run(case(sys.argv[1]))))
"""


@pytest.fixture
def drive(tmp_path: Path) -> Any:
    script = fw.write_script(tmp_path, "driver.py", DRIVER_RUNNER)

    def go(case: str) -> dict[str, Any]:
        (out,) = fw.micropython_json_lines(script, case)
        assert isinstance(out, dict)
        return out

    return go


def test_driver_speaks_chunk_by_chunk_waiting_until_the_module_is_idle(drive: Any) -> None:
    out = drive("ok")
    assert out["done"] is True
    cmds = out["cmds"]
    # Two repeats of three 4-character chunks, each a synthesis frame then status queries
    # until the module is idle (busy twice, then idle).
    assert cmds.count(0x01) == 6 and cmds.count(0x21) == 6 * 3
    assert cmds[:8] == [0x01, 0x21, 0x21, 0x21, 0x01, 0x21, 0x21, 0x21]
    # The chime played before each repeat, and the output was silenced after it.
    assert out["tones"][:5] == [880, 0, 698, 0, 523] and out["tones"][-1] == 0


def test_driver_sends_stop_when_told_to_stop_mid_sentence(drive: Any) -> None:
    out = drive("stop")
    assert out["done"] is False and out["last"] == 0x02


def test_driver_starts_no_repeat_after_expiry(drive: Any) -> None:
    out = drive("expired")
    assert out["done"] is True and out["synth"] == 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [("refuse", "refused a frame"), ("silent", "no answer from the TTS module")],
)
def test_driver_reports_a_refusing_or_silent_module(drive: Any, mode: str, message: str) -> None:
    assert message in (drive(mode)["error"] or "")
