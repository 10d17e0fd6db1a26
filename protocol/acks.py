"""Centre -> gateway acks (docs/protocol.md §6.4), pure.

The centre signs `{id, s, at}` (`received`, once it committed the event) or `{id, s, at, by,
note}` (`acked`, once staff acknowledged it) on `ok/v1/gw/{gw}/down/ack`. The gateway checks
the signature with the centre key it pinned, then that the id is one of its own events and the
state one it knows; it relays the state to the device as a §4 ack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device_fw.okproto import MAX_INT
from protocol import topics
from protocol.errors import BAD_FIELD, BAD_TOPIC, Rejected
from protocol.signed import verify_frame
from protocol.uplink import parse_event_id

RECEIVED = "received"
ACKED = "acked"
STATES = (RECEIVED, ACKED)
MAX_BY = 32  # who acknowledged; the device's §4 ack carries at most 32 ASCII characters of it
MAX_NOTE = 200


@dataclass(frozen=True)
class Ack:
    id: str
    state: str  # received or acked
    at: int | None = None  # Unix ms
    by: str | None = None  # with acked
    note: str | None = None  # with acked

    @property
    def device(self) -> str:
        return self.id.split(":")[1]

    @property
    def counter(self) -> int:
        return int(self.id.split(":")[2])


def encode_ack(ack: Ack) -> dict[str, Any]:
    """The §6.4 body: an `acked` ack always carries `by` and `note` (empty if unknown)."""
    body: dict[str, Any] = {"id": ack.id, "s": ack.state}
    if ack.at is not None:
        body["at"] = ack.at
    if ack.state == ACKED:
        body["by"] = ack.by or ""
        body["note"] = ack.note or ""
    return body


def parse_ack(body: Mapping[str, Any], gw: str) -> Ack:
    """Check an authenticated §6.4 body for gateway `gw`. `at`, `by` and `note` are
    informative: a value of the wrong type is left out rather than refused, so that the state
    still reaches the device."""
    eid, state = body.get("id"), body.get("s")
    ack_gw, _, _ = parse_event_id(eid)
    if ack_gw != gw:
        raise Rejected(BAD_FIELD, f"ack for {str(eid)[:100]!r} is not for an event of {gw}")
    if state not in STATES:
        raise Rejected(BAD_FIELD, "s must be received or acked")
    at, by, note = body.get("at"), body.get("by"), body.get("note")
    return Ack(
        id=str(eid),
        state=str(state),
        at=at if type(at) is int and 0 <= at < MAX_INT else None,
        by=by if isinstance(by, str) else None,
        note=note if isinstance(note, str) else None,
    )


def open_ack(centre_key: Ed25519PublicKey, gw: str, topic: str, payload: bytes) -> Ack:
    """The whole check of one ack at gateway `gw`: topic, the pinned centre key, the fields."""
    if topic != topics.ack(gw):
        raise Rejected(BAD_TOPIC, topic[:80])
    return parse_ack(verify_frame(centre_key, topic, payload, topics.MAX_PAYLOAD[topics.ACK]), gw)
