"""The gateway<->centre codecs (protocol/) against the golden vectors
(docs/vectors/uplink-v1.json), plus a bounded fuzz run: every input either parses or raises
`Rejected`, never anything else (h11's rule). Signatures in the vectors are checked with the
`cryptography` package directly, an oracle apart from protocol.signed."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import acks, broadcast, reports, topics, uplink
from protocol.errors import REASONS, Rejected
from protocol.signed import SIG_HEX_LEN, encode_json, sign_frame, verify_frame

DOC: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "vectors" / "uplink-v1.json").read_text()
)
KEYS = {n: Ed25519PrivateKey.from_private_bytes(bytes.fromhex(s)) for n, s in DOC["keys"].items()}
PUBS = {n: k.public_key() for n, k in KEYS.items()}
VECTORS: list[dict[str, Any]] = DOC["vectors"]


def as_json(value: object) -> Any:
    """A record as the vectors write it: dataclass fields, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value))


def payload_of(v: dict[str, Any]) -> bytes:
    return str(v["payload"]).encode() if "payload" in v else bytes.fromhex(v["payload_hex"])


def _area(a: dict[str, Any]) -> broadcast.Area:
    return broadcast.Area(a["village"], tuple(a["groups"]), tuple(a["speakers"]))


def _broadcast(d: dict[str, Any]) -> broadcast.Broadcast:
    return broadcast.Broadcast(
        **{**d, "references": tuple(d["references"]), "areas": tuple(_area(a) for a in d["areas"])}
    )


def _confirmation(d: dict[str, Any]) -> uplink.Confirmation:
    return uplink.Confirmation(d["gw"], d["ts"], tuple((a[0], a[1]) for a in d["acks"]), tuple(d["bc"]))


def _event(d: dict[str, Any]) -> uplink.Event:
    sup = d.get("sup")
    return uplink.Event(**{**d, "sup": None if sup is None else uplink.Supervision(**sup)})


def _heartbeat(d: dict[str, Any]) -> uplink.Heartbeat:
    villages, devs, store = d["villages"], d.get("devs"), d.get("store")
    return uplink.Heartbeat(**{
        **d,
        "villages": None if villages is None else tuple(villages),
        "devs": None if devs is None else tuple(uplink.DeviceSeen(**x) for x in devs),
        "store": None if store is None else uplink.StoreState(**store),
    })


def _batch(d: dict[str, Any]) -> reports.ReportBatch:
    return reports.ReportBatch(d["gw"], d["bc"], tuple(reports.Report(**r) for r in d["reports"]))


Body = dict[str, Any]
# op -> (the vector's field with the record, record from JSON, encoder, topic of a gateway)
ENCODERS: dict[str, tuple[str, Callable[[Any], Any], Callable[[Any], Body], Callable[[str], str]]] = {
    "encode_event": ("event", _event, uplink.encode_event, topics.event),
    "encode_heartbeat": ("heartbeat", _heartbeat, uplink.encode_heartbeat, topics.heartbeat),
    "encode_confirmation": ("confirmation", _confirmation, uplink.encode_confirmation, topics.confirmations),
    "encode_ack": ("ack", lambda d: acks.Ack(**d), acks.encode_ack, topics.ack),
    "encode_broadcast": ("broadcast", _broadcast, broadcast.encode, topics.broadcast),
    "encode_reports": ("batch", _batch, reports.encode, topics.reports),
}


def _gw_of(record: Any) -> str:
    return str(record.gw) if hasattr(record, "gw") else str(record.id).split(":")[0]


def run(v: dict[str, Any]) -> dict[str, Any]:
    op = v["op"]
    try:
        if op in ENCODERS:
            name, make, encode, topic_for = ENCODERS[op]
            record = make(v[name])
            body = encode(record)
            out: dict[str, Any] = {"body": as_json(body)}
            if "sign" in v:
                topic = topic_for(_gw_of(record))
                payload = sign_frame(KEYS[v["sign"]], topic, encode_json(body))
                out.update(topic=topic, payload=payload.decode())
            return out
        if op == "topic":
            make_topic = topics.up if v["direction"] == "up" else topics.down
            return {"topic": make_topic(v["gw"], v["kind"]), "qos": topics.QOS[v["kind"]]}
        if op == "event_id":
            return {"id": uplink.event_id(v["gw"], v["device"], v["counter"])}
        if op == "priority":
            bc = dataclasses.replace(_SAMPLE_BC, severity=v["severity"], urgency=v["urgency"])
            return {"priority": bc.priority}
        if op == "split_confirmations":
            a, b = v["acks"], v["bc"]
            first = a.get("first", 1)
            pairs = [(f"{a['gw']}:{a['device']}:{first + i}", a["state"]) for i in range(a["count"])]
            ids = [f"{b['prefix']}{i}" for i in range(b["count"])]
            msgs = uplink.confirmations(v["gw"], v["ts"], pairs, ids)
            return {"sizes": [[len(m.acks), len(m.bc)] for m in msgs]}
        if op == "split_reports":
            r = v["reports"]
            items = [
                reports.Report(f"{r['prefix']}{i:0{r['width']}d}", r["state"], r["at"])
                for i in range(r["count"])
            ]
            return {"sizes": [len(b.reports) for b in reports.batches(v["gw"], v["bc"], items)]}
        return {"ok": as_json(decode(v))}
    except Rejected as exc:
        return {"error": exc.reason}


_SAMPLE_BC = broadcast.Broadcast(
    id="x", gw="g", sender="s", sent=1, status="Actual", msg_type="Alert", references=(),
    urgency="Unknown", severity="Unknown", certainty="Unknown", start=None, expires=2, areas=(),
    language="", text="t", clip=None, repeat=1,
)


def decode(v: dict[str, Any]) -> object:
    op = v["op"]
    if op == "parse_topic":
        gw, direction, kind = topics.parse(v["topic"])
        return {"gw": gw, "direction": direction, "kind": kind}
    if op == "parse_event_id":
        return list(uplink.parse_event_id(v["text"]))
    if op == "new_event":
        args = {k: v[k] for k in ("gw", "seq", "kind", "device", "counter")}
        names = ("village", "household", "gw_ts", "ref_counter", "dev_ts", "dev_up")
        opts = {k: v[k] for k in names if k in v}
        return uplink.new_event(**args, **opts)
    if op == "parse_event":
        return uplink.parse_event(v["body"], v["gw"])
    if op == "parse_heartbeat":
        return uplink.parse_heartbeat(v["body"], v["gw"])
    if op == "parse_confirmation":
        return uplink.parse_confirmation(v["body"], v["gw"])
    if op == "parse_ack":
        return acks.parse_ack(v["body"], v["gw"])
    if op == "parse_broadcast":
        return broadcast.parse(v["body"], v["gw"], v["topic_gw"], v["now"])
    if op == "parse_reports":
        return reports.parse(v["body"], v["gw"])
    if op == "open_up":
        reg = v["registry"]
        gw, kind, body = uplink.open_up(
            v["topic"], payload_of(v), lambda g: PUBS[reg[g]] if g in reg else None
        )
        return {"gw": gw, "kind": kind, "body": body}
    if op == "open_ack":
        return acks.open_ack(PUBS[v["key"]], v["gw"], v["topic"], payload_of(v))
    if op == "verify":
        return verify_frame(PUBS[v["key"]], v["topic"], payload_of(v), v["limit"])
    raise AssertionError(f"unknown op {op}")


def test_vector_file_covers_the_link() -> None:
    ids = [v["id"] for v in VECTORS]
    assert len(ids) == len(set(ids)), "vector ids must be unique"
    clauses = {v["clause"] for v in VECTORS}
    assert clauses >= {
        "§1.2", "§6", "§6.1", "§6.2", "§6.2.1", "§6.4", "§6.5", "§6.6", "§8.1", "§8.1.1", "§8.1.2", "§8.3"
    }
    errors = {v["expect"]["error"] for v in VECTORS if "error" in v["expect"]}
    assert errors == set(REASONS), set(REASONS) ^ errors
    kinds = {v["kind"] for v in VECTORS if v["op"] == "topic"}
    assert kinds == set(topics.UP_KINDS) | set(topics.DOWN_KINDS)


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector(v: dict[str, Any]) -> None:
    assert run(v) == v["expect"], v["what"]


def _signed_vectors() -> list[tuple[str, str, bytes, str]]:
    """(vector id, topic, payload, key name) of every signed payload the vectors call good."""
    out = []
    for v in VECTORS:
        want = v["expect"]
        if "payload" in want:
            out.append((v["id"], want["topic"], want["payload"].encode(), v["sign"]))
        elif "ok" in want and v["op"] in ("open_up", "open_ack", "verify"):
            key = v["registry"][v["topic"].split("/")[3]] if v["op"] == "open_up" else v["key"]
            out.append((v["id"], v["topic"], payload_of(v), key))
    return out


@pytest.mark.parametrize(("vid", "topic", "payload", "key"), _signed_vectors(), ids=lambda x: str(x)[:40])
def test_good_signatures_verify_with_the_library_alone(
    vid: str, topic: str, payload: bytes, key: str
) -> None:
    # Ed25519 over TOPIC 0x00 BODY, with the public key of the named RFC 8032 secret key.
    pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(DOC["public_keys"][key]))
    sig, body = bytes.fromhex(payload[:SIG_HEX_LEN].decode()), payload[SIG_HEX_LEN + 1 :]
    pub.verify(sig, topic.encode() + b"\x00" + body)
    for other in PUBS.values():
        if other.public_bytes_raw() != pub.public_bytes_raw():
            with pytest.raises(InvalidSignature):
                other.verify(sig, topic.encode() + b"\x00" + body)


def test_encoding_a_parsed_record_is_stable() -> None:
    # For every body a vector accepts: the record encodes to a body that parses back to a
    # record with the same encoding (the two directions of each codec agree).
    codecs: dict[str, Callable[[Any], Body]] = {
        "parse_event": uplink.encode_event,
        "parse_heartbeat": uplink.encode_heartbeat,
        "parse_confirmation": uplink.encode_confirmation,
        "parse_ack": acks.encode_ack,
        "parse_broadcast": broadcast.encode,
        "parse_reports": reports.encode,
    }
    checked = 0
    for v in VECTORS:
        if "ok" not in v["expect"] or v["op"] not in codecs:
            continue
        encode = codecs[v["op"]]
        body = encode(decode(v))
        assert encode(decode({**v, "body": body})) == body, v["id"]
        checked += 1
    assert checked > 20


def test_split_messages_fit_their_limits_exactly() -> None:
    # The splitters keep every message within both limits, and no message could have taken
    # the next item (measured on the signed payload as sent).
    key = KEYS["g1"]
    gw = "g" * 32
    items = [reports.Report(f"spk-{i:028d}", random.Random(i).choice(reports.STATES), 2**53 - 1 - i)
             for i in range(1000)]
    msgs = reports.batches(gw, "b" * 40, items)
    assert [r for m in msgs for r in m.reports] == items
    for m, nxt in itertools.pairwise(msgs):
        size = len(sign_frame(key, topics.reports(gw), encode_json(reports.encode(m))))
        assert size <= reports.MAX_PAYLOAD and len(m.reports) <= reports.MAX_REPORTS
        more = dataclasses.replace(m, reports=(*m.reports, nxt.reports[0]))
        bigger = len(sign_frame(key, topics.reports(gw), encode_json(reports.encode(more))))
        assert bigger > reports.MAX_PAYLOAD or len(more.reports) > reports.MAX_REPORTS
    pairs = [(f"{gw}:{'d' * 32}:{2**53 - 1 - i}", "acked") for i in range(300)]
    confs = uplink.confirmations(gw, 1, pairs, [f"bc-{i:037d}" for i in range(300)])
    assert [a for c in confs for a in c.acks] == pairs and sum(len(c.bc) for c in confs) == 300
    for c in confs:
        size = len(sign_frame(key, topics.confirmations(gw), encode_json(uplink.encode_confirmation(c))))
        assert size <= topics.MAX_PAYLOAD[topics.CONFIRMATIONS]
        assert uplink.parse_confirmation(uplink.encode_confirmation(c), gw) == c


# -- fuzz: every input either parses or raises Rejected


def _parsers() -> list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], object]]]:
    """(name, a good body, the parser) from the vectors that accept a body."""
    out: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], object]]] = []
    for v in VECTORS:
        if "ok" in v["expect"] and "body" in v and v["op"].startswith("parse_"):
            def parse(body: dict[str, Any], v: dict[str, Any] = v) -> object:
                return decode({**v, "body": body})
            out.append((v["id"], v["body"], parse))
    return out


_ODD: tuple[object, ...] = (
    None, True, False, 0, -1, 1, 2**53, 2**64, -(2**63), 1.5, float("inf"), float("nan"), "", "x",
    "x" * 600, "\U0001f600", "\x00", "gw-1:btn-0001:7", "gw-1", [], [1], ["x"], [[]], [None, None],
    {}, {"village": None}, {"village": "v-1", "groups": "g"}, ["gw-1:btn-0001:7", "acked", 3],
)


def _mutate(rng: random.Random, value: object, depth: int = 0) -> object:
    if isinstance(value, dict) and value and rng.random() < 0.8:
        out = dict(value)
        for _ in range(rng.randint(1, 3)):
            choice = rng.randrange(4)
            key = rng.choice(list(out)) if out else "x"
            if choice == 0:
                out.pop(key, None)
            elif choice == 1:
                out[key] = rng.choice(_ODD)
            elif choice == 2 and depth < 4:
                out[key] = _mutate(rng, out.get(key), depth + 1)
            else:
                name = rng.choice(("extra", "gw", "id", "s", "acks", "bc", "area", "reports"))
                out[name] = rng.choice(_ODD)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        choice = rng.randrange(3)
        if choice == 0:
            out_list[i] = _mutate(rng, out_list[i], depth + 1)
        elif choice == 1:
            del out_list[i]
        else:
            out_list.extend([out_list[i]] * rng.choice((1, 200)))
        return out_list
    return rng.choice(_ODD)


def test_fuzzed_bodies_parse_or_raise_rejected() -> None:
    rng = random.Random(20260101)
    parsers = _parsers()
    counts: dict[str, int] = {}
    for _ in range(6000):
        name, body, parse = rng.choice(parsers)
        mutated = _mutate(rng, body)
        if not isinstance(mutated, dict):
            continue
        try:
            parse(mutated)
            outcome = "ok"
        except Rejected as exc:  # anything else fails the test
            outcome = exc.reason
        assert outcome == "ok" or outcome in REASONS, (name, mutated)
        counts[outcome] = counts.get(outcome, 0) + 1
    assert counts.get("ok", 0) > 100 and counts.get("bad_field", 0) > 1000, counts


def test_fuzzed_frames_open_or_raise_rejected() -> None:
    # Byte-level damage to signed frames; most are signed again so that they reach the JSON
    # parser and the field checks.
    rng = random.Random(7)
    key = KEYS["g1"]
    seeds = [
        (topics.event("gw-1"), uplink.encode_event(uplink.new_event(
            "gw-1", 1, "cancel", "btn-1", 8, village="v", household="h", gw_ts=1, ref_counter=7))),
        (topics.heartbeat("gw-1"), {"gw": "gw-1", "ts": 1, "outbox": 0, "devices": 1, "villages": ["v-1"]}),
        (topics.confirmations("gw-1"), {"gw": "gw-1", "ts": 1, "acks": [["gw-1:b:1", "acked"]], "bc": ["x"]}),
        (topics.reports("gw-1"), {"gw": "gw-1", "bc": "b", "reports": [
            {"device": "s", "s": "played", "at": 1}
        ]}),
    ]
    junk = (b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"1e999", b"-", b"null", b"\xff", b"\x00", b" ")
    parse_kind: dict[str, Callable[[dict[str, Any], str], object]] = {
        topics.EVENT: uplink.parse_event, topics.HEARTBEAT: uplink.parse_heartbeat,
        topics.CONFIRMATIONS: uplink.parse_confirmation, topics.REPORTS: reports.parse,
    }
    counts: dict[str, int] = {}
    for _ in range(3000):
        topic, body = rng.choice(seeds)
        data = bytearray(encode_json(body))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data) + 1)
            choice = rng.randrange(4)
            if choice == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif choice == 1:
                data[pos:pos] = rng.choice(junk)
            elif choice == 2:
                del data[pos : pos + rng.randint(1, 8)]
            else:
                data[pos:pos] = b"[" * rng.choice((1, 2000))
        payload = sign_frame(key, topic, bytes(data))
        if rng.random() < 0.3:
            payload = bytes(payload[: rng.randrange(len(payload))]) + bytes([rng.randrange(256)])
        try:
            gw, kind, got = uplink.open_up(topic, payload, lambda g: PUBS["g1"] if g == "gw-1" else None)
            parse_kind[kind](got, gw)
            outcome = "ok"
        except Rejected as exc:
            outcome = exc.reason
        assert outcome == "ok" or outcome in REASONS
        counts[outcome] = counts.get(outcome, 0) + 1
    assert counts.get("bad_json", 0) > 200 and counts.get("bad_signature", 0) > 200, counts


def test_the_largest_gateway_heartbeat_fits_the_centre_broker_limit() -> None:
    """§6.5: 64 villages, 64 devices and the store state, every id and field at its longest,
    signed."""
    longest = "d" * 32
    hb = uplink.Heartbeat(
        "g" * 32, 2**53 - 1, 2**53 - 1, 2**53 - 1, tuple(f"{i:02d}" + "v" * 30 for i in range(64)),
        tuple(uplink.DeviceSeen(longest, 2**53 - 1, 100, "f" * 16) for _ in range(uplink.MAX_DEVS)),
        uplink.StoreState(False, True, 2**53 - 1, 2**53 - 1),
    )
    topic = topics.heartbeat(hb.gw)
    payload = sign_frame(KEYS["g1"], topic, encode_json(uplink.encode_heartbeat(hb)))
    assert len(payload) <= topics.MAX_PAYLOAD[topics.HEARTBEAT]
