"""What an attacker sends: forged, tampered, malformed and fuzzed frames, for the attack
campaign (harness/attacks.py).

Pure: bytes in, bytes out, no I/O, every choice drawn from the caller's seeded `random.Random`,
so a campaign with the same seed sends the same kinds of message in the same order.

Everything here is built so that a correct receiver refuses it: a malformed or fuzzed frame
that a correct receiver would accept (a mutation that changed nothing, a "wrong" field that
happens to be valid) would make the campaign report a false acceptance. Builders of invalid
input say which refusal (§3.4, §6, §8.1 reason) a correct receiver gives; random and mutated
input may fail at more than one check. tests/unit/test_forgery.py holds them to that against
the shared device codec.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from device_fw import okproto
from protocol.signed import SIG_HEX_LEN, encode_json

_HEX = "0123456789abcdef"


def random_hex(rng: random.Random, n: int) -> bytes:
    return "".join(rng.choice(_HEX) for _ in range(n)).encode()


def random_bytes(rng: random.Random, lo: int, hi: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(lo, hi)))


def split(payload: bytes, head: int) -> tuple[bytes, bytes]:
    """(MAC or signature, body) of a well-formed frame whose first part is `head` characters."""
    return payload[:head], payload[head + 1 :]


def replace_head(payload: bytes, head: int, rng: random.Random) -> bytes:
    """The same body under another, random (lowercase hex) MAC or signature."""
    old, body = split(payload, head)
    new = old
    while new == old:
        new = random_hex(rng, head)
    return new + b" " + body


def same_frame(a: bytes, b: bytes, head: int) -> bool:
    """True if `b` says what `a` says: equal, or equal up to the case of the hex head (a
    signature decoder may accept upper-case hex)."""
    if a == b:
        return True
    return len(a) == len(b) and a[:head].lower() == b[:head].lower() and a[head:] == b[head:]


def mutate(payload: bytes, rng: random.Random, head: int, limit: int) -> bytes:
    """A seeded mutation of a real frame (bit flips, bytes inserted, removed, duplicated,
    truncated, swapped), never one that still says the same thing, at most `limit` bytes."""
    while True:
        out = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(7)
            pos = rng.randrange(len(out) + 1) if out else 0
            if op == 0 and out:  # flip one bit
                i = min(pos, len(out) - 1)
                out[i] ^= 1 << rng.randrange(8)
            elif op == 1:  # insert random bytes
                out[pos:pos] = random_bytes(rng, 1, 8)
            elif op == 2 and out:  # delete a run
                del out[pos : pos + rng.randint(1, 16)]
            elif op == 3 and out:  # truncate
                del out[rng.randrange(len(out)) :]
            elif op == 4 and out:  # duplicate a run
                i = rng.randrange(len(out))
                out[pos:pos] = out[i : i + rng.randint(1, 32)]
            elif op == 5 and len(out) > 1:  # swap two bytes
                i, j = rng.randrange(len(out)), rng.randrange(len(out))
                out[i], out[j] = out[j], out[i]
            else:  # overwrite a byte with a JSON-significant one
                if out:
                    out[min(pos, len(out) - 1)] = rng.choice(b'{}[]",: 0-9eE\\')
        mutated = bytes(out[:limit])
        if not same_frame(payload, mutated, head):
            return mutated


# -- device link (§3, §4): a victim device's topics


def tamper_up(payload: bytes, rng: random.Random, fresh_counter: int) -> bytes:
    """A captured device frame with its body changed and its MAC kept: another counter (a new
    alarm if it were accepted), another kind, another device, a clock or an extra field."""
    mac, body_bytes = split(payload, okproto.MAC_HEX_LEN)
    body: dict[str, Any] = json.loads(body_bytes)
    change = rng.randrange(5)
    if change == 0:
        body["c"] = fresh_counter
    elif change == 1:
        body["t"] = "test" if body.get("t") != "test" else "alarm"
    elif change == 2:
        body["d"] = body["d"] + "x" if len(body["d"]) < 32 else body["d"][:-1]
    elif change == 3:
        body["ts"] = rng.randrange(1, 2**31)
        body["c"] = fresh_counter
    else:
        body["up"] = rng.randrange(2**40)
    out = mac + b" " + json.dumps(body, separators=(",", ":")).encode()
    return out if out != payload else replace_head(payload, okproto.MAC_HEX_LEN, rng)


def malformed_up(
    rng: random.Random, key: bytes, device_id: str, counter: int
) -> tuple[str, bytes, str]:
    """One malformed device message on the device's own topics: (topic, payload, the §3.4
    reason a correct gateway gives). Bodies that carry a good MAC are invalid all the same."""
    alarm = okproto.topic_up(device_id, "alarm")

    def signed(topic: str, body: bytes) -> bytes:
        return okproto.frame(key, topic, body)

    good = okproto.encode_up(key, device_id, "alarm", counter, {"up": 1})[1]
    mac, body = split(good, okproto.MAC_HEX_LEN)
    d = json.dumps(device_id)
    cases: list[Callable[[], tuple[str, bytes, str]]] = [
        # framing (§3): checked before the MAC
        lambda: (alarm, mac + body, okproto.MALFORMED),  # no space
        lambda: (alarm, mac[:63] + b" " + body, okproto.MALFORMED),  # space one early
        lambda: (alarm, mac + b"0 " + body, okproto.MALFORMED),  # space one late
        lambda: (alarm, mac.upper() + b" " + body, okproto.MALFORMED),
        lambda: (alarm, b"z" * 64 + b" " + body, okproto.MALFORMED),
        lambda: (alarm, b"", okproto.MALFORMED),
        lambda: (alarm, mac + b" {", okproto.MALFORMED),  # too short to hold a body
        lambda: (alarm, b" " * 100, okproto.MALFORMED),
        # topics outside the contract (the ACL lets a device write its own up/#)
        lambda: (okproto.topic_up(device_id, rng.choice(("panic", "ALARM", "alarm2", "ack", "bc"))),
                 good, okproto.BAD_TOPIC),
        lambda: (alarm + "/x", good, okproto.BAD_TOPIC),
        # a good MAC over a body that is not a JSON object
        lambda: (alarm, signed(alarm, b'{"t":"alarm","d":' + d.encode() + b',"c":'), okproto.BAD_JSON),
        lambda: (alarm, signed(alarm, b"\xff\xfe{}"), okproto.BAD_JSON),
        lambda: (alarm, signed(alarm, b"[1,2,3]"), okproto.BAD_JSON),
        lambda: (alarm, signed(alarm, b'"alarm"'), okproto.BAD_JSON),
        lambda: (alarm, signed(alarm, b"[" * 200 + b"]" * 200), okproto.BAD_JSON),
        # a good MAC over a JSON object with a field missing, of the wrong type or out of range
        *(
            (lambda c=c: (alarm, signed(alarm, f'{{"t":"alarm","d":{d},"c":{c}}}'.encode()),
                          okproto.BAD_FIELD))
            for c in ('"7"', "0", "-1", "1.5", "1e3", "9007199254740992", "true", "null", "NaN",
                      "[1]", '{"n":1}')
        ),
        lambda: (alarm, signed(alarm, f'{{"t":"alarm","d":{d}}}'.encode()), okproto.BAD_FIELD),
        lambda: (alarm, signed(alarm, f'{{"t":"alarm","d":{d},"c":5,"c":"x"}}'.encode()),
                 okproto.BAD_FIELD),
        lambda: (alarm, signed(alarm, f'{{"t":5,"d":{d},"c":5}}'.encode()), okproto.BAD_FIELD),
        lambda: (alarm, signed(alarm, b'{"t":"alarm","d":null,"c":5}'), okproto.BAD_FIELD),
        lambda: (alarm, signed(alarm, f'{{"t":"alarm","d":{d},"c":5,"up":"1"}}'.encode()),
                 okproto.BAD_FIELD),
        lambda: (alarm, signed(alarm, f'{{"t":"alarm","d":{d},"c":5,"ts":-5}}'.encode()),
                 okproto.BAD_FIELD),
        lambda: _on(key, device_id, "cancel", f'{{"t":"cancel","d":{d},"c":5}}', okproto.BAD_FIELD),
        lambda: _on(key, device_id, "cancel", f'{{"t":"cancel","d":{d},"c":5,"ref":"3"}}',
                    okproto.BAD_FIELD),
        *(
            (lambda f=f: _on(key, device_id, "hb", f'{{"t":"hb","d":{d},"c":5,{f}}}',
                             okproto.BAD_FIELD))
            for f in ('"bat":200', '"rssi":5', '"mv":-1', '"fw":"' + "x" * 17 + '"', '"ob":-2')
        ),
        # a good MAC, but the body names another kind or another device (§3.4 topic_mismatch)
        lambda: (alarm, signed(alarm, f'{{"t":"test","d":{d},"c":5}}'.encode()),
                 okproto.TOPIC_MISMATCH),
        lambda: (alarm, signed(alarm, b'{"t":"alarm","d":"btn-0001","c":5}'), okproto.TOPIC_MISMATCH),
    ]
    return rng.choice(cases)()


def _on(key: bytes, device_id: str, kind: str, body: str, reason: str) -> tuple[str, bytes, str]:
    topic = okproto.topic_up(device_id, kind)
    return topic, okproto.frame(key, topic, body.encode()), reason


def oversized(rng: random.Random, head: int, lo: int, hi: int, filler: Callable[[int], bytes]) -> bytes:
    """A well-formed-looking frame of lo..hi bytes: a hex head, a space, a padded body."""
    n = rng.randint(lo, hi)
    return random_hex(rng, head) + b" " + filler(n - head - 1)


def padded_json(n: int) -> bytes:
    """A JSON object of exactly n bytes (n >= 10)."""
    return b'{"pad":"' + b"x" * (n - 10) + b'"}'


# -- signed frames (§6, §8.1): gateway events and heartbeats, centre acks and broadcasts


def tamper_signed(payload: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """A captured signed frame with its body changed by `change` and its signature kept."""
    sig, body_bytes = split(payload, SIG_HEX_LEN)
    body: dict[str, Any] = json.loads(body_bytes)
    change(body)
    out = sig + b" " + encode_json(body)
    if same_frame(payload, out, SIG_HEX_LEN):
        out = sig + b" " + encode_json(body) + b" "
    return out


def malformed_signed(rng: random.Random, good: bytes) -> bytes:
    """A signed frame broken in its framing (§6): refused as malformed before the signature."""
    sig, body = split(good, SIG_HEX_LEN)
    return rng.choice(
        (
            sig + body,  # no space
            sig[:-1] + b" " + body,
            sig + b"0 " + body,
            b"z" * SIG_HEX_LEN + b" " + body,
            b"",
            sig + b" {",
            b"-" * 200,
        )
    )


def invalid_event(rng: random.Random, body: dict[str, Any], gw: str) -> tuple[dict[str, Any] | bytes, str]:
    """A §6.2 event body broken in one field, for signing with the gateway's real key: either
    a dict to encode or raw bytes, and the reason a correct centre gives."""
    out = dict(body)
    field = rng.choice(("gw", "kind", "device", "counter", "id", "seq", "gw_ts", "village", "ref",
                        "missing", "json"))
    reason = "bad_field"
    if field == "gw":
        out["gw"] = rng.choice(("gw-demo", "gw-other", 5, None, ""))
        reason = "topic_mismatch"
    elif field == "kind":
        out["kind"] = rng.choice(("panic", "ALARM", 1, None, ["alarm"]))
    elif field == "device":
        out["device"] = rng.choice(("BTN-1", "", "-x", "a" * 33, 7, None, "btn/1"))
    elif field == "counter":
        out["counter"] = rng.choice((0, -1, 2**53, "5", 1.5, True, None))
    elif field == "id":
        out["id"] = rng.choice((f"{gw}:other:1", "x", 5, None, out["id"] + "0"))
    elif field in ("seq", "gw_ts"):
        out[field] = rng.choice((-1, 2**53, "1", 1.0, None, False))
    elif field == "village":
        out["village"] = rng.choice(("", 5, None, "v" * 129))
    elif field == "ref":
        out["ref"] = f"{gw}:{out['device']}:1"  # a ref on an alarm
        out["kind"] = "alarm"
    elif field == "missing":
        del out[rng.choice(("gw", "kind", "device", "counter", "id", "seq", "gw_ts", "village"))]
        if "gw" not in out:
            reason = "topic_mismatch"
    else:
        raw = rng.choice((b"[]", b'"event"', b'{"a"', b"\xff{}", b"null", b"[" * 100 + b"]" * 100))
        return raw, "bad_json"
    return out, reason


def invalid_heartbeat(rng: random.Random, gw: str) -> tuple[dict[str, Any], str]:
    """A §6.5 heartbeat body broken in one field."""
    body: dict[str, Any] = {"gw": gw, "ts": 2**52, "outbox": 0, "devices": 1}
    field = rng.choice(("gw", "ts", "outbox", "devices", "villages"))
    if field == "gw":
        body["gw"] = rng.choice(("gw-demo", None, 5))
        return body, "topic_mismatch"
    if field == "ts":
        body["ts"] = rng.choice((-1, "1", 1.5, None, 2**53))
    elif field == "outbox":
        body["outbox"] = rng.choice((-2, "0", None, 0.5))
    elif field == "devices":
        body["devices"] = rng.choice((-1, None, "3"))
    else:
        body["villages"] = rng.choice(("v-demo", ["V!"], [5], ["v"] * 65))
    return body, "bad_field"


def invalid_broadcast(rng: random.Random, body: dict[str, Any]) -> dict[str, Any]:
    """A §8.1 broadcast body broken in one field (the gateway refuses it as bad_field)."""
    out = dict(body)
    field = rng.choice(("id", "msgType", "repeat", "clip", "text", "status", "urgency", "severity",
                        "certainty", "expires", "area", "sent", "references", "sender"))
    bad: dict[str, tuple[Any, ...]] = {
        "id": ("bad id", "x" * 41, 5, None, ""),
        "msgType": ("Alarm", None, "alert"),
        "repeat": (0, 6, "2", 1.5),
        "clip": ("horn", 5),
        "text": ("字" * 501, "bell\x07", 5),
        "status": ("Real", None),
        "urgency": ("Now", None),
        "severity": (5, "extreme"),
        "certainty": (None, "Sure"),
        "expires": ("soon", -1, 2**53, None),
        "area": ([], "v-demo", [{"village": "V!"}], [{"groups": []}]),
        "sent": ("now", 0, None),
        "references": ("bc-1", [5]),
        "sender": ("", "s" * 65, None),
    }
    out[field] = rng.choice(bad[field])
    if field == "references":
        out["msgType"] = "Update"
    if field == "text":
        out.pop("clip", None)
    return out
