"""The wire codec against the golden vectors (docs/vectors/protocol-v1.json), under CPython and
under the MicroPython unix port, plus a bounded fuzz run in both: every input either decodes or
raises okproto.ProtocolError. MACs in the vectors are checked against CPython's hmac module, an
oracle independent of okproto's own HMAC."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from device_fw import okproto

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

DOC: dict[str, Any] = json.loads(fw.VECTORS.read_text())
KEYS = {name: bytes.fromhex(h) for name, h in DOC["keys"].items()}
VECTORS: list[dict[str, Any]] = DOC["vectors"]
REASONS = (
    okproto.OVERSIZED,
    okproto.BAD_TOPIC,
    okproto.MALFORMED,
    okproto.UNKNOWN_DEVICE,
    okproto.BAD_MAC,
    okproto.BAD_JSON,
    okproto.BAD_FIELD,
    okproto.TOPIC_MISMATCH,
)


def payload_of(v: dict[str, Any]) -> bytes:
    if "payload" in v:
        return str(v["payload"]).encode()
    return bytes.fromhex(v["payload_hex"])


def run_cpython(v: dict[str, Any]) -> dict[str, Any]:
    # The same result shape as fw.VECTOR_RUNNER prints under MicroPython.
    out: dict[str, Any] = {"id": v["id"]}
    op = v["op"]
    try:
        if op == "encode_up":
            t, p = okproto.encode_up(KEYS[v["key"]], v["device"], v["kind"], v["counter"], v["fields"])
            out.update(topic=t, payload=p.decode())
        elif op == "encode_ack":
            t, p = okproto.encode_ack(
                KEYS[v["key"]],
                v["device"],
                v["counter"],
                v["ref"],
                v["state"],
                v.get("why"),
                v.get("by"),
            )
            out.update(topic=t, payload=p.decode())
        elif op == "encode_bc":
            t, p = okproto.encode_bc(KEYS[v["key"]], v["device"], v["counter"], v["bc"])
            out.update(topic=t, payload=p.decode())
        elif op == "open_up":
            reg = v["registry"]
            d, k, body = okproto.open_up(
                v["topic"], payload_of(v), lambda dev: KEYS[reg[dev]] if dev in reg else None
            )
            out["ok"] = {"device": d, "kind": k, "body": body}
        elif op == "open_down":
            body = okproto.open_down(KEYS[v["key"]], v["device"], v["topic"], payload_of(v))
            out["ok"] = {"body": body}
        elif op == "check_id":
            out["ok"] = {"valid": okproto.valid_id(v["text"]), "reserved": okproto.reserved_id(v["text"])}
        elif op == "event_window":
            okproto.check_event_window(v["counter"], v["high"], v["age_ms"])
            out["ok"] = {"accepted": True}
        else:
            raise AssertionError(f"unknown op {op}")
    except okproto.ProtocolError as exc:
        out["error"] = exc.reason
    return out


def check(v: dict[str, Any], got: dict[str, Any]) -> None:
    want = v["expect"]
    assert "crash" not in got, f"{v['id']}: {got['crash']}"
    if "error" in want:
        assert got.get("error") == want["error"], f"{v['id']}: want {want}, got {got}"
    elif "ok" in want:
        assert got.get("ok") == want["ok"], f"{v['id']}: want {want}, got {got}"
    else:
        assert (got.get("topic"), got.get("payload")) == (want["topic"], want["payload"]), v["id"]


def oracle_mac(key: bytes, topic: str, body: bytes) -> str:
    return hmac.new(key, topic.encode() + b"\x00" + body, hashlib.sha256).hexdigest()


def test_vector_file_covers_the_protocol() -> None:
    assert len(VECTORS) >= 30
    ids = [v["id"] for v in VECTORS]
    assert len(ids) == len(set(ids)), "vector ids must be unique"
    for v in VECTORS:
        assert v["clause"].startswith("§"), v["id"]
    ops = {v["op"] for v in VECTORS}
    assert ops == {
        "encode_up", "encode_ack", "encode_bc", "open_up", "open_down", "check_id", "event_window"
    }
    encoded = {v["kind"] for v in VECTORS if v["op"] == "encode_up"}
    assert encoded == set(okproto.KINDS_UP)
    errors = {v["expect"]["error"] for v in VECTORS if "error" in v["expect"]}
    assert errors == {*REASONS, okproto.REPLAY}


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_cpython(v: dict[str, Any]) -> None:
    check(v, run_cpython(v))


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_mac_agrees_with_hmac_module(v: dict[str, Any]) -> None:
    # Every MAC the vectors call good is HMAC-SHA256(key, topic 0x00 body) by CPython's hmac;
    # every bad_mac vector is not.
    want = v["expect"]
    reason = want.get("error")
    if v["op"] in ("check_id", "event_window"):
        return  # no frame, no MAC
    if reason in ("oversized", "bad_topic", "malformed", "unknown_device"):
        return  # rejected before the MAC is looked at
    if v["op"] in ("encode_up", "encode_ack", "encode_bc"):
        key, topic, payload = KEYS[v["key"]], want["topic"], want["payload"].encode()
    elif v["op"] == "open_down":
        key, topic, payload = KEYS[v["key"]], v["topic"], payload_of(v)
    else:
        name = v["registry"][v["topic"].split("/")[3]]
        key, topic, payload = KEYS[name], v["topic"], payload_of(v)
    mac, body = payload[:64].decode(errors="replace"), payload[65:]
    if reason == "bad_mac":
        assert mac != oracle_mac(key, topic, body), v["id"]
    else:
        assert mac == oracle_mac(key, topic, body), v["id"]


def test_mac_covers_the_topic() -> None:
    # §3.1: the same body framed for two topics gives two MACs, and neither opens on the other.
    body = b'{"t":"alarm","d":"btn-0001","c":7}'
    key = KEYS["k1"]
    a = okproto.frame(key, "ok/v1/dev/btn-0001/up/alarm", body)
    b = okproto.frame(key, "ok/v1/dev/btn-0001/up/test", body)
    assert a[65:] == b[65:] and a[:64] != b[:64]
    with pytest.raises(okproto.ProtocolError) as err:
        okproto.open_up("ok/v1/dev/btn-0001/up/test", a, lambda d: key)
    assert err.value.reason == okproto.BAD_MAC


def test_vectors_micropython(tmp_path: Path) -> None:
    script = fw.write_script(tmp_path, "vectors.py", fw.VECTOR_RUNNER)
    results = fw.micropython_json_lines(script, str(fw.VECTORS), heapsize="4M")
    by_id = {r["id"]: r for r in results}
    assert set(by_id) == {v["id"] for v in VECTORS}
    for v in VECTORS:
        check(v, by_id[v["id"]])


# -- fuzz

_N_FUZZ = 3000
_TOPICS = (
    "ok/v1/dev/btn-0001/up/alarm",
    "ok/v1/dev/btn-0001/up/cancel",
    "ok/v1/dev/btn-0001/up/test",
    "ok/v1/dev/btn-0001/up/hb",
)
_JUNK = (
    b'"',
    b"{",
    b"}",
    b":",
    b",",
    b"[",
    b"]",
    b"\\",
    b"1e999",
    b"-",
    b"null",
    b"\xff",
    b"\x00",
    b"NaN",
    b" ",
)


def _seeds() -> list[tuple[str, str, bytes]]:
    key = KEYS["k1"]
    out = []
    for kind, fields in (
        ("alarm", {"up": 1}),
        ("cancel", {"ref": 3, "up": 5}),
        ("test", {}),
        ("hb", {"bat": 50, "mv": 3700, "rssi": -70, "fw": "x", "ob": 2, "up": 9}),
    ):
        t, p = okproto.encode_up(key, "btn-0001", kind, 7, fields)
        out.append(("up", t, p))
    t, p = okproto.encode_ack(key, "btn-0001", 99, 7, "acked", by="staff")
    out.append(("down", t, p))
    return out


def _mutate(rng: random.Random, op: str, topic: str, payload: bytes) -> tuple[str, str, bytes]:
    data = bytearray(payload)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        pos = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif choice == 1:
            data[pos:pos] = rng.choice(_JUNK)
        elif choice == 2:
            del data[pos : pos + rng.randint(1, 8)]
        elif choice == 3:
            data = data[:pos]
        elif choice == 4:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 600)))
        elif choice == 5 and rng.random() < 0.3:
            topic = rng.choice((*_TOPICS, "ok/v1/dev/btn-0001/down/ack", "ok/v1/dev//up/x", "a/b"))
        else:
            data[pos:pos] = rng.choice(_JUNK)
    body = bytes(data[65:])
    if rng.random() < 0.6 and len(body) <= okproto.MAX_BODY:
        # Re-MAC the mutated body so the input reaches the JSON and field checks.
        data = bytearray(okproto.frame(KEYS["k1"], topic, body))
    return op, topic, bytes(data)


def _fuzz_inputs() -> list[tuple[str, str, bytes]]:
    rng = random.Random(20240601)
    seeds = _seeds()
    return [_mutate(rng, *rng.choice(seeds)) for _ in range(_N_FUZZ)]


def _cpython_outcome(op: str, topic: str, data: bytes) -> str:
    key = KEYS["k1"]
    try:
        if op == "up":
            okproto.open_up(topic, data, lambda dev: key if dev == "btn-0001" else None)
        else:
            okproto.open_down(key, "btn-0001", topic, data)
        return "ok"
    except okproto.ProtocolError as exc:
        return exc.reason


def test_fuzz_cpython_only_protocol_errors() -> None:
    counts: dict[str, int] = {}
    for op, topic, data in _fuzz_inputs():
        r = _cpython_outcome(op, topic, data)  # anything but ProtocolError propagates
        assert r == "ok" or r in REASONS
        counts[r] = counts.get(r, 0) + 1
    # The run reaches deep checks, not only the MAC.
    assert counts.get("bad_json", 0) > 50 and counts.get("bad_field", 0) + counts.get("ok", 0) > 50


def test_fuzz_micropython_only_protocol_errors(tmp_path: Path) -> None:
    inputs = _fuzz_inputs()
    lines = [f"{op}\t{topic}\t{data.hex()}" for op, topic, data in inputs]
    (tmp_path / "fuzz.txt").write_text("\n".join(lines) + "\n")
    script = fw.write_script(tmp_path, "fuzz.py", fw.FUZZ_RUNNER)
    (result,) = fw.micropython_json_lines(script, str(tmp_path / "fuzz.txt"), KEYS["k1"].hex(), heapsize="4M")
    assert result["crashes"] == []
    assert sum(result["counts"].values()) == len(inputs)
    assert set(result["counts"]) <= {"ok", *REASONS}
