"""Alarms that arrive by SMS on the centre's modem (docs/protocol.md §10), and what gateways
report they sent by SMS (§11).

The centre's modem task (the escalation chain owns it, with its configuration) hands every
incoming SMS here first:

    if not await smsin.handle_incoming(sms):
        ...  # not a gateway alarm message: a contact's reply, for the escalation chain

`handle_incoming` returns False for a text that is not a gateway alarm message (it does not
start with `OK1 `). Otherwise it is ours and True is returned, whatever became of it: the text
is checked (an enrolled gateway, its Ed25519 signature over the text's head, every §6.2 field)
and the alarm is ingested exactly as its MQTT copy would be (`centre.store.insert_events`,
same event id), marked on its timeline as arrived by SMS (`arrived_by_sms`), and shown on the
consoles. Its escalation then starts as for any alarm. When the MQTT copy arrives later, it is
a duplicate: nothing is stored twice, and the `received` ack goes back to the gateway over MQTT
then. A text whose event id is already stored is a replay (or the SMS copy of an alarm that
came by MQTT first): refused, counted and logged (`sms_replay`); a forged or malformed one
likewise (`sms_bad_signature`, `sms_unknown_gateway`, `sms_malformed`, `sms_bad_field`).

A running centre attaches its one handler (`attach`), made with the store, the metrics and the
live hub of the ingest task.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from centre import timeline
from centre.ingest import Metrics, kv
from centre.live import LiveHub
from centre.store import Store, StoreError, event_data, insert_events, now_ms
from modem import IncomingSms
from protocol import contacts, smsalarm, uplink
from protocol.errors import REPLAY, Rejected
from transport.keys import KeyFileError, load_public_hex

log = logging.getLogger("onekey.centre.smsin")

ARRIVED_BY_SMS = "arrived_by_sms"  # timeline: the alarm came to the centre's modem
GATEWAY_SMS = "gateway_sms"  # timeline: the gateway texted someone while cut off


class SmsIngest:
    def __init__(
        self, store: Store, metrics: Metrics, live: LiveHub, clock: Callable[[], int] = now_ms
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.live = live
        self.clock = clock

    async def _key_for(self, text: str) -> dict[str, Ed25519PublicKey]:
        fields = text.strip().split(" ")
        gw = ""
        if len(fields) > 2:
            with contextlib.suppress(Rejected):
                gw = uplink.parse_event_id(fields[2])[0]
        if not gw:
            return {}
        enrolled = await self.store.public_keys({gw})
        try:
            return {gw: load_public_hex(enrolled[gw])} if gw in enrolled else {}
        except KeyFileError:
            log.error(kv(event="bad_enrolled_key", gw=gw))
            return {}

    async def handle_incoming(self, sms: IncomingSms) -> bool:
        if not smsalarm.is_ours(sms.text):
            return False
        self.metrics.inc("sms_in")
        try:
            ev = smsalarm.open_sms(sms.text, (await self._key_for(sms.text)).get)
        except (Rejected, smsalarm.NotOurs) as exc:
            reason = exc.reason if isinstance(exc, Rejected) else "malformed"
            detail = exc.detail if isinstance(exc, Rejected) else ""
            self.metrics.reject(f"sms_{reason}")
            log.warning(kv(event="sms_rejected", reason=reason, sender=sms.sender, detail=detail or "-"))
            return True
        now = self.clock()
        try:
            async with self.store.transaction() as db:
                (result,) = await insert_events(db, [ev], now)
                if result.created:
                    await timeline.add(db, ev.id, now, ARRIVED_BY_SMS, timeline.SYSTEM,
                                       {"from": sms.sender, "parts": sms.parts})
        except StoreError as exc:
            # The modem has deleted it from its SIM; the MQTT copy still comes with the line.
            self.metrics.inc("sms_store_failed")
            log.error(kv(event="store_failed", on="sms_alarm", id=ev.id, error=str(exc)))
            return True
        if not result.created:
            self.metrics.reject(f"sms_{REPLAY}")
            log.warning(kv(event="sms_rejected", reason=REPLAY, id=ev.id, sender=sms.sender,
                           state=result.event.state))
            return True
        self.metrics.inc("events")
        self.metrics.inc("events_alarm")
        self.metrics.inc("sms_alarms")
        log.info(kv(event="stored", via="sms", id=ev.id, kind=ev.kind, village=ev.village,
                    household=ev.household or "-", sender=sms.sender))
        self.live.publish("alarm", event_data(result.event))
        return True


async def record_gateway_sms(db: aiosqlite.Connection, r: contacts.SmsReport) -> int:
    """A gateway's report of one SMS it sent for an alarm (§11), on that alarm's timeline, in
    the caller's transaction. Once per (alarm, recipient): a repeat changes nothing (0)."""
    async with db.execute(
        "SELECT 1 FROM alarm_timeline WHERE alarm = ? AND kind = ? "
        "AND json_extract(detail, '$.to') = ?",
        (r.id, GATEWAY_SMS, r.to),
    ) as cur:
        if await cur.fetchone() is not None:
            return 0
    await timeline.add(db, r.id, r.at, GATEWAY_SMS, timeline.SYSTEM,
                       {"to": r.to, "number": r.number, "parts": r.parts, "gw": r.gw})
    return 1


_current: SmsIngest | None = None


def attach(handler: SmsIngest | None) -> None:
    """The running centre's handler (None when it stops)."""
    global _current
    _current = handler


async def handle_incoming(sms: IncomingSms) -> bool:
    """True: a gateway alarm message, handled (ingested, or refused and counted). False: not
    one of ours (a contact's reply): hand it to the escalation chain."""
    if _current is None:
        if smsalarm.is_ours(sms.text):
            log.error(kv(event="sms_not_handled", reason="centre_not_running", sender=sms.sender))
            return True
        return False
    return await _current.handle_incoming(sms)
