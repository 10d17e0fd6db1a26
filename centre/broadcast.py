"""A village broadcast as the centre builds it (docs/protocol.md §8.1), without any I/O.

`BroadcastIn` is what staff post (field checks, by pydantic); `build()` adds the rules that
span fields (times, references, area, whether the text fits a speaker's frame) and returns a
`Broadcast`; `route()` works out which gateways get a copy; `signed_copy()` makes the §6 frame
for one gateway with the link's codec (`protocol.broadcast`), after checking the copy as a
gateway will. Everything that staff can get wrong raises `BroadcastError` with a message that
says what to change.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from device_fw import okproto
from protocol import broadcast as wire
from protocol import topics
from protocol.broadcast import CERTAINTIES as CERTAINTIES
from protocol.broadcast import CLIPS as CLIPS
from protocol.broadcast import MAX_AREAS, MAX_ID, MAX_REFERENCES, MAX_SENDER, MAX_TEXT
from protocol.broadcast import MSG_TYPES as MSG_TYPES
from protocol.broadcast import SEVERITIES as SEVERITIES
from protocol.broadcast import STATUSES as STATUSES
from protocol.broadcast import URGENCIES as URGENCIES
from protocol.broadcast import Area as Area
from protocol.errors import Rejected
from protocol.signed import encode_json, sign_frame

# The §8.1 values, limits and `Area` are the wire's (protocol.broadcast); the names above are
# re-exported for cap and bcstore. CAP 1.2 info/category values are the centre's own.
CATEGORIES = (
    "Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra",
    "CBRNE", "Other",
)

# The values above as types, for pydantic (tests check that the two agree).
Status = Literal["Actual", "Exercise", "Test"]
MsgType = Literal["Alert", "Update", "Cancel"]
Urgency = Literal["Immediate", "Expected", "Future", "Past", "Unknown"]
Severity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
Certainty = Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"]
Clip = Literal["siren", "chime"]
Category = Literal[
    "Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra",
    "CBRNE", "Other",
]

MAX_BY = 32
MAX_EVENT = 64
# What staff may ask for per village; the wire allows more (an Update or Cancel without an area
# takes the union of the referenced broadcasts' areas), up to wire.MAX_GROUPS and MAX_SPEAKERS.
MAX_GROUPS = 32
MAX_SPEAKERS = wire.MAX_SPEAKERS
MAX_INT = okproto.MAX_INT
DAY_MS = 86_400_000
# Far enough for any real plan; near enough to catch a wrong year or unit.
MAX_AHEAD_MS = 30 * DAY_MS
# A start this far in the past is a typing mistake, not "now" (CAP imports may say otherwise).
PAST_START_SLACK_MS = 5 * 60_000
# Below this a time in ms would be before 1973: it is Unix seconds given by mistake.
MIN_PLAUSIBLE_MS = 10**11

# CAP forbids spaces, commas, '<' and '&' in sender and identifier (references split on them).
_SENDER_BAD = re.compile(r"[\s,<&]")


def _local_id(v: str) -> str:
    if not okproto.valid_id(v):
        raise ValueError(f"{v[:40]!r} is not an id: 1-32 of a-z, 0-9, '-', not starting with '-'")
    return v


def _bc_id(v: str) -> str:
    if not okproto.valid_bc_id(v):
        raise ValueError(f"{v[:50]!r} is not a broadcast id: 1-{MAX_ID} of A-Za-z0-9._:-")
    return v


LocalId = Annotated[str, AfterValidator(_local_id)]
BroadcastId = Annotated[str, AfterValidator(_bc_id)]


class BroadcastError(ValueError):
    """A broadcast that cannot be sent as asked; the message says what to change."""


def validation_message(exc: ValidationError) -> str:
    """pydantic's errors as one line: `field.path: what is wrong; ...`."""
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else str(e["msg"]))
    return "; ".join(parts)


def check_text(text: str) -> str:
    """Speakers speak the Unicode BMP; control characters other than new line are refused."""
    for i, ch in enumerate(text):
        o = ord(ch)
        if o > 0xFFFF or 0xD800 <= o <= 0xDFFF:
            raise ValueError(
                f"character {i + 1} (U+{o:04X}) is outside the Basic Multilingual Plane; "
                "speakers cannot say it (emoji and rare characters are not supported)"
            )
        if (o < 0x20 and ch != "\n") or o == 0x7F:
            raise ValueError(f"character {i + 1} is a control character (U+{o:04X})")
    return text


class AreaIn(BaseModel):
    """One village: all its speakers, or only the listed groups and speakers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    village: LocalId = Field(description="village id (§1.1)")
    groups: list[LocalId] = Field(default_factory=list, max_length=MAX_GROUPS)
    speakers: list[LocalId] = Field(default_factory=list, max_length=MAX_SPEAKERS)


class BroadcastIn(BaseModel):
    """A broadcast as staff ask for it (docs/protocol.md §8.1; times are Unix milliseconds)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    by: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_BY)
    ] | None = Field(
        default=None,
        description="ignored when a staff member is logged in: the broadcast is theirs",
    )
    confirm_extreme: bool = Field(
        default=False,
        description="required (true) for severity Extreme to a whole village: 409 otherwise",
    )
    status: Status = "Actual"
    msgType: MsgType = "Alert"
    references: list[BroadcastId] = Field(
        default_factory=list,
        max_length=MAX_REFERENCES,
        description="for Update and Cancel: ids of broadcasts this centre sent",
    )
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    start: int | None = Field(
        default=None, ge=0, lt=MAX_INT, description="hold until then (Unix ms); absent: now"
    )
    expires: int | None = Field(default=None, ge=0, lt=MAX_INT, description="Unix ms")
    valid_for_s: int | None = Field(
        default=None, ge=1, le=MAX_AHEAD_MS // 1000,
        description="instead of expires: seconds from start (or from now)",
    )
    area: list[AreaIn] = Field(
        default_factory=list,
        max_length=MAX_AREAS,
        description="villages; may be empty for Update and Cancel (the referenced ones' area)",
    )
    language: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,4})?$")
    ] = "zh-CN"
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT)] = ""
    clip: Clip | None = None
    repeat: int = Field(default=1, ge=1, le=5)
    category: Category = "Safety"
    event: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_EVENT)
    ] = "Village broadcast"

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return check_text(v)


@dataclass(frozen=True)
class Reference:
    """CAP references a message by sender, identifier and sent time."""

    id: str
    sender: str
    sent: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "sender": self.sender, "sent": self.sent}


@dataclass(frozen=True)
class CapOrigin:
    """A CAP import's identity as its source gave it: kept at the centre, mapped to the
    centre's own broadcast id (the wire and the speakers take at most 40 characters of
    A-Za-z0-9._:- and `MAX_REFERENCES` references; CAP sets neither limit)."""

    identifier: str
    sender: str
    sent: int
    msg_type: str
    references: tuple[Reference, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "sender": self.sender,
            "sent": self.sent,
            "msgType": self.msg_type,
            "references": [
                {"identifier": r.id, "sender": r.sender, "sent": r.sent} for r in self.references
            ],
        }

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> CapOrigin:
        return CapOrigin(
            str(obj["identifier"]), str(obj["sender"]), int(obj["sent"]), str(obj["msgType"]),
            tuple(
                Reference(str(r["identifier"]), str(r["sender"]), int(r["sent"]))
                for r in obj.get("references", ())
            ),
        )


@dataclass(frozen=True)
class Broadcast:
    id: str
    sender: str
    sent: int
    status: str
    msg_type: str
    urgency: str
    severity: str
    certainty: str
    expires: int
    area: tuple[Area, ...]
    language: str
    text: str
    references: tuple[Reference, ...] = ()
    start: int | None = None
    clip: str | None = None
    repeat: int = 1
    category: str = "Safety"
    event: str = "Village broadcast"
    origin: CapOrigin | None = None  # a CAP import's own identity, as its source gave it

    @property
    def priority(self) -> int:
        """§8.1.2: 0 interrupts, 1 plays next, 2 waits its turn."""
        return okproto.priority(self.severity, self.urgency)

    def needs_extreme_confirmation(self) -> bool:
        """Severity Extreme to the whole of a village (or more): staff confirm it explicitly.
        A Cancel stops sound, and a Test never plays, so neither asks."""
        return (
            self.severity == "Extreme"
            and self.msg_type != "Cancel"
            and self.status != "Test"
            and any(a.whole_village() for a in self.area)
        )

    def as_reference(self) -> Reference:
        return Reference(self.id, self.sender, self.sent)


def areas_json(areas: Iterable[Area]) -> str:
    return json.dumps([a.as_json() for a in areas], ensure_ascii=False)


def areas_from_json(text: str) -> tuple[Area, ...]:
    return tuple(Area.from_json(a) for a in json.loads(text))


def merge_areas(areas: Iterable[Area]) -> tuple[Area, ...]:
    """One entry per village: the whole village if any entry asks for it, else the union of
    the groups and speakers asked for."""
    merged: dict[str, Area] = {}
    for a in areas:
        old = merged.get(a.village)
        if old is None:
            merged[a.village] = a
        elif old.whole_village() or a.whole_village():
            merged[a.village] = Area(a.village)
        else:
            merged[a.village] = Area(
                a.village,
                tuple(sorted(set(old.groups) | set(a.groups))),
                tuple(sorted(set(old.speakers) | set(a.speakers))),
            )
    return tuple(merged[v] for v in sorted(merged))


def floor_s(ms: int) -> int:
    """Broadcast times are whole seconds, as in CAP, so that CAP round trips are exact."""
    return ms - ms % 1000


def make_id(centre_id: str, now: int) -> str:
    """`{centre}-{yyyymmddHHMMSS}-{8 hex}` (UTC), at most 38 characters."""
    stamp = datetime.fromtimestamp(now / 1000, UTC).strftime("%Y%m%d%H%M%S")
    return f"{centre_id[:14]}-{stamp}-{secrets.token_hex(4)}"


# Exercise plays only where staff enabled drills, and says so first, so that nobody takes a
# drill for a real warning.
DRILL_PREFIX = "演练："


def drill_text(text: str) -> str:
    return text if text.startswith(DRILL_PREFIX) else DRILL_PREFIX + text


def make_sender(centre_id: str, by: str) -> str:
    """§8.1 sender: the centre's id and the staff member, in CAP's alphabet."""
    return f"{centre_id}:{_SENDER_BAD.sub('_', by)}"[:MAX_SENDER]


def check_sender(sender: str) -> str:
    if not 1 <= len(sender) <= MAX_SENDER or _SENDER_BAD.search(sender):
        raise BroadcastError(
            f"sender {sender[:80]!r} must be 1-{MAX_SENDER} characters without spaces, "
            "commas, '<' or '&'"
        )
    return sender


def _time(name: str, value: int) -> int:
    if value < MIN_PLAUSIBLE_MS:
        raise BroadcastError(
            f"{name} {value} looks like Unix seconds; give Unix milliseconds ({value * 1000})"
        )
    return floor_s(value)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def build(
    req: BroadcastIn,
    *,
    centre_id: str,
    now: int,
    known: Mapping[str, Broadcast] | None = None,
    identifier: str | None = None,
    sender: str | None = None,
    sent: int | None = None,
    references: Sequence[Reference] | None = None,
    allow_past_start: bool = False,
    origin: CapOrigin | None = None,
) -> Broadcast:
    """The cross-field rules. `known` holds the broadcasts named in `req.references` that this
    centre has (their area is used when `req.area` is empty). A CAP import passes the
    message's own `identifier`, `sender`, `sent` and `references` (with sender and sent), and
    `allow_past_start` (a CAP onset in the past means: now)."""
    known = known or {}
    if identifier is not None and not okproto.valid_bc_id(identifier):
        raise BroadcastError(
            f"identifier {identifier[:80]!r} must be 1-{MAX_ID} characters of A-Za-z0-9._:- "
            "(speakers keep broadcast ids that short)"
        )
    bc_id = identifier or make_id(centre_id, now)
    sender = check_sender(
        sender if sender is not None else make_sender(centre_id, req.by or "staff")
    )
    sent = floor_s(sent if sent is not None else now)

    refs = _references(req, bc_id, known, references)
    area = _area(req, known)

    start = None if req.start is None else _time("start", req.start)
    if start is not None:
        if start < now - PAST_START_SLACK_MS and not allow_past_start:
            raise BroadcastError(
                f"start {_when(start)} is in the past; leave start out to send it now"
            )
        if start > now + MAX_AHEAD_MS:
            raise BroadcastError(f"start {_when(start)} is more than 30 days ahead")
    begins = max(now, start or now)
    if (req.expires is None) == (req.valid_for_s is None):
        raise BroadcastError("give exactly one of expires (Unix ms) and valid_for_s (seconds)")
    if req.expires is not None:
        expires = _time("expires", req.expires)
    else:
        assert req.valid_for_s is not None
        expires = floor_s((start if start is not None else now) + req.valid_for_s * 1000)
    if expires <= begins:
        what = "start" if start is not None and start > now else "now"
        raise BroadcastError(
            f"expires {_when(expires)} is not after {what}: the broadcast would never play"
        )
    if expires > begins + MAX_AHEAD_MS:
        raise BroadcastError(f"expires {_when(expires)} is more than 30 days after it starts")

    text = req.text.strip()
    if req.msgType != "Cancel" and not text and req.clip is None:
        raise BroadcastError("give a text or a clip: a speaker would have nothing to play")
    if req.status == "Exercise" and req.msgType != "Cancel":
        text = drill_text(text)
        if len(text) > MAX_TEXT:
            raise BroadcastError(
                f"text: an Exercise is announced as a drill ({DRILL_PREFIX!r} first), which "
                f"makes it {len(text)} characters; speakers take at most {MAX_TEXT}: shorten it "
                f"by {len(text) - MAX_TEXT}"
            )

    bc = Broadcast(
        id=bc_id,
        sender=sender,
        sent=sent,
        status=req.status,
        msg_type=req.msgType,
        references=refs,
        urgency=req.urgency,
        severity=req.severity,
        certainty=req.certainty,
        start=start,
        expires=expires,
        area=area,
        language=req.language,
        text=text,
        clip=req.clip,
        repeat=req.repeat,
        category=req.category,
        event=req.event,
        origin=origin,
    )
    check_speaker_frame(bc)
    return bc


def _references(
    req: BroadcastIn,
    bc_id: str,
    known: Mapping[str, Broadcast],
    given: Sequence[Reference] | None,
) -> tuple[Reference, ...]:
    if req.msgType == "Alert":
        if req.references:
            raise BroadcastError("references are only for an Update or a Cancel")
        return ()
    if not req.references:
        raise BroadcastError(f"an {req.msgType} needs references: the ids of the broadcasts it "
                             f"{'replaces' if req.msgType == 'Update' else 'stops'}")
    if len(set(req.references)) != len(req.references):
        raise BroadcastError("references name the same broadcast twice")
    if bc_id in req.references:
        raise BroadcastError("a broadcast cannot reference itself")
    if given is not None:  # a CAP import: its references carry sender and sent themselves
        by_id = {r.id: r for r in given}
        if set(by_id) != set(req.references):
            raise BroadcastError("references and their sender,identifier,sent triples differ")
        return tuple(by_id[i] for i in req.references)
    missing = [i for i in req.references if i not in known]
    if missing:
        raise BroadcastError(f"references: this centre has no broadcast {', '.join(missing)}")
    return tuple(known[i].as_reference() for i in req.references)


def _area(req: BroadcastIn, known: Mapping[str, Broadcast]) -> tuple[Area, ...]:
    seen: set[str] = set()
    area: list[Area] = []
    for a in req.area:
        if a.village in seen:
            raise BroadcastError(
                f"village {a.village} appears twice in area; list its groups and speakers once"
            )
        seen.add(a.village)
        area.append(Area(a.village, tuple(dict.fromkeys(a.groups)), tuple(dict.fromkeys(a.speakers))))
    if area:
        return tuple(area)
    if req.msgType == "Alert":
        raise BroadcastError("area is empty: name at least one village")
    referenced = [known[i] for i in req.references if i in known]
    if not referenced:
        raise BroadcastError(
            "area is empty and the referenced broadcasts are not at this centre: give the area"
        )
    return merge_areas(a for bc in referenced for a in bc.area)


def check_speaker_frame(bc: Broadcast) -> None:
    """The gateway re-sends the broadcast to each speaker in a §8.2 frame (at most
    `okproto.MAX_BC_BODY` bytes, non-ASCII text as \\uXXXX escapes): refuse here a text that
    cannot fit, rather than have every gateway refuse it later."""
    copy: dict[str, object] = {
        "id": bc.id,
        "mt": bc.msg_type,
        "st": bc.status,
        "pri": bc.priority,
        "exp": bc.expires,
        "ts": MAX_INT - 1,  # the gateway's clock, added to each copy
        "ref": bc.references[0].id if bc.references else None,
        "clip": bc.clip,
        "rep": bc.repeat,
        "lang": bc.language,
        "text": bc.text,
    }
    longest_device = "d" * 32
    try:
        okproto.encode_bc(bytes(32), longest_device, MAX_INT - 1, copy)
    except ValueError as exc:
        raise BroadcastError(
            f"text is too long for a speaker ({exc}; each non-ASCII character takes 6 bytes): "
            "shorten it"
        ) from None


def route(
    area: Sequence[Area], served: Mapping[str, frozenset[str]]
) -> dict[str, tuple[Area, ...]]:
    """Gateway id -> the part of `area` it serves. `served` maps each enrolled gateway to its
    villages. A village that no gateway serves is an error (nothing would play there)."""
    out: dict[str, list[Area]] = {}
    unserved = []
    for a in area:
        gws = sorted(gw for gw, villages in served.items() if a.village in villages)
        if not gws:
            unserved.append(a.village)
        for gw in gws:
            out.setdefault(gw, []).append(a)
    if unserved:
        raise BroadcastError(
            f"no enrolled gateway serves village {', '.join(unserved)}: enrol its gateway with "
            f"`onekey centre enrol-gateway ... --village {unserved[0]}`, or check the village id"
        )
    return {gw: tuple(areas) for gw, areas in sorted(out.items())}


def broadcast_topic(gw: str) -> str:
    return topics.broadcast(gw)


def wire_form(bc: Broadcast, gw: str, area: Sequence[Area]) -> wire.Broadcast:
    """The §8.1 copy for gateway `gw` (its part of the area only)."""
    return wire.Broadcast(
        id=bc.id,
        gw=gw,
        sender=bc.sender,
        sent=bc.sent,
        status=bc.status,
        msg_type=bc.msg_type,
        references=tuple(r.id for r in bc.references),
        urgency=bc.urgency,
        severity=bc.severity,
        certainty=bc.certainty,
        start=bc.start,
        expires=bc.expires,
        areas=tuple(area),
        language=bc.language,
        text=bc.text,
        clip=bc.clip,
        repeat=bc.repeat,
    )


def wire_body(bc: Broadcast, gw: str, area: Sequence[Area]) -> dict[str, Any]:
    """The §8.1 body of the copy for gateway `gw` (its part of the area only)."""
    return wire.encode(wire_form(bc, gw, area))


def signed_copy(
    key: Ed25519PrivateKey, bc: Broadcast, gw: str, area: Sequence[Area]
) -> tuple[str, bytes]:
    """(topic, payload) for gateway `gw`, signed with the centre's key as in §6. The copy is
    checked as the gateway will check it, so that staff hear now, not from a silent village,
    about a copy no gateway would accept (an Update or Cancel that takes the union of several
    broadcasts' areas can outgrow the wire's limits)."""
    topic = broadcast_topic(gw)
    body = wire_body(bc, gw, area)
    try:
        wire.parse_fields(body, gw)
    except Rejected as exc:
        raise BroadcastError(f"the copy for gateway {gw} would be refused: {exc.detail}") from None
    payload = sign_frame(key, topic, encode_json(body))
    if len(payload) > wire.MAX_FRAME:
        raise BroadcastError(
            f"the copy for gateway {gw} is {len(payload)} bytes, over {wire.MAX_FRAME}: "
            "name fewer speakers or groups, or send two broadcasts"
        )
    return topic, payload
