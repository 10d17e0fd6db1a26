"""The device's flash state (device_fw/store.py) on the MicroPython unix port: the counter is
reserved in blocks and never reused across reboots, and the outbox keeps exact bytes, moves
states forward only, and stays bounded."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

RUNNER = r"""
import sys, json, os
import store

def ls(d="."):
    return sorted(os.listdir(d))

def read(path):
    with open(path, "rb") as f:
        return f.read().decode()

def counter_blocks():
    c = store.Counter(block=4)
    c.load()
    first = [c.take() for _ in range(6)]
    reserved = read("ctr").strip()
    # reboot: a new Counter over the same file
    c2 = store.Counter(block=4)
    c2.load()
    second = [c2.take() for _ in range(3)]
    return {"first": first, "reserved": reserved, "second": second, "files": ls()}

def counter_tmp_left_by_crash():
    # A crash after writing ctr.tmp but before the rename: the larger value wins.
    store.write_atomic("ctr", b"17\n")
    with open("ctr.tmp", "wb") as f:
        f.write(b"33\n")
    c = store.Counter()
    c.load()
    return {"next": c.take()}

def counter_floor_from_outbox():
    c = store.Counter()
    c.load(floor=40)
    return {"next": c.take()}

def outbox_roundtrip():
    ob = store.Outbox(cap=4)
    ob.load()
    e = store.Entry(5, "alarm", store.SENDING, 100)
    payload = b"0" * 64 + b' {"t":"alarm","d":"btn-0001","c":5}'
    ob.add(e, "ok/v1/dev/btn-0001/up/alarm", payload)
    buf = bytearray(640)
    tl, n = ob.read(e, buf)
    files0 = ls("ob")
    back = not ob.advance(e, store.SENDING)
    fwd = ob.advance(e, store.STORED)
    files1 = ls("ob")
    stale = not ob.advance(e, store.SENDING)
    ob.advance(e, store.RECEIVED)
    files2 = ls("ob")
    ob2 = store.Outbox(cap=4)
    top = ob2.load()
    reloaded = [(x.c, x.kind, x.state) for x in ob2.entries]
    ob2.advance(ob2.entries[0], store.ACKED)
    return {
        "topic": bytes(buf[:tl]).decode(), "payload": bytes(buf[tl + 1:n]).decode(),
        "files0": files0, "back_refused": back, "fwd": fwd, "files1": files1,
        "stale_refused": stale, "files2": files2, "top": top, "reloaded": reloaded,
        "after_ack": ls("ob"), "ob2_len": len(ob2),
    }

def outbox_final_states():
    ob = store.Outbox()
    ob.load()
    out = {}
    for c, kind in ((1, "test"), (2, "cancel"), (3, "alarm")):
        e = store.Entry(c, kind, store.SENDING)
        ob.add(e, "ok/v1/dev/btn-0001/up/" + kind, b"x")
        ob.advance(e, store.RECEIVED)
        out[kind] = e.state
    out["left"] = [(e.c, e.state) for e in ob.entries]
    out["files"] = ls("ob")
    return out

def outbox_bounded():
    ob = store.Outbox(cap=3)
    ob.load()
    es = []
    for c, kind in ((1, "alarm"), (2, "test"), (3, "alarm")):
        e = store.Entry(c, kind, store.SENDING)
        ob.add(e, "ok/v1/dev/btn-0001/up/" + kind, b"p%d" % c)
        es.append(e)
    ob.advance(es[2], store.STORED)
    d1 = ob.add(store.Entry(4, "alarm", store.SENDING), "ok/v1/dev/btn-0001/up/alarm", b"p4")
    d2 = ob.add(store.Entry(5, "alarm", store.SENDING), "ok/v1/dev/btn-0001/up/alarm", b"p5")
    d3 = ob.add(store.Entry(6, "alarm", store.SENDING), "ok/v1/dev/btn-0001/up/alarm", b"p6")
    return {"dropped": [d1.c, d2.c, d3.c], "drops": ob.drops, "left": [e.c for e in ob.entries],
            "files": ls("ob")}

def outbox_stray_files():
    os.mkdir("ob")
    with open("ob/7.0.tmp", "wb") as f:
        f.write(b"half written")
    with open("ob/junk", "wb") as f:
        f.write(b"?")
    with open("ob/8.0", "wb") as f:
        f.write(b"ok/v1/dev/btn-0001/up/alarm\nPAYLOAD")
    ob = store.Outbox()
    top = ob.load()
    return {"top": top, "entries": [(e.c, e.kind) for e in ob.entries], "files": ls("ob")}

name = sys.argv[1]
print(json.dumps(globals()[name]()))
"""


@pytest.fixture
def run(tmp_path: Path) -> Any:
    script = fw.write_script(tmp_path / "bin", "store_cases.py", RUNNER)
    flash = tmp_path / "flash"
    flash.mkdir()

    def go(case: str) -> dict[str, Any]:
        (result,) = fw.micropython_json_lines(script, case, cwd=flash)
        assert isinstance(result, dict)
        return result

    return go


def test_counter_is_reserved_in_blocks_and_resumes_after_reserved_end(run: Any) -> None:
    r = run("counter_blocks")
    assert r["first"] == [1, 2, 3, 4, 5, 6]
    assert r["reserved"] == "9"  # blocks 1..4, 5..8 reserved before use
    assert r["second"] == [9, 10, 11]  # the reboot skips the unused 7, 8: nothing reused
    assert r["files"] == ["ctr"]  # no temporary file left


def test_counter_uses_larger_value_left_by_interrupted_write(run: Any) -> None:
    assert run("counter_tmp_left_by_crash")["next"] == 33


def test_counter_starts_above_outbox_entries(run: Any) -> None:
    assert run("counter_floor_from_outbox")["next"] == 40


def test_outbox_keeps_exact_bytes_and_moves_forward_only(run: Any) -> None:
    r = run("outbox_roundtrip")
    assert r["topic"] == "ok/v1/dev/btn-0001/up/alarm"
    assert r["payload"] == "0" * 64 + ' {"t":"alarm","d":"btn-0001","c":5}'
    assert r["files0"] == ["5.0"]
    assert r["back_refused"] and r["fwd"] and r["stale_refused"]
    assert r["files1"] == ["5.1"]
    assert r["files2"] == ["5.2"]
    assert r["top"] == 6
    assert r["reloaded"] == [[5, "alarm", "received"]]
    assert r["after_ack"] == [] and r["ob2_len"] == 0


def test_tests_and_cancels_are_done_when_received_alarms_when_acked(run: Any) -> None:
    r = run("outbox_final_states")
    assert r["test"] == r["cancel"] == r["alarm"] == "received"
    assert r["left"] == [[3, "received"]]
    assert r["files"] == ["3.2"]


def test_full_outbox_drops_what_the_gateway_has_then_tests_then_oldest(run: Any) -> None:
    r = run("outbox_bounded")
    assert r["dropped"] == [3, 2, 1]
    assert r["drops"] == 3
    assert r["left"] == [4, 5, 6]
    assert r["files"] == ["4.0", "5.0", "6.0"]


def test_outbox_load_removes_half_written_and_foreign_files(run: Any) -> None:
    r = run("outbox_stray_files")
    assert r["entries"] == [[8, "alarm"]]
    assert r["top"] == 9
    assert r["files"] == ["8.0"]
