"""An alarm as a text message, gateway -> centre modem (docs/protocol.md §10), pure.

When the uplink is down the gateway sends an alarm by SMS to the centre's modem. The text is
printable ASCII from the GSM 7-bit basic alphabet, so it costs one septet a character and fits
two concatenated parts (306 characters) at most:

    OK1 A <id> <village> <household> <seq> <gw_ts> <dev_ts> <dev_up> <sig>

fields separated by one space; `-` for an absent optional field; village and household
percent-encoded outside `A-Za-z0-9._-`; `sig` the gateway's Ed25519 signature over exactly the
bytes before the last space (the head), base64url without padding (86 characters). The head
starts with `OK1 `, never with a topic, so a signature over it can never pass for an MQTT frame's
(§6 signs `TOPIC 0x00 BODY`) nor the other way round.

`encode_sms` builds the text of a §6.2 event; `open_sms` checks one and returns the same
`uplink.Event` the MQTT copy gives, so the centre ingests either under the one event id.
Every input either parses, is not ours (`NotOurs`: any text that does not start with `OK1 `),
or raises `Rejected` with one reason.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import uplink
from protocol.errors import BAD_FIELD, BAD_SIGNATURE, MALFORMED, OVERSIZED, UNKNOWN_GATEWAY, Rejected

MAGIC = "OK1"
KIND_LETTERS = {"alarm": "A"}  # only alarms go by SMS (a cancel or test waits for the line)
LETTER_KINDS = {v: k for k, v in KIND_LETTERS.items()}
MAX_CHARS = 306  # two concatenated GSM 7-bit parts of 153
SIG_CHARS = 86  # 64 bytes, base64url, no padding
FIELDS = 10
ABSENT = "-"
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_HEX = frozenset("0123456789ABCDEF")


class NotOurs(Exception):
    """The text is not a gateway alarm message (a contact's reply, an operator's notice)."""


class SmsTooLong(ValueError):
    """The event's fields do not fit two SMS parts (a very long village or household id)."""


def _pct(text: str) -> str:
    if text == "":
        return ABSENT
    out = []
    for ch in text:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode())
    enc = "".join(out)
    return "%2D" if enc == ABSENT else enc


def _unpct(field: str) -> str:
    if field == ABSENT:
        return ""
    raw = bytearray()
    i = 0
    while i < len(field):
        ch = field[i]
        if ch == "%":
            pair = field[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise Rejected(MALFORMED, "bad percent escape")
            raw.append(int(pair, 16))
            i += 3
        elif ch in _SAFE:
            raw.append(ord(ch))
            i += 1
        else:
            raise Rejected(MALFORMED, f"character {ch!r} must be percent-encoded")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise Rejected(MALFORMED, "percent-encoded field is not UTF-8") from None


def _opt(v: int | None) -> str:
    return ABSENT if v is None else str(v)


def head(ev: uplink.Event) -> str:
    """The signed part of the text (everything before the signature)."""
    letter = KIND_LETTERS.get(ev.kind)
    if letter is None:
        raise ValueError(f"only alarms go by SMS, not a {ev.kind}")
    return " ".join((
        MAGIC, letter, ev.id, _pct(ev.village), _pct(ev.household), str(ev.seq), str(ev.gw_ts),
        _opt(ev.dev_ts), _opt(ev.dev_up),
    ))


def encode_sms(key: Ed25519PrivateKey, ev: uplink.Event) -> str:
    """The text message for event `ev`, signed with the gateway's key. Raises SmsTooLong."""
    h = head(ev)
    sig = base64.urlsafe_b64encode(key.sign(h.encode())).decode().rstrip("=")
    text = f"{h} {sig}"
    if len(text) > MAX_CHARS:
        raise SmsTooLong(f"alarm {ev.id} takes {len(text)} characters by SMS, more than {MAX_CHARS}")
    return text


def is_ours(text: str) -> bool:
    return text.lstrip().startswith(MAGIC + " ")


def _int_field(field: str, name: str) -> int | None:
    if field == ABSENT:
        return None
    if not field.isascii() or not field.isdigit() or (len(field) > 1 and field[0] == "0"):
        raise Rejected(BAD_FIELD, f"{name} must be a decimal integer")
    return int(field)


def open_sms(text: str, key_for: Callable[[str], Ed25519PublicKey | None]) -> uplink.Event:
    """Check one text message: framing, the gateway's enrolment, the signature, then every
    field as §6.2 checks the MQTT copy. Raises NotOurs or Rejected."""
    text = text.strip()
    if not is_ours(text):
        raise NotOurs(text[:20])
    if len(text) > MAX_CHARS:
        raise Rejected(OVERSIZED, f"{len(text)} characters > {MAX_CHARS}")
    if not text.isascii():
        raise Rejected(MALFORMED, "not printable ASCII")
    fields = text.split(" ")
    if len(fields) != FIELDS:
        raise Rejected(MALFORMED, f"{len(fields)} fields separated by single spaces, not {FIELDS}")
    sig_text = fields[-1]
    if len(sig_text) != SIG_CHARS or not set(sig_text) <= _B64URL:
        raise Rejected(MALFORMED, f"signature is not {SIG_CHARS} base64url characters")
    try:
        sig = base64.urlsafe_b64decode(sig_text + "==")
    except (binascii.Error, ValueError):
        raise Rejected(MALFORMED, "signature is not base64url") from None
    try:
        gw, device, counter = uplink.parse_event_id(fields[2])
    except Rejected as exc:
        raise Rejected(MALFORMED, exc.detail) from None
    pub = key_for(gw)
    if pub is None:
        raise Rejected(UNKNOWN_GATEWAY, gw)
    signed = text[: text.rindex(" ")].encode()
    try:
        pub.verify(sig, signed)
    except InvalidSignature:
        raise Rejected(BAD_SIGNATURE, f"SMS alarm signature for {fields[2]} does not verify") from None
    kind = LETTER_KINDS.get(fields[1])
    if kind is None:
        raise Rejected(BAD_FIELD, f"kind {fields[1][:4]!r} is not one that goes by SMS (A)")
    body: dict[str, Any] = {
        "id": fields[2], "gw": gw, "kind": kind, "device": device, "counter": counter,
        "village": _unpct(fields[3]), "household": _unpct(fields[4]),
        "seq": _int_field(fields[5], "seq"), "gw_ts": _int_field(fields[6], "gw_ts"),
        "dev_ts": _int_field(fields[7], "dev_ts"), "dev_up": _int_field(fields[8], "dev_up"),
    }
    return uplink.parse_event(body, gw)
