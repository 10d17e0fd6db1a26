"""Broadcast rules at the gateway (protocol §8.1, §8.2), free of I/O.

`parse_broadcast` checks a centre broadcast whose signature has already been verified;
`targets` picks the speakers it is for; `speaker_fields` is what each speaker's copy carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from device_fw import okproto
from gateway.registry import Device

WRONG_GATEWAY = "wrong_gateway"
BAD_FIELD = "bad_field"
EXPIRED = "expired"
REPLAY = "replay"

URGENCY = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITY = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTY = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")
CLIPS = ("siren", "chime")
MAX_AREAS = 64
MAX_LIST = 200
MAX_REFERENCES = 16

# Gateway-side delivery states (§8.3) and the speaker's own report states.
GATEWAY_STATES = ("pending", "queued", "offline")
FINAL_STATES = ("played", "failed", "expired", "cancelled")


class BroadcastRejected(Exception):
    """A broadcast the gateway refuses; `reason` is the counter name (§8.1.1)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Area:
    village: str
    groups: tuple[str, ...] = ()
    speakers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Broadcast:
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
        return okproto.priority(self.severity, self.urgency)


def _bad(detail: str) -> BroadcastRejected:
    return BroadcastRejected(BAD_FIELD, detail)


def _str(body: Mapping[str, Any], name: str, limit: int, *, required: bool = True) -> str:
    v = body.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or len(v) > limit or (required and not v):
        raise _bad(f"{name} must be a string of 1-{limit} characters")
    return v


def _one_of(body: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    v = body.get(name)
    if v not in allowed:
        raise _bad(f"{name} must be one of {', '.join(allowed)}")
    return str(v)


def _ms(body: Mapping[str, Any], name: str, *, required: bool = True) -> int | None:
    v = body.get(name)
    if v is None and not required:
        return None
    if type(v) is not int or not 0 < v < okproto.MAX_INT:
        raise _bad(f"{name} must be a Unix time in milliseconds")
    return v


def _ids(value: object, name: str, check: Any, limit: int = MAX_LIST) -> tuple[str, ...]:
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
                groups=_ids(a.get("groups"), "area groups", okproto.valid_id),
                speakers=_ids(a.get("speakers"), "area speakers", okproto.valid_id),
            )
        )
    return tuple(out)


def _text(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > okproto.MAX_TEXT:
        raise _bad(f"text must be a string of at most {okproto.MAX_TEXT} characters")
    if any(ord(ch) > 0xFFFF or (ord(ch) < 0x20 and ch not in "\n\t") for ch in value):
        raise _bad("text must stay in the Unicode BMP and hold no control characters")
    return value


def parse_broadcast(body: Mapping[str, Any], gateway_id: str, topic_gw: str, now: int) -> Broadcast:
    """Check every field of a verified centre broadcast (§8.1.1); raises BroadcastRejected."""
    if topic_gw != gateway_id or body.get("gw") != gateway_id:
        raise BroadcastRejected(
            WRONG_GATEWAY, f"made for gateway {body.get('gw')!r} on {topic_gw!r}, this is {gateway_id!r}"
        )
    bc_id = body.get("id")
    if not okproto.valid_bc_id(bc_id):
        raise _bad("id must be 1-40 characters of A-Za-z0-9._:-")
    assert isinstance(bc_id, str)
    msg_type = _one_of(body, "msgType", okproto.BC_TYPES)
    references = _ids(body.get("references"), "references", okproto.valid_bc_id, MAX_REFERENCES)
    if msg_type != "Alert" and not references:
        raise _bad(f"an {msg_type} needs references")
    repeat = body.get("repeat", 1)
    if type(repeat) is not int or not 1 <= repeat <= 5:
        raise _bad("repeat must be an integer 1-5")
    clip = body.get("clip")
    if clip is not None and clip not in CLIPS:
        raise _bad(f"clip must be one of {', '.join(CLIPS)}")
    text = _text(body.get("text"))
    if msg_type != "Cancel" and not text and clip is None:
        raise _bad("a broadcast needs a text or a clip")
    bc = Broadcast(
        id=bc_id,
        gw=gateway_id,
        sender=_str(body, "sender", 64),
        sent=_ms(body, "sent") or 0,
        status=_one_of(body, "status", okproto.BC_STATUS),
        msg_type=msg_type,
        references=references,
        urgency=_one_of(body, "urgency", URGENCY),
        severity=_one_of(body, "severity", SEVERITY),
        certainty=_one_of(body, "certainty", CERTAINTY),
        start=_ms(body, "start", required=False),
        expires=_ms(body, "expires") or 0,
        areas=_areas(body.get("area")),
        language=_str(body, "language", 8, required=False),
        text=text,
        clip=clip,
        repeat=repeat,
    )
    if bc.expires <= now:
        raise BroadcastRejected(EXPIRED, f"expired at {bc.expires}, now {now}")
    return bc


def targets(bc: Broadcast, devices: Iterable[Device]) -> list[str]:
    """The enabled speakers the broadcast is for, sorted: per village all of its speakers, or
    only the listed groups and speakers."""
    out = []
    for dev in devices:
        if dev.role != "speaker" or not dev.enabled:
            continue
        for area in bc.areas:
            if area.village != dev.village:
                continue
            if not area.groups and not area.speakers:
                out.append(dev.id)
                break
            if dev.id in area.speakers or set(dev.groups) & set(area.groups):
                out.append(dev.id)
                break
    return sorted(out)


def speaker_fields(bc: Broadcast) -> dict[str, object]:
    """The §8.2 body fields of each speaker's copy (the codec adds t, d and c)."""
    fields: dict[str, object] = {
        "id": bc.id,
        "mt": bc.msg_type,
        "st": bc.status,
        "pri": bc.priority,
        "exp": bc.expires,
    }
    if bc.references:
        # A speaker stops one broadcast per Cancel or Update; the gateway applies the rest of
        # the references to its own deliveries.
        fields["ref"] = bc.references[0]
    if bc.msg_type != "Cancel":
        if bc.clip:
            fields["clip"] = bc.clip
        if bc.repeat != 1:
            fields["rep"] = bc.repeat
        if bc.language:
            fields["lang"] = "".join(ch for ch in bc.language if 0x20 < ord(ch) < 0x7F)
        if bc.text:
            fields["text"] = bc.text
    return fields


def to_row(bc: Broadcast) -> dict[str, Any]:
    """A JSON-able form for the gateway's store."""
    return {
        "id": bc.id, "gw": bc.gw, "sender": bc.sender, "sent": bc.sent, "status": bc.status,
        "msgType": bc.msg_type, "references": list(bc.references), "urgency": bc.urgency,
        "severity": bc.severity, "certainty": bc.certainty, "start": bc.start,
        "expires": bc.expires,
        "area": [
            {"village": a.village, "groups": list(a.groups), "speakers": list(a.speakers)}
            for a in bc.areas
        ],
        "language": bc.language, "text": bc.text, "clip": bc.clip, "repeat": bc.repeat,
    }


def from_row(row: dict[str, Any]) -> Broadcast:
    """The inverse of `to_row`, for a broadcast this gateway accepted earlier."""
    return Broadcast(
        id=row["id"], gw=row["gw"], sender=row["sender"], sent=row["sent"], status=row["status"],
        msg_type=row["msgType"], references=tuple(row["references"]), urgency=row["urgency"],
        severity=row["severity"], certainty=row["certainty"], start=row["start"],
        expires=row["expires"],
        areas=tuple(
            Area(a["village"], tuple(a["groups"]), tuple(a["speakers"])) for a in row["area"]
        ),
        language=row["language"], text=row["text"], clip=row["clip"], repeat=row["repeat"],
    )
