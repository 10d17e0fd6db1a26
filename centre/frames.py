"""Gateway-to-centre messages (docs/protocol.md §6) at the centre, without any I/O.

The checks are the link's codec (`protocol.uplink`): `open_uplink` checks one message from the
centre broker in the order of §3.4 adapted to §6 (topic, then enrolment, then the signature, so
an unauthenticated sender never reaches the JSON parser), `parse_event` / `parse_heartbeat` the
fields. Every input either parses or raises `Rejected` with one reason. What is the centre's own
here: an event as its store takes it, and the §6.4 ack made from a stored event.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from centre.store import Event, NewEvent
from device_fw.okproto import MAX_INT as MAX_INT
from device_fw.okproto import valid_id as valid_id
from protocol import acks, topics, uplink
from protocol.errors import BAD_FIELD as BAD_FIELD
from protocol.errors import BAD_TOPIC as BAD_TOPIC
from protocol.errors import REPLAY as REPLAY
from protocol.errors import TOPIC_MISMATCH as TOPIC_MISMATCH
from protocol.errors import UNKNOWN_GATEWAY as UNKNOWN_GATEWAY
from protocol.errors import Rejected as Rejected
from protocol.signed import encode_json, sign_frame
from protocol.uplink import MAX_TEXT as MAX_TEXT
from protocol.uplink import MAX_VILLAGES as MAX_VILLAGES
from protocol.uplink import Heartbeat as Heartbeat
from protocol.uplink import parse_heartbeat as parse_heartbeat

MAX_BY = acks.MAX_BY
MAX_NOTE = acks.MAX_NOTE

SUB_EVENTS = topics.SUB_EVENTS
SUB_HEARTBEATS = topics.SUB_HEARTBEATS
SUB_REPORTS = topics.SUB_REPORTS

event_topic = topics.event
heartbeat_topic = topics.heartbeat
ack_topic = topics.ack
reports_topic = topics.reports
parse_topic = topics.parse_up
open_uplink = uplink.open_up


def parse_event(body: dict[str, Any], gw: str) -> NewEvent:
    """Check an authenticated event body (§6.2) from gateway `gw`, as the store takes it."""
    return uplink.parse_event(body, gw)


def ack_body(ev: Event) -> dict[str, Any]:
    """The current state of a stored event as a §6.4 ack body: `acked` (with by and note)
    once staff acknowledged it, else `received`."""
    if ev.acked_at is not None:
        ack = acks.Ack(ev.id, acks.ACKED, ev.acked_at, ev.acked_by, ev.acked_note)
    else:
        ack = acks.Ack(ev.id, acks.RECEIVED, ev.received_at)
    return acks.encode_ack(ack)


def signed_ack(key: Ed25519PrivateKey, gw: str, body: dict[str, Any]) -> tuple[str, bytes]:
    topic = ack_topic(gw)
    return topic, sign_frame(key, topic, encode_json(body))
