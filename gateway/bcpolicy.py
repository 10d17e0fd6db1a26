"""Broadcast rules at the gateway (protocol §8.1, §8.2), free of I/O.

A centre broadcast whose signature has been verified is checked by the link's codec
(`parse_broadcast`, that is `protocol.broadcast.parse`); `targets` picks the speakers it is for;
`speaker_fields` is what each speaker's copy carries; `to_row` / `from_row` are its form in the
gateway's store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.registry import Device
from protocol import broadcast
from protocol.broadcast import Area as Area
from protocol.broadcast import Broadcast as Broadcast
from protocol.errors import REPLAY as REPLAY
from protocol.errors import Rejected

# Gateway-side delivery states (§8.3) and the speaker's own report states.
GATEWAY_STATES = ("pending", "queued", "offline")
FINAL_STATES = ("played", "failed", "expired", "cancelled")

# A broadcast the gateway refuses; `reason` is the counter name (§8.1.1).
BroadcastRejected = Rejected
parse_broadcast = broadcast.parse


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
