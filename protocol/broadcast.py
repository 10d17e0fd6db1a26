"""A broadcast copy from the centre to one gateway (docs/protocol.md §8.1, §8.1.1), pure.

The centre makes one copy per gateway (only that gateway's part of the area), encodes it with
`encode` and signs it with its own key on `ok/v1/gw/{gw}/down/bc`; the gateway verifies the
signature with the key it pinned and checks the rest with `parse`. Field names and values follow
OASIS CAP 1.2 (§8.1's table).

Limits (the one value both sides use): a copy is at most `MAX_FRAME` bytes signed; `area` has
1-`MAX_AREAS` villages, each with at most `MAX_GROUPS` groups and `MAX_SPEAKERS` speakers;
`references` at most `MAX_REFERENCES` ids. A centre may ask less of its staff (a form's limits
are its own business), never more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from device_fw import okproto
from protocol import topics
from protocol.errors import BAD_FIELD, EXPIRED, WRONG_GATEWAY, Rejected

# CAP 1.2 values (§8.1).
STATUSES = okproto.BC_STATUS  # Actual, Exercise, Test
MSG_TYPES = okproto.BC_TYPES  # Alert, Update, Cancel
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")
CLIPS = ("siren", "chime")

MAX_FRAME = topics.MAX_PAYLOAD[topics.BROADCAST]  # a signed copy, in bytes (8 KiB)
MAX_ID = okproto.MAX_BC_ID  # 40
MAX_SENDER = 64
MAX_LANGUAGE = 8
MAX_TEXT = okproto.MAX_TEXT  # 500 characters
MAX_AREAS = 100
MAX_GROUPS = 200
MAX_SPEAKERS = 200
MAX_REFERENCES = 8
MAX_REPEAT = 5


@dataclass(frozen=True)
class Area:
    """One village: all its speakers, or only the listed groups and speakers."""

    village: str
    groups: tuple[str, ...] = ()
    speakers: tuple[str, ...] = ()

    def whole_village(self) -> bool:
        return not self.groups and not self.speakers

    def as_json(self) -> dict[str, Any]:
        return {"village": self.village, "groups": list(self.groups), "speakers": list(self.speakers)}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> Area:
        """From a form this side wrote itself (a stored row); a peer's goes through `parse`."""
        return Area(
            str(obj["village"]),
            tuple(str(g) for g in obj.get("groups", ())),
            tuple(str(s) for s in obj.get("speakers", ())),
        )


@dataclass(frozen=True)
class Broadcast:
    """The copy for gateway `gw` as it travels (§8.1)."""

    id: str
    gw: str
    sender: str
    sent: int
    status: str
    msg_type: str
    references: tuple[str, ...]
    urgency: str
    severity: str
    certainty: str
    start: int | None
    expires: int
    areas: tuple[Area, ...]
    language: str
    text: str
    clip: str | None
    repeat: int

    @property
    def priority(self) -> int:
        """§8.1.2: 0 interrupts, 1 plays next, 2 waits its turn."""
        return okproto.priority(self.severity, self.urgency)


def encode(bc: Broadcast) -> dict[str, Any]:
    """The §8.1 body; `references`, `start` and `clip` only when there are some."""
    body: dict[str, Any] = {
        "id": bc.id,
        "gw": bc.gw,
        "sender": bc.sender,
        "sent": bc.sent,
        "status": bc.status,
        "msgType": bc.msg_type,
        "urgency": bc.urgency,
        "severity": bc.severity,
        "certainty": bc.certainty,
        "expires": bc.expires,
        "area": [a.as_json() for a in bc.areas],
        "language": bc.language,
        "text": bc.text,
        "repeat": bc.repeat,
    }
    if bc.references:
        body["references"] = list(bc.references)
    if bc.start is not None:
        body["start"] = bc.start
    if bc.clip is not None:
        body["clip"] = bc.clip
    return body


# -- parsing (§8.1.1)


def _bad(detail: str) -> Rejected:
    return Rejected(BAD_FIELD, detail)


def _str(body: Mapping[str, Any], name: str, limit: int, *, required: bool = True) -> str:
    v = body.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or len(v) > limit or (required and not v):
        raise _bad(f"{name} must be a string of 1-{limit} characters")
    return v


def _one_of(body: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    v = body.get(name)
    if not isinstance(v, str) or v not in allowed:
        raise _bad(f"{name} must be one of {', '.join(allowed)}")
    return v


def _ms(body: Mapping[str, Any], name: str) -> int:
    v = body.get(name)
    if type(v) is not int or not 0 < v < okproto.MAX_INT:
        raise _bad(f"{name} must be a Unix time in milliseconds")
    return v


def _ids(value: object, name: str, check: Callable[[object], bool], limit: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > limit or not all(check(x) for x in value):
        raise _bad(f"{name} must be a list of at most {limit} valid ids")
    return tuple(value)


def _areas(value: object) -> tuple[Area, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_AREAS:
        raise _bad(f"area must be a list of 1-{MAX_AREAS} entries")
    out = []
    for a in value:
        if not isinstance(a, dict) or not okproto.valid_id(a.get("village")):
            raise _bad("each area needs a valid village id")
        out.append(
            Area(
                village=a["village"],
                groups=_ids(a.get("groups"), "area groups", okproto.valid_id, MAX_GROUPS),
                speakers=_ids(a.get("speakers"), "area speakers", okproto.valid_id, MAX_SPEAKERS),
            )
        )
    return tuple(out)


def _text(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _bad(f"text must be a string of at most {MAX_TEXT} characters")
    if any(ord(ch) > 0xFFFF or (ord(ch) < 0x20 and ch not in "\n\t") for ch in value):
        raise _bad("text must stay in the Unicode BMP and hold no control characters")
    return value


def parse_fields(body: Mapping[str, Any], gw: str) -> Broadcast:
    """Every field check of §8.1.1 but the gateway and the expiry (the centre runs this on a
    copy before it signs it, so that it never sends what a gateway would refuse)."""
    bc_id = body.get("id")
    if not okproto.valid_bc_id(bc_id):
        raise _bad(f"id must be 1-{MAX_ID} characters of A-Za-z0-9._:-")
    assert isinstance(bc_id, str)
    msg_type = _one_of(body, "msgType", MSG_TYPES)
    references = _ids(body.get("references"), "references", okproto.valid_bc_id, MAX_REFERENCES)
    if msg_type != "Alert" and not references:
        raise _bad(f"an {msg_type} needs references")
    repeat = body.get("repeat", 1)
    if type(repeat) is not int or not 1 <= repeat <= MAX_REPEAT:
        raise _bad(f"repeat must be an integer 1-{MAX_REPEAT}")
    clip = body.get("clip")
    if clip is not None and (not isinstance(clip, str) or clip not in CLIPS):
        raise _bad(f"clip must be one of {', '.join(CLIPS)}")
    text = _text(body.get("text"))
    if msg_type != "Cancel" and not text and clip is None:
        raise _bad("a broadcast needs a text or a clip")
    start = body.get("start")
    return Broadcast(
        id=bc_id,
        gw=gw,
        sender=_str(body, "sender", MAX_SENDER),
        sent=_ms(body, "sent"),
        status=_one_of(body, "status", STATUSES),
        msg_type=msg_type,
        references=references,
        urgency=_one_of(body, "urgency", URGENCIES),
        severity=_one_of(body, "severity", SEVERITIES),
        certainty=_one_of(body, "certainty", CERTAINTIES),
        start=None if start is None else _ms(body, "start"),
        expires=_ms(body, "expires"),
        areas=_areas(body.get("area")),
        language=_str(body, "language", MAX_LANGUAGE, required=False),
        text=text,
        clip=clip,
        repeat=repeat,
    )


def parse(body: Mapping[str, Any], gateway_id: str, topic_gw: str, now: int) -> Broadcast:
    """§8.1.1 for a copy whose signature gateway `gateway_id` has verified, received on the
    topic of `topic_gw`, at `now` (Unix ms): `wrong_gateway`, then `bad_field`, then
    `expired`. Whether the id was accepted before (`replay`) is the gateway's to know."""
    if topic_gw != gateway_id or body.get("gw") != gateway_id:
        raise Rejected(
            WRONG_GATEWAY,
            f"made for gateway {str(body.get('gw'))[:40]!r} on {topic_gw[:40]!r}, "
            f"this is {gateway_id!r}",
        )
    bc = parse_fields(body, gateway_id)
    if bc.expires <= now:
        raise Rejected(EXPIRED, f"expired at {bc.expires}, now {now}")
    return bc
