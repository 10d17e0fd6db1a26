"""A gateway's confirmation of centre downlinks (docs/protocol.md §6.6), without any I/O.

The centre holds every downlink that carries state (a staff `acked` ack, a broadcast copy, a
Cancel, which is a broadcast copy too) in its `downlinks` table until the gateway it was for
confirms it here, after the gateway has committed it (or known it as a repeat, or refused it
for good for a reason other than a bad signature). A broker's PUBACK only says the broker has
it, and a broker killed before its autosave loses it.

A gateway sends `{gw, ts, acks: [[event_id, state], ...], bc: [broadcast_id, ...]}` on
`ok/v1/gw/{gw}/up/conf`, signed as in §6. A confirmation names things the centre sends once
and never reuses (an event's `acked` ack, a broadcast id), so a repeated or replayed one
confirms nothing new: it needs no replay window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from centre.broadcast import ID_RE
from centre.frames import BAD_FIELD, MAX_INT, TOPIC_MISMATCH, Rejected, valid_id

SUB_CONF = "ok/v1/gw/+/up/conf"
MAX_ITEMS = 200  # acks and broadcast ids together, per message
ACK_STATES = ("received", "acked")


def conf_topic(gw: str) -> str:
    return f"ok/v1/gw/{gw}/up/conf"


@dataclass(frozen=True)
class Conf:
    gw: str
    ts: int
    acks: tuple[tuple[str, str], ...]  # (event id, state)
    bc: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """Names nothing: what a gateway sends right after it (re)connects (§6.6)."""
        return not self.acks and not self.bc


def _event_id(v: object, gw: str) -> bool:
    """§1.2, of this gateway: `{gw}:{device}:{counter}`."""
    if not isinstance(v, str):
        return False
    parts = v.split(":")
    return (
        len(parts) == 3
        and parts[0] == gw
        and valid_id(parts[1])
        and parts[2].isascii()
        and parts[2].isdigit()
        and 1 <= int(parts[2]) < MAX_INT
    )


def parse_conf(body: dict[str, Any], gw: str) -> Conf:
    """Validate an authenticated §6.6 body from gateway `gw`."""
    if body.get("gw") != gw:
        raise Rejected(TOPIC_MISMATCH, f"body gw {str(body.get('gw'))[:40]!r} is not {gw!r}")
    ts = body.get("ts")
    if type(ts) is not int or not 0 <= ts < MAX_INT:
        raise Rejected(BAD_FIELD, "ts must be Unix ms")
    acks, bcs = body.get("acks"), body.get("bc")
    if not isinstance(acks, list) or not isinstance(bcs, list):
        raise Rejected(BAD_FIELD, "acks and bc must both be lists (either may be empty)")
    if len(acks) + len(bcs) > MAX_ITEMS:
        raise Rejected(BAD_FIELD, f"at most {MAX_ITEMS} acks and broadcast ids in one message")
    pairs = []
    for i, item in enumerate(acks):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not _event_id(item[0], gw)
            or item[1] not in ACK_STATES
        ):
            raise Rejected(
                BAD_FIELD,
                f"acks[{i}] must be [event id of this gateway, 'received' or 'acked']",
            )
        pairs.append((str(item[0]), str(item[1])))
    for i, bc in enumerate(bcs):
        if not isinstance(bc, str) or not ID_RE.fullmatch(bc):
            raise Rejected(BAD_FIELD, f"bc[{i}] must be a broadcast id (1-40 of A-Za-z0-9._:-)")
    return Conf(gw, ts, tuple(pairs), tuple(bcs))
