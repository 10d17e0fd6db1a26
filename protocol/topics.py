"""Topics of the centre broker (docs/protocol.md §6, §6.6, §8.1, §8.3), pure.

`ok/v1/gw/{gw}/up/{kind}` (gateway -> centre) and `ok/v1/gw/{gw}/down/{kind}` (centre ->
gateway). The broker's ACL confines each gateway to its own `{gw}` (its certificate's name).
"""

from __future__ import annotations

from device_fw.okproto import valid_id
from protocol.errors import BAD_TOPIC, Rejected
from protocol.signed import MAX_SIGNED_PAYLOAD

PREFIX = "ok/v1/gw/"
UP = "up"
DOWN = "down"

# gateway -> centre
EVENT = "event"  # §6.2, QoS 1
HEARTBEAT = "hb"  # §6.5, QoS 0
REPORTS = "bcr"  # §8.3, QoS 1
CONFIRMATIONS = "conf"  # §6.6, QoS 1
SMS_REPORTS = "sms"  # §11, QoS 1: an SMS the gateway sent for an alarm
# centre -> gateway
ACK = "ack"  # §6.4, QoS 1
BROADCAST = "bc"  # §8.1, QoS 1
CONTACTS = "contacts"  # §11, QoS 1: the contact list, in parts

UP_KINDS = (EVENT, HEARTBEAT, REPORTS, CONFIRMATIONS, SMS_REPORTS)
DOWN_KINDS = (ACK, BROADCAST, CONTACTS)
QOS = {EVENT: 1, HEARTBEAT: 0, REPORTS: 1, CONFIRMATIONS: 1, SMS_REPORTS: 1, ACK: 1, BROADCAST: 1,
       CONTACTS: 1}
# The largest signed payload of each kind, in bytes. Reports: 200 of them with long device ids
# need about 16 KB; 16,000 stays under the centre broker's packet limit (16,384,
# `transport.brokers.CENTRE_MAX_PACKET`) with room for the MQTT header and the topic. A larger
# packet would cost the gateway its connection, and the same batch would go out again after
# every reconnect.
MAX_PAYLOAD = {
    EVENT: MAX_SIGNED_PAYLOAD,
    HEARTBEAT: MAX_SIGNED_PAYLOAD,
    REPORTS: 16_000,
    CONFIRMATIONS: MAX_SIGNED_PAYLOAD,
    SMS_REPORTS: MAX_SIGNED_PAYLOAD,
    ACK: MAX_SIGNED_PAYLOAD,
    BROADCAST: MAX_SIGNED_PAYLOAD,
    CONTACTS: MAX_SIGNED_PAYLOAD,
}


def up(gw: str, kind: str) -> str:
    if kind not in UP_KINDS:
        raise ValueError(f"unknown uplink kind {kind!r}")
    return f"{PREFIX}{gw}/{UP}/{kind}"


def down(gw: str, kind: str) -> str:
    if kind not in DOWN_KINDS:
        raise ValueError(f"unknown downlink kind {kind!r}")
    return f"{PREFIX}{gw}/{DOWN}/{kind}"


def event(gw: str) -> str:
    return up(gw, EVENT)


def heartbeat(gw: str) -> str:
    return up(gw, HEARTBEAT)


def reports(gw: str) -> str:
    return up(gw, REPORTS)


def confirmations(gw: str) -> str:
    return up(gw, CONFIRMATIONS)


def sms_reports(gw: str) -> str:
    return up(gw, SMS_REPORTS)


def contacts(gw: str) -> str:
    return down(gw, CONTACTS)


def ack(gw: str) -> str:
    return down(gw, ACK)


def broadcast(gw: str) -> str:
    return down(gw, BROADCAST)


# The centre's subscriptions (one per kind, so each can have its own QoS and handler).
SUB_EVENTS = event("+")
SUB_HEARTBEATS = heartbeat("+")
SUB_REPORTS = reports("+")
SUB_CONFIRMATIONS = confirmations("+")
SUB_SMS_REPORTS = sms_reports("+")


def parse(topic: str) -> tuple[str, str, str]:
    """`ok/v1/gw/{gw}/{up|down}/{kind}` -> (gw, direction, kind); else `bad_topic`."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[:3] != ["ok", "v1", "gw"]:
        raise Rejected(BAD_TOPIC, topic[:80])
    direction, kind = parts[4], parts[5]
    kinds = UP_KINDS if direction == UP else DOWN_KINDS if direction == DOWN else ()
    if kind not in kinds:
        raise Rejected(BAD_TOPIC, topic[:80])
    if not valid_id(parts[3]):
        raise Rejected(BAD_TOPIC, "bad gateway id in topic")
    return parts[3], direction, kind


def parse_up(topic: str) -> tuple[str, str]:
    """A gateway -> centre topic -> (gw, kind)."""
    gw, direction, kind = parse(topic)
    if direction != UP:
        raise Rejected(BAD_TOPIC, topic[:80])
    return gw, kind


def parse_down(topic: str) -> tuple[str, str]:
    """A centre -> gateway topic -> (gw, kind)."""
    gw, direction, kind = parse(topic)
    if direction != DOWN:
        raise Rejected(BAD_TOPIC, topic[:80])
    return gw, kind
