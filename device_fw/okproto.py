# onekey wire codec, protocol v1 (docs/protocol.md).
#
# Sans-IO: bytes in, validated dicts out, or ProtocolError with a reason from §3.4.
# Written in the subset of Python that MicroPython and CPython both run: the firmware and the
# gateway import this same file, and one set of golden vectors tests both.
# Bodies are encoded by hand in a fixed field order, because MicroPython dicts do not keep
# insertion order and its json.dumps spaces differently: the vectors need identical bytes.
import hashlib
import json

try:
    from typing import TYPE_CHECKING
except ImportError:  # MicroPython has no typing module
    TYPE_CHECKING = False  # type: ignore[misc]
if TYPE_CHECKING:
    from typing import Any, Callable

try:
    from micropython import const
except ImportError:  # CPython

    def const(x: int) -> int:  # type: ignore[no-redef,misc]
        return x


VERSION = "v1"
PREFIX = "ok/v1/"
MAX_BODY = const(448)
MAC_HEX_LEN = const(64)
MAX_PAYLOAD = const(513)  # MAC_HEX_LEN + 1 + MAX_BODY
MAX_INT = const(9007199254740992)  # 2**53
_BLOCK = const(64)

KINDS_UP = ("alarm", "cancel", "test", "hb", "bcr")
KINDS_DOWN = ("ack", "bc")
EVENT_KINDS = ("alarm", "cancel", "test")
ACK_STATES = ("stored", "received", "acked", "rejected")
# §8: broadcasts to speakers and what speakers report.
MAX_BC_BODY = const(3328)
MAX_BC_PAYLOAD = const(3393)  # MAC_HEX_LEN + 1 + MAX_BC_BODY
BC_TYPES = ("Alert", "Update", "Cancel")
BC_STATUS = ("Actual", "Exercise", "Test")
BC_STATES = ("received", "playing", "played", "failed", "expired", "cancelled", "preempted")
MAX_BC_ID = const(40)
MAX_TEXT = const(500)

# Reasons, in the order a receiver checks them (§3.4).
OVERSIZED = "oversized"
BAD_TOPIC = "bad_topic"
MALFORMED = "malformed"
UNKNOWN_DEVICE = "unknown_device"
BAD_MAC = "bad_mac"
BAD_JSON = "bad_json"
BAD_FIELD = "bad_field"
TOPIC_MISMATCH = "topic_mismatch"
REPLAY = "replay"

_HEX = b"0123456789abcdef"


class ProtocolError(Exception):
    # `reason` is one of the names above; `detail` says what exactly, for the log.
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason
        self.detail = detail


# -- HMAC-SHA256 (RFC 2104); MicroPython has hashlib.sha256 but no hmac module.


def hmac_sha256(key: bytes, msg: bytes, *more: bytes) -> bytes:
    # The message is msg followed by `more`: hashed part by part, never joined, so that a
    # 3 KB broadcast is not copied on a small heap.
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (_BLOCK - len(key))
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    for part in more:
        inner.update(part)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def _hex(data: bytes) -> bytes:
    out = bytearray(2 * len(data))
    i = 0
    for b in data:
        out[i] = _HEX[b >> 4]
        out[i + 1] = _HEX[b & 15]
        i += 2
    return bytes(out)


def mac_hex(key: bytes, topic: str, body: bytes) -> bytes:
    # §3.1: HMAC over TOPIC 0x00 BODY.
    return _hex(hmac_sha256(key, topic.encode(), b"\x00", body))


def equal_ct(a: bytes, b: bytes) -> bool:
    # §3.5: constant-time comparison of equal-length byte strings.
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def key_from_hex(text: str) -> bytes:
    if len(text) != 64:
        raise ValueError("device key must be 64 hex digits (32 bytes)")
    out = bytearray(32)
    for i in range(32):
        out[i] = int(text[2 * i : 2 * i + 2], 16)
    return bytes(out)


# -- identifiers and topics (§1, §2)


def valid_id(text: object) -> bool:
    if not isinstance(text, str) or not 1 <= len(text) <= 32:
        return False
    for i, ch in enumerate(text):
        if not ("a" <= ch <= "z" or "0" <= ch <= "9" or (ch == "-" and i > 0)):
            return False
    return True


# §1.1: names that carry rights on the brokers: the gateway's village login, the centre's
# certificate name, and every further service login (`svc-...`). No device id or gateway id is
# ever one of them: registering one would hand over that login's password and ACL rights.
RESERVED_IDS = ("gateway", "centre")
SERVICE_PREFIX = "svc-"


def reserved_id(text: object) -> bool:
    return isinstance(text, str) and (text in RESERVED_IDS or text.startswith(SERVICE_PREFIX))


def topic_up(device_id: str, kind: str) -> str:
    return PREFIX + "dev/" + device_id + "/up/" + kind


def topic_down(device_id: str, kind: str = "ack") -> str:
    return PREFIX + "dev/" + device_id + "/down/" + kind


def parse_topic(topic: str) -> tuple[str, str, str]:
    # Returns (device_id, direction, kind) for a v1 device topic, else raises bad_topic.
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != "ok" or parts[1] != VERSION or parts[2] != "dev":
        raise ProtocolError(BAD_TOPIC, "not an ok/v1/dev topic: " + topic[:80])
    device_id, direction, kind = parts[3], parts[4], parts[5]
    if not valid_id(device_id) or reserved_id(device_id):
        raise ProtocolError(BAD_TOPIC, "bad or reserved device id in topic")
    if direction == "up" and kind in KINDS_UP:
        return device_id, direction, kind
    if direction == "down" and kind in KINDS_DOWN:
        return device_id, direction, kind
    raise ProtocolError(BAD_TOPIC, "unknown kind " + direction + "/" + kind)


# -- body encoding (fixed order, ASCII only)


def _enc_str(text: str) -> str:
    out = ['"']
    for ch in text:
        o = ord(ch)
        if o < 0x20 or o > 0x7E:
            raise ValueError("only printable ASCII is encoded: %r" % text)
        if ch == '"' or ch == "\\":
            out.append("\\")
        out.append(ch)
    out.append('"')
    return "".join(out)


def _enc_text(text: str) -> str:
    # §8.2: any BMP character; everything outside printable ASCII as a \uXXXX escape.
    out = ['"']
    for ch in text:
        o = ord(ch)
        if o > 0xFFFF:
            raise ValueError("text must stay in the Unicode BMP")
        if o < 0x20 or o > 0x7E:
            h = "%04x" % o
            out.append("\\u" + h)
        else:
            if ch == '"' or ch == "\\":
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


def valid_bc_id(text: object) -> bool:
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_BC_ID:
        return False
    for ch in text:
        if not ("a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch in "._:-"):
            return False
    return True


def priority(severity: str, urgency: str) -> int:
    # §8.1.2: 0 interrupts, 1 plays next, 2 waits its turn.
    if severity == "Extreme" and urgency == "Immediate":
        return 0
    if severity in ("Extreme", "Severe") and urgency in ("Immediate", "Expected"):
        return 1
    return 2


def _enc_value(name: str, value: object) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        if not -MAX_INT < value < MAX_INT:
            raise ValueError("integer out of range: " + name)
        return str(value)
    if isinstance(value, str):
        return _enc_text(value) if name == "text" else _enc_str(value)
    if isinstance(value, (list, tuple)):
        # §4.3 ev: a list of [counter, state] pairs.
        return "[" + ",".join([_enc_value(name, v) for v in value]) + "]"
    raise ValueError("cannot encode field " + name)


def encode_body(pairs: list[tuple[str, object]], limit: int = MAX_BODY) -> bytes:
    # pairs: list of (name, value) with value int, bool, str, or a list of those (§4.3 ev);
    # None values are left out.
    parts = []
    for name, value in pairs:
        if value is None:
            continue
        parts.append(_enc_str(name) + ":" + _enc_value(name, value))
    body = ("{" + ",".join(parts) + "}").encode()
    if len(body) > limit:
        raise ValueError("body of %d bytes exceeds %d" % (len(body), limit))
    return body


def frame(key: bytes, topic: str, body: bytes) -> bytes:
    return mac_hex(key, topic, body) + b" " + body


# Optional fields per kind: name -> (type, lo, hi). Type "i" int, "s" string (hi = max length).
_OPT = {
    "alarm": {"up": ("i", 0, MAX_INT), "ts": ("i", 0, MAX_INT)},
    "cancel": {"up": ("i", 0, MAX_INT), "ts": ("i", 0, MAX_INT)},
    "test": {"up": ("i", 0, MAX_INT), "ts": ("i", 0, MAX_INT)},
    "hb": {
        "bat": ("i", 0, 101),
        "mv": ("i", 0, 100000),
        "rssi": ("i", -200, 1),
        "fw": ("s", 0, 16),
        "ob": ("i", 0, MAX_INT),
        "up": ("i", 0, MAX_INT),
        "ov": ("i", 0, MAX_INT),
        "ev": ("e", 0, 0),
    },
    "ack": {"why": ("s", 0, 64), "by": ("s", 0, 32)},
    "bcr": {"why": ("s", 0, 64)},
    "bc": {
        "ref": ("s", 1, MAX_BC_ID),
        "clip": ("s", 0, 16),
        "rep": ("i", 1, 6),
        "lang": ("s", 0, 8),
        "text": ("s", 0, MAX_TEXT),
        "ts": ("i", 1, MAX_INT),
    },
}
_HB_ORDER = ("bat", "mv", "rssi", "fw", "ob", "up", "ov", "ev")
# §4.3: what a device still waits on, in a heartbeat: at most MAX_EV [counter, state] pairs,
# state the device's view of an event whose final state it has not seen.
MAX_EV = const(8)
EV_STATES = ("sending", "stored", "received")


def encode_up(
    key: bytes, device_id: str, kind: str, counter: int, fields: dict[str, object] | None = None
) -> tuple[str, bytes]:
    # Returns (topic, payload) for one uplink message.
    if kind not in KINDS_UP:
        raise ValueError("unknown kind " + kind)
    f = fields or {}
    pairs = [("t", kind), ("d", device_id), ("c", counter)]
    if kind == "cancel":
        pairs.append(("ref", f["ref"]))
    if kind == "bcr":
        pairs.append(("id", f["id"]))
        pairs.append(("s", f["s"]))
    order = _HB_ORDER if kind == "hb" else ("why",) if kind == "bcr" else ("up", "ts")
    for name in order:
        if name in f:
            pairs.append((name, f[name]))
    topic = topic_up(device_id, kind)
    return topic, frame(key, topic, encode_body(pairs))


def encode_ack(
    key: bytes,
    device_id: str,
    counter: int,
    ref: int,
    state: str,
    why: str | None = None,
    by: str | None = None,
) -> tuple[str, bytes]:
    if state not in ACK_STATES:
        raise ValueError("unknown ack state " + state)
    pairs = [("t", "ack"), ("d", device_id), ("c", counter), ("ref", ref), ("s", state)]
    pairs.append(("why", why))
    pairs.append(("by", by))
    topic = topic_down(device_id)
    return topic, frame(key, topic, encode_body(pairs))


def encode_bc(key: bytes, device_id: str, counter: int, bc: dict[str, object]) -> tuple[str, bytes]:
    # §8.2: one speaker's copy of a broadcast. `bc` holds id, mt, st, pri, exp and optionally
    # ts (the gateway's Unix time in ms as it sends the copy: the speaker's clock), ref, clip,
    # rep, lang, text.
    pairs = [("t", "bc"), ("d", device_id), ("c", counter)]
    for name in ("id", "mt", "st", "pri", "exp", "ts", "ref", "clip", "rep", "lang", "text"):
        pairs.append((name, bc.get(name)))
    topic = topic_down(device_id, "bc")
    return topic, frame(key, topic, encode_body(pairs, MAX_BC_BODY))


# -- §5.5 the event counter window (the gateway's rule; pure, so that vectors pin it)

REORDER_COUNTERS = const(64)
REORDER_MS = const(120000)


def check_event_window(counter: int, high: int, age_ms: int) -> None:
    # An alarm, cancel or test that is not stored yet (a copy of a stored one is a duplicate,
    # §5.2, and never comes here). `high`: the highest event counter stored from the device
    # (0: none); `age_ms`: how long ago, by the gateway's clock, that event was stored.
    # Above `high`: accepted. Below: only within REORDER_COUNTERS of it and while `high` is
    # younger than REORDER_MS; otherwise `replay`.
    if counter > high:
        return
    below = high - counter
    if below <= REORDER_COUNTERS and 0 <= age_ms < REORDER_MS:
        return
    raise ProtocolError(
        REPLAY,
        "event counter %d is %d below the highest stored event %d (stored %d ms ago); "
        "the reorder window is %d counters for %d ms"
        % (counter, below, high, age_ms, REORDER_COUNTERS, REORDER_MS),
    )


# -- decoding


def frame_mac(payload: "bytes | memoryview", limit: int = MAX_PAYLOAD) -> bytes:
    # §3.3, §3.4: size and framing only; returns mac_hex. The body is payload[MAC_HEX_LEN + 1:],
    # not copied: a speaker checks a 3 KB frame in place on a small heap.
    if len(payload) > limit:
        raise ProtocolError(OVERSIZED, "%d bytes > %d" % (len(payload), limit))
    if len(payload) < MAC_HEX_LEN + 3 or payload[MAC_HEX_LEN] != 0x20:
        raise ProtocolError(MALFORMED, "expected 64 hex digits, a space and a body")
    mac = bytes(payload[:MAC_HEX_LEN])
    for b in mac:
        if b not in _HEX:
            raise ProtocolError(MALFORMED, "MAC is not lowercase hex")
    return mac


def split_frame(payload: bytes, limit: int = MAX_PAYLOAD) -> tuple[bytes, bytes]:
    # §3.3, §3.4: size and framing only; returns (mac_hex, body).
    return frame_mac(payload, limit), bytes(payload[MAC_HEX_LEN + 1 :])


def check_mac(key: bytes, topic: str, mac: bytes, body: bytes) -> None:
    if not equal_ct(mac, mac_hex(key, topic, body)):
        raise ProtocolError(BAD_MAC, "HMAC does not match the device key")


def _int_ok(v: object, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v < hi


def _ev_ok(v: object) -> bool:
    # §4.3: a list of at most MAX_EV [counter, state] pairs.
    if not isinstance(v, list) or len(v) > MAX_EV:
        return False
    for item in v:
        if not isinstance(item, list) or len(item) != 2:
            return False
        if not _int_ok(item[0], 1, MAX_INT) or item[1] not in EV_STATES:
            return False
    return True


def parse_body(body: bytes, device_id: str, kind: str) -> "dict[str, Any]":
    # §4: returns the body as a dict after checking every field it uses.
    try:
        msg = json.loads(body.decode())
    except (ValueError, RuntimeError):
        # Bad UTF-8 or JSON, or nesting too deep. A MemoryError is not a bad body: it goes up.
        raise ProtocolError(BAD_JSON, "body is not UTF-8 JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_JSON, "body is not a JSON object")
    if not isinstance(msg.get("t"), str) or not isinstance(msg.get("d"), str):
        raise ProtocolError(BAD_FIELD, "t and d must be strings")
    if not _int_ok(msg.get("c"), 1, MAX_INT):
        raise ProtocolError(BAD_FIELD, "c must be an integer 1..2^53")
    if kind in ("cancel", "ack") and not _int_ok(msg.get("ref"), 1, MAX_INT):
        raise ProtocolError(BAD_FIELD, "ref must be an integer 1..2^53")
    if kind == "ack" and msg.get("s") not in ACK_STATES:
        raise ProtocolError(BAD_FIELD, "s must be one of " + ",".join(ACK_STATES))
    if kind in ("bc", "bcr") and not valid_bc_id(msg.get("id")):
        raise ProtocolError(BAD_FIELD, "id must be 1-40 of A-Za-z0-9._:-")
    if kind == "bcr" and msg.get("s") not in BC_STATES:
        raise ProtocolError(BAD_FIELD, "s must be one of " + ",".join(BC_STATES))
    if kind == "bc":
        if msg.get("mt") not in BC_TYPES or msg.get("st") not in BC_STATUS:
            raise ProtocolError(BAD_FIELD, "mt or st out of range")
        if not _int_ok(msg.get("pri"), 0, 3) or not _int_ok(msg.get("exp"), 1, MAX_INT):
            raise ProtocolError(BAD_FIELD, "pri must be 0..2 and exp a Unix time in ms")
        if msg["mt"] != "Alert" and not valid_bc_id(msg.get("ref")):
            raise ProtocolError(BAD_FIELD, "an Update or Cancel needs ref")
    for name, spec in _OPT[kind].items():
        if name not in msg:
            continue
        v = msg[name]
        if spec[0] == "i":
            ok = _int_ok(v, spec[1], spec[2])
        elif spec[0] == "e":
            ok = _ev_ok(v)
        else:
            ok = isinstance(v, str) and len(v) <= spec[2]
        if not ok:
            raise ProtocolError(BAD_FIELD, "field " + name + " out of range")
    if msg["d"] != device_id or msg["t"] != kind:
        raise ProtocolError(TOPIC_MISMATCH, "body t/d differ from the topic")
    return msg


def open_up(
    topic: str, payload: bytes, key_for: "Callable[[str], bytes | None]"
) -> "tuple[str, str, dict[str, Any]]":
    # Full §3.4 check of one uplink message. key_for(device_id) returns the device's key or
    # None. Returns (device_id, kind, body_dict). Replay (§5) is the gateway's, it needs state.
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(OVERSIZED, "%d bytes > %d" % (len(payload), MAX_PAYLOAD))
    device_id, direction, kind = parse_topic(topic)
    if direction != "up":
        raise ProtocolError(BAD_TOPIC, "not an uplink topic")
    mac, body = split_frame(payload)
    key = key_for(device_id)
    if key is None:
        raise ProtocolError(UNKNOWN_DEVICE, device_id)
    check_mac(key, topic, mac, body)
    return device_id, kind, parse_body(body, device_id, kind)


def open_down(key: bytes, device_id: str, topic: str, payload: bytes) -> "dict[str, Any]":
    # A device checks an ack or a broadcast from the gateway; returns the body dict.
    if len(payload) > MAX_BC_PAYLOAD:
        raise ProtocolError(OVERSIZED, "%d bytes > %d" % (len(payload), MAX_BC_PAYLOAD))
    dev, direction, kind = parse_topic(topic)
    if direction != "down" or dev != device_id:
        raise ProtocolError(BAD_TOPIC, "not this device's downlink topic")
    mac, body = split_frame(payload, MAX_BC_PAYLOAD if kind == "bc" else MAX_PAYLOAD)
    check_mac(key, topic, mac, body)
    return parse_body(body, device_id, kind)
