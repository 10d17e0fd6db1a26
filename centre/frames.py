"""Gateway-to-centre messages (docs/protocol.md §6), without any I/O.

`open_uplink` checks one message from the centre broker in the order of §3.4 adapted to §6:
topic, then enrolment, then the signature (so an unauthenticated sender never reaches the JSON
parser), then the fields. Every input either parses or raises `Rejected` with one reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from centre.store import Event, NewEvent
from onekey.signing import (
    MAX_SIGNED_PAYLOAD,
    SignatureError,
    encode_json,
    sign_frame,
    verify_frame,
)

# Rejection reasons (the names of §3.4, plus §6.1's).
BAD_TOPIC = "bad_topic"
UNKNOWN_GATEWAY = "unknown_gateway"
BAD_FIELD = "bad_field"
TOPIC_MISMATCH = "topic_mismatch"
REPLAY = "replay"
MAX_INT = 2**53
MAX_TEXT = 128
MAX_BY = 32  # a device ack's `by` (§4)
MAX_NOTE = 200

MAX_VILLAGES = 64  # per gateway heartbeat (§6.5)
MAX_REPORTS_PAYLOAD = 24 * 1024  # a signed §8.3 report batch

SUB_EVENTS = "ok/v1/gw/+/up/event"
SUB_HEARTBEATS = "ok/v1/gw/+/up/hb"
SUB_REPORTS = "ok/v1/gw/+/up/bcr"
UP_KINDS = ("event", "hb", "bcr", "conf")  # conf: centre/confs.py (§6.6)


class Rejected(Exception):
    """A message the centre refuses; `reason` is the counter's name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Heartbeat:
    gw: str
    ts: int
    outbox: int
    devices: int
    villages: tuple[str, ...] | None = None  # absent from older gateways' heartbeats


_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def valid_id(text: object) -> bool:
    """§1.1: a device, gateway or village id."""
    return isinstance(text, str) and _ID.fullmatch(text) is not None


def event_topic(gw: str) -> str:
    return f"ok/v1/gw/{gw}/up/event"


def heartbeat_topic(gw: str) -> str:
    return f"ok/v1/gw/{gw}/up/hb"


def ack_topic(gw: str) -> str:
    return f"ok/v1/gw/{gw}/down/ack"


def reports_topic(gw: str) -> str:
    return f"ok/v1/gw/{gw}/up/bcr"


def parse_topic(topic: str) -> tuple[str, str]:
    """`ok/v1/gw/{gw}/up/{event|hb|bcr|conf}` -> (gw, kind)."""
    parts = topic.split("/")
    if (
        len(parts) != 6
        or parts[:3] != ["ok", "v1", "gw"]
        or parts[4] != "up"
        or parts[5] not in UP_KINDS
    ):
        raise Rejected(BAD_TOPIC, topic[:80])
    if not valid_id(parts[3]):
        raise Rejected(BAD_TOPIC, "bad gateway id in topic")
    return parts[3], parts[5]


def _int(body: dict[str, Any], name: str, lo: int = 0, optional: bool = False) -> int | None:
    v = body.get(name)
    if v is None and optional:
        return None
    if type(v) is not int or not lo <= v < MAX_INT:
        raise Rejected(BAD_FIELD, f"{name} must be an integer {lo}..2^53")
    return v


def _text(body: dict[str, Any], name: str, optional: bool = False) -> str:
    v = body.get(name)
    if v is None and optional:
        return ""
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise Rejected(BAD_FIELD, f"{name} must be a string of at most {MAX_TEXT} characters")
    return v


def _check_gw(body: dict[str, Any], gw: str) -> None:
    if body.get("gw") != gw:
        raise Rejected(TOPIC_MISMATCH, f"body gw {str(body.get('gw'))[:40]!r} is not {gw!r}")


def parse_event(body: dict[str, Any], gw: str) -> NewEvent:
    """Validate an authenticated event body (§6.2) from gateway `gw`."""
    _check_gw(body, gw)
    kind = body.get("kind")
    if kind not in ("alarm", "cancel", "test"):
        raise Rejected(BAD_FIELD, "kind must be alarm, cancel or test")
    device = body.get("device")
    if not isinstance(device, str) or not valid_id(device):
        raise Rejected(BAD_FIELD, "device must be a device id (§1.1)")
    counter = _int(body, "counter", lo=1)
    assert counter is not None
    eid = body.get("id")
    if eid != f"{gw}:{device}:{counter}":
        raise Rejected(BAD_FIELD, "id must be {gw}:{device}:{counter}")
    ref = body.get("ref")
    if kind == "cancel":
        prefix = f"{gw}:{device}:"
        # A device cancels only its own alarms.
        if (
            not isinstance(ref, str)
            or not ref.startswith(prefix)
            or not ref[len(prefix) :].isascii()
            or not ref[len(prefix) :].isdigit()
            or not 1 <= int(ref[len(prefix) :]) < MAX_INT
        ):
            raise Rejected(BAD_FIELD, "ref must be the id of an alarm of the same device")
    elif ref is not None:
        raise Rejected(BAD_FIELD, f"ref is only for a cancel, not for {kind}")
    seq = _int(body, "seq")
    gw_ts = _int(body, "gw_ts")
    assert seq is not None and gw_ts is not None
    village = _text(body, "village")
    if not village:
        raise Rejected(BAD_FIELD, "village must not be empty")
    return NewEvent(
        id=eid,
        gw=gw,
        seq=seq,
        kind=kind,
        device=device,
        counter=counter,
        village=village,
        household=_text(body, "household", optional=True),
        gw_ts=gw_ts,
        ref=ref,
        dev_ts=_int(body, "dev_ts", optional=True),
        dev_up=_int(body, "dev_up", optional=True),
    )


def parse_heartbeat(body: dict[str, Any], gw: str) -> Heartbeat:
    """Validate an authenticated heartbeat body (§6.5). `outbox` is -1 when the gateway could
    not read its own store; `villages` (optional) lists the village ids it serves."""
    _check_gw(body, gw)
    ts = _int(body, "ts")
    outbox = _int(body, "outbox", lo=-1)
    devices = _int(body, "devices")
    assert ts is not None and outbox is not None and devices is not None
    villages = body.get("villages")
    if villages is not None and (
        not isinstance(villages, list)
        or len(villages) > MAX_VILLAGES
        or not all(valid_id(v) for v in villages)
    ):
        raise Rejected(BAD_FIELD, f"villages must be a list of at most {MAX_VILLAGES} village ids")
    return Heartbeat(gw, ts, outbox, devices, None if villages is None else tuple(villages))


def open_uplink(
    topic: str, payload: bytes, key_for: Callable[[str], Ed25519PublicKey | None]
) -> tuple[str, str, dict[str, Any]]:
    """Topic, enrolment and signature checks -> (gw, kind, body). Fields are checked by
    `parse_event` / `parse_heartbeat`."""
    gw, kind = parse_topic(topic)
    pub = key_for(gw)
    if pub is None:
        raise Rejected(UNKNOWN_GATEWAY, gw)
    try:
        # 200 reports (§8.3) with 32-character device ids take about 16 KB, more than the
        # 8 KiB of other signed frames; so can 200 confirmations (§6.6).
        limit = MAX_REPORTS_PAYLOAD if kind in ("bcr", "conf") else MAX_SIGNED_PAYLOAD
        body = verify_frame(pub, topic, payload, limit)
    except SignatureError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    return gw, kind, body


def ack_body(ev: Event) -> dict[str, Any]:
    """The current state of a stored event as a §6.4 ack body: `acked` (with by and note)
    once staff acknowledged it, else `received`."""
    if ev.acked_at is not None:
        return {
            "id": ev.id,
            "s": "acked",
            "at": ev.acked_at,
            "by": ev.acked_by or "",
            "note": ev.acked_note or "",
        }
    return {"id": ev.id, "s": "received", "at": ev.received_at}


def signed_ack(key: Ed25519PrivateKey, gw: str, body: dict[str, Any]) -> tuple[str, bytes]:
    topic = ack_topic(gw)
    return topic, sign_frame(key, topic, encode_json(body))
