"""The contact list (centre -> gateway) and the gateway's SMS reports (gateway -> centre),
docs/protocol.md §11, pure.

Contact list: topic `ok/v1/gw/{gw}/down/contacts`, QoS 1, signed with the centre's key (§6
framing). One version `v` (strictly increasing per gateway) goes in `parts` messages, each a
slice of the households of the villages the gateway serves. The gateway replaces its stored
list only once every part of a version newer than its own is committed, and confirms the
version on `up/conf` (`cl`, §6.6); the centre holds the parts until then.

SMS report: topic `ok/v1/gw/{gw}/up/sms`, QoS 1, signed with the gateway's key: one SMS the
gateway sent for an alarm while cut off (`to`: `centre`, or the contact's kind), so that it
shows on the alarm's timeline at the centre.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device_fw.okproto import MAX_INT
from protocol import topics
from protocol.errors import BAD_FIELD, BAD_TOPIC, Rejected
from protocol.signed import (
    MAX_SIGNED_PAYLOAD,
    SIG_HEX_LEN,
    encode_json,
    fit,
    json_len,
    sign_frame,
    verify_frame,
)
from protocol.uplink import check_gw, parse_event_id

KINDS = ("leader", "grid", "family", "doctor")
MAX_TEXT = 200
MAX_CONTACTS = 8
MAX_PARTS = 1000
SMS_TO = ("centre", *KINDS)


@dataclass(frozen=True)
class Contact:
    kind: str
    name: str
    phone: str


@dataclass(frozen=True)
class Household:
    id: str
    village: str
    group: str
    name: str
    address: str
    local_alert: bool  # False: the household refuses the speakers' local alert (§11)
    contacts: tuple[Contact, ...]


@dataclass(frozen=True)
class ContactPart:
    gw: str
    v: int
    part: int
    parts: int
    households: tuple[Household, ...]


def _household_json(h: Household) -> dict[str, Any]:
    return {
        "id": h.id, "village": h.village, "group": h.group, "name": h.name,
        "address": h.address, "local_alert": h.local_alert,
        "contacts": [{"kind": c.kind, "name": c.name, "phone": c.phone} for c in h.contacts],
    }


def encode_part(p: ContactPart) -> dict[str, Any]:
    return {"gw": p.gw, "v": p.v, "part": p.part, "parts": p.parts,
            "households": [_household_json(h) for h in p.households]}


def signed_parts(
    key: Ed25519PrivateKey, gw: str, v: int, households: Sequence[Household],
    max_payload: int = MAX_SIGNED_PAYLOAD,
) -> list[tuple[ContactPart, bytes]]:
    """Every part of version `v` for gateway `gw`, each signed and at most `max_payload`
    bytes (an empty list still makes one part: it tells the gateway to forget what it had)."""
    topic = topics.contacts(gw)
    # `parts` is written with room for four digits, so the runs stay valid once it is known.
    fixed = json_len(encode_part(ContactPart(gw, v, 9999, 9999, ()))) + SIG_HEX_LEN + 1
    runs = fit([json_len(_household_json(h)) for h in households], fixed, 10_000, max_payload)
    if not runs:
        runs = [range(0, 0)]
    if len(runs) > MAX_PARTS:
        raise ValueError(f"contact list for {gw} needs {len(runs)} parts, more than {MAX_PARTS}")
    out = []
    for i, run in enumerate(runs, start=1):
        part = ContactPart(gw, v, i, len(runs), tuple(households[run.start : run.stop]))
        out.append((part, sign_frame(key, topic, encode_json(encode_part(part)))))
    return out


def _text(obj: Mapping[str, Any], name: str) -> str:
    v = obj.get(name)
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise Rejected(BAD_FIELD, f"{name} must be a string of at most {MAX_TEXT} characters")
    return v


def _int(obj: Mapping[str, Any], name: str, lo: int, hi: int = MAX_INT) -> int:
    v = obj.get(name)
    if type(v) is not int or not lo <= v < hi:
        raise Rejected(BAD_FIELD, f"{name} must be an integer {lo}..{hi - 1}")
    return v


def parse_part(body: Mapping[str, Any], gw: str) -> ContactPart:
    check_gw(body, gw)
    v = _int(body, "v", 1)
    parts = _int(body, "parts", 1, MAX_PARTS + 1)
    part = _int(body, "part", 1, parts + 1)
    rows = body.get("households")
    if not isinstance(rows, list):
        raise Rejected(BAD_FIELD, "households must be a list")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise Rejected(BAD_FIELD, f"households[{i}] must be an object")
        hid = _text(row, "id")
        if not hid:
            raise Rejected(BAD_FIELD, f"households[{i}].id must not be empty")
        alert = row.get("local_alert")
        if not isinstance(alert, bool):
            raise Rejected(BAD_FIELD, f"households[{i}].local_alert must be true or false")
        cs = row.get("contacts")
        if not isinstance(cs, list) or len(cs) > MAX_CONTACTS:
            raise Rejected(BAD_FIELD, f"households[{i}].contacts must be a list of at most {MAX_CONTACTS}")
        contacts = []
        for c in cs:
            if not isinstance(c, dict) or c.get("kind") not in KINDS:
                raise Rejected(BAD_FIELD, f"households[{i}]: a contact's kind is one of {', '.join(KINDS)}")
            contacts.append(Contact(str(c["kind"]), _text(c, "name"), _text(c, "phone")))
        out.append(Household(hid, _text(row, "village"), _text(row, "group"), _text(row, "name"),
                             _text(row, "address"), alert, tuple(contacts)))
    return ContactPart(gw, v, part, parts, tuple(out))


def open_part(centre_key: Ed25519PublicKey, gw: str, topic: str, payload: bytes) -> ContactPart:
    """The whole check of one part at gateway `gw`: topic, the pinned centre key, the fields."""
    if topic != topics.contacts(gw):
        raise Rejected(BAD_TOPIC, topic[:80])
    return parse_part(verify_frame(centre_key, topic, payload, topics.MAX_PAYLOAD[topics.CONTACTS]), gw)


# -- what the gateway sent by SMS


@dataclass(frozen=True)
class SmsReport:
    gw: str
    id: str  # the alarm's event id (§1.2)
    to: str  # centre, leader, grid, family, doctor
    number: str  # the recipient's number, as sent
    at: int  # Unix ms, when the modem accepted it
    parts: int


def encode_sms_report(r: SmsReport) -> dict[str, Any]:
    return {"gw": r.gw, "id": r.id, "to": r.to, "n": r.number, "at": r.at, "parts": r.parts}


def parse_sms_report(body: Mapping[str, Any], gw: str) -> SmsReport:
    check_gw(body, gw)
    eid = body.get("id")
    if parse_event_id(eid)[0] != gw:
        raise Rejected(BAD_FIELD, "id must be an event of this gateway")
    to = body.get("to")
    if to not in SMS_TO:
        raise Rejected(BAD_FIELD, f"to must be one of {', '.join(SMS_TO)}")
    number = body.get("n")
    if not isinstance(number, str) or not 1 <= len(number) <= 24:
        raise Rejected(BAD_FIELD, "n must be a phone number")
    return SmsReport(gw, str(eid), str(to), number, _int(body, "at", 0), _int(body, "parts", 1, 256))


def signed_sms_report(key: Ed25519PrivateKey, r: SmsReport) -> tuple[str, bytes]:
    topic = topics.sms_reports(r.gw)
    return topic, sign_frame(key, topic, encode_json(encode_sms_report(r)))
