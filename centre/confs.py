"""A gateway's confirmation of centre downlinks (docs/protocol.md §6.6), at the centre.

The centre holds every downlink that carries state (a staff `acked` ack, a broadcast copy, a
Cancel, which is a broadcast copy too) in its `downlinks` table until the gateway it was for
confirms it, after the gateway has committed it (or known it as a repeat, or refused it for good
for a reason other than a bad signature). A broker's PUBACK only says the broker has it, and a
broker killed before its autosave loses it. A confirmation names things the centre sends once
and never reuses (an event's `acked` ack, a broadcast id), so a repeated or replayed one
confirms nothing new: it needs no replay window.

The message itself is the link's codec: `protocol.uplink.Confirmation`.
"""

from __future__ import annotations

from protocol import topics
from protocol.uplink import CONFIRMED_STATES as ACK_STATES
from protocol.uplink import MAX_CONFIRMATIONS as MAX_ITEMS
from protocol.uplink import Confirmation as Conf
from protocol.uplink import parse_confirmation as parse_conf

__all__ = ["ACK_STATES", "MAX_ITEMS", "SUB_CONF", "Conf", "conf_topic", "parse_conf"]

SUB_CONF = topics.SUB_CONFIRMATIONS
conf_topic = topics.confirmations
