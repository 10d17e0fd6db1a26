"""The second path: when the centre cannot be reached, alarms go out by SMS, and the speakers
near the household play a local alert (docs/gateway.md, "When the uplink fails").

An alarm still `stored` (the centre has not said `received`) is sent by SMS once the centre
link has been down `link_down_s`, or once the alarm itself has waited `receipt_deadline_s`:
- to the centre's modem, as the signed text of protocol §10 (the centre ingests it under the
  same event id as the MQTT copy, which it deduplicates when the line returns);
- to the household's first contacts (the first ten-household leader, the first family contact)
  and its grid worker, in Chinese, from the contact list the centre pushed down (§11).
Each (alarm, recipient) is recorded in `fallback_sent` before the modem is asked, so an alarm
goes to a recipient at most once, across restarts (a crash mid-send loses that one SMS rather
than sending it twice). A send the modem refused (no network, no SIM, unplugged) is marked
`failed` and tried again while the alarm still waits and the modem is back, at most
`MAX_ATTEMPTS` times; meanwhile the alarm stays in the outbox and goes to the centre with the
line, as always.

With the link down `link_down_s`, the speakers of the household's group in its village (else
those of the group `local_alert_group`, the crossroads speakers) play a short alert naming the
group and the house, unless the policy is off or the household refuses it (§11's
`local_alert`). The gateway signs each copy under the speaker's own key as it does for the
centre's broadcasts (§8.2); the id starts with `gwl.` so that the speakers' reports are known
for what they are. Once per alarm.

What went out by SMS is reported to the centre once the line is back (`up/sms`, §11), and
shows on the alarm's timeline there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_fw import okproto
from gateway.broadcasts import LOCAL_PREFIX
from gateway.config import GatewayConfig, ModemConfig
from gateway.contactlist import ContactList
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store import Store, now_ms
from gateway.village import VillageSide, _log_failure
from modem import Modem, ModemError, PduError, StateChange
from protocol import contacts, smsalarm, uplink
from transport.mqtt import MqttClient, MqttError

log = logging.getLogger("onekey.gateway.fallback")

SCHEMA = """
CREATE TABLE IF NOT EXISTS fallback_sent (
    event TEXT NOT NULL,
    recipient TEXT NOT NULL,
    number TEXT NOT NULL,
    state TEXT NOT NULL,
    at INTEGER NOT NULL,
    parts INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    reported INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event, recipient)
);
"""
SWEEP_S = 0.25
MAX_ATTEMPTS = 3
LOCAL_ALERT_S = 600  # a local alert that has not played in ten minutes never will
SPEAKERS = "speakers"  # the recipient row of the local alert
# Who gets the household's SMS: the first of each of these kinds on its card (§11).
CONTACT_KINDS = ("leader", "family", "grid")
CHINA = dt.timezone(dt.timedelta(hours=8))
_Op = Callable[[aiosqlite.Connection], Awaitable[None]]


@dataclass(frozen=True)
class Pending:
    """An alarm the centre has not received yet."""

    seq: int
    device: str
    counter: int
    village: str
    household: str
    gw_ts: int
    dev_ts: int | None
    dev_up: int | None


def contact_text(h: contacts.Household | None, household_id: str, at_ms: int) -> str:
    """The SMS to a contact: who, where, when, and that the centre cannot be reached now (true
    of both triggers: the link is down, or the centre has not answered); plain Chinese."""
    when = dt.datetime.fromtimestamp(at_ms / 1000, CHINA).strftime("%m月%d日%H:%M")
    who = h.name if h is not None and h.name else f"住户{household_id}"
    where = h.address if h is not None and h.address else ""
    place = f"（{where}）" if where else ""
    return f"【一键报警】{who}{place}于{when}按下了一键报警，乡镇中心暂时联系不上，请尽快上门查看。"


def local_alert_text(h: contacts.Household | None, household_id: str) -> str:
    """What the speakers say: the group and the house, never the person's name or notes."""
    group = h.group if h is not None else ""
    house = h.address if h is not None and h.address else f"{household_id}号"
    # A group written in words (三组) is said before the house unless the address has it; one
    # written as the registry's token (g3) is not said at all.
    if group and not group.isascii() and group not in house:
        house = f"{group}{house}"
    return f"紧急求助：{house}有人按下了一键报警，请附近的邻居马上去看看。"


def local_id(event_id: str) -> str:
    return LOCAL_PREFIX + hashlib.sha256(event_id.encode()).hexdigest()[:20]


class FallbackSide:
    """Constructing does no I/O; `run()` starts the modem and the sweep."""

    def __init__(
        self,
        cfg: GatewayConfig,
        mcfg: ModemConfig,
        store: Store,
        registry: Registry,
        metrics: Metrics,
        village: VillageSide,
        key: Ed25519PrivateKey,
        contact_list: ContactList,
        link_down_since: Callable[[], float | None],
        centre_client: Callable[[], MqttClient | None],
    ) -> None:
        self.cfg = cfg
        self.mcfg = mcfg
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self.village = village
        self.key = key
        self.contacts = contact_list
        self.link_down_since = link_down_since
        self.centre_client = centre_client
        self.modem = Modem(
            mcfg.port,
            command_timeout=mcfg.command_timeout_s,
            poll_interval=mcfg.poll_interval_s,
            reopen_interval=mcfg.reopen_interval_s,
            on_state=self._modem_state,
        )
        self._wake = asyncio.Event()
        self._reporting: set[tuple[str, str]] = set()
        self._report_task: asyncio.Task[None] | None = None
        store.stored_listeners.append(self._wake.set)

    @property
    def modem_state(self) -> str:
        return self.modem.state

    async def init(self) -> None:
        await self.store.db.executescript(SCHEMA)
        self.metrics.set_modem_state(self.modem.state)

    def _modem_state(self, ch: StateChange) -> None:
        self.metrics.set_modem_state(ch.state)
        if ch.state != "ok":
            self.metrics.inc(f"modem_{ch.state}")
            log.warning("event=modem_fault state=%s detail=%r", ch.state, ch.detail)
        else:
            log.info("event=modem_ok detail=%r", ch.detail)
            self._wake.set()

    async def run(self) -> None:
        await self.modem.start(timeout=self.mcfg.command_timeout_s * 4)
        self.metrics.set_modem_state(self.modem.state)
        try:
            while True:
                self._wake.clear()
                try:
                    await self.sweep()
                    self.metrics.inc("fallback_sweeps")  # tests wait on it, not on the clock
                    self._report()
                except StoreError as exc:
                    log.error("event=store_failed on=fallback error=%r", str(exc))
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=SWEEP_S)
                except TimeoutError:
                    pass
        finally:
            await self.modem.close()

    # -- the sweep

    async def pending(self, since_ms: int) -> list[Pending]:
        rows = await self.store.db.execute_fetchall(
            "SELECT seq, device, counter, village, household, gw_ts, dev_ts, dev_up FROM events"
            " WHERE state='stored' AND kind='alarm' AND gw_ts>=? ORDER BY seq LIMIT 200",
            (since_ms,),
        )
        return [Pending(*r) for r in rows]

    async def done(self, event_id: str) -> dict[str, tuple[str, int]]:
        """recipient -> (state, attempts) of what was tried for this alarm."""
        rows = await self.store.db.execute_fetchall(
            "SELECT recipient, state, attempts FROM fallback_sent WHERE event=?", (event_id,)
        )
        return {str(r[0]): (str(r[1]), int(r[2])) for r in rows}

    async def sweep(self) -> None:
        now = now_ms()
        down_since = self.link_down_since()
        link_down = down_since is not None and time.monotonic() - down_since >= self.mcfg.link_down_s
        deadline_ms = int(self.mcfg.receipt_deadline_s * 1000)
        for p in await self.pending(now - int(self.mcfg.max_age_s * 1000)):
            late = now - p.gw_ts >= deadline_ms
            if not (link_down or late):
                continue
            eid = uplink.event_id(self.cfg.gateway_id, p.device, p.counter)
            done = await self.done(eid)
            card = await self.contacts.household(p.household) if p.household else None
            if link_down and SPEAKERS not in done:
                await self._local_alert(eid, p, card)
            for recipient, number, text in self._messages(eid, p, card):
                state, attempts = done.get(recipient, ("", 0))
                if state in ("sent", "sending") or attempts >= MAX_ATTEMPTS:
                    continue
                if state == "failed" and self.modem.state != "ok":
                    continue  # waits for the modem to come back (or for the line)
                if not await self._send(eid, recipient, number, text, attempts):
                    return  # the modem is not usable now: the rest waits too

    def _messages(
        self, eid: str, p: Pending, card: contacts.Household | None
    ) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        ev = uplink.new_event(
            self.cfg.gateway_id, p.seq, "alarm", p.device, p.counter, village=p.village,
            household=p.household, gw_ts=p.gw_ts, dev_ts=p.dev_ts, dev_up=p.dev_up,
        )
        try:
            out.append(("centre", self.mcfg.centre_number, smsalarm.encode_sms(self.key, ev)))
        except smsalarm.SmsTooLong as exc:
            log.error("event=sms_too_long id=%s detail=%r", eid, str(exc))
        if card is not None:
            text = contact_text(card, p.household, p.gw_ts)
            numbers: set[str] = set()
            for kind in CONTACT_KINDS:
                first = next((c for c in card.contacts if c.kind == kind), None)
                if first is None or first.phone in numbers or not first.phone[:1] == "1":
                    continue  # a landline cannot take an SMS
                numbers.add(first.phone)
                out.append((kind, first.phone, text))
        return out

    async def _send(self, eid: str, recipient: str, number: str, text: str, attempts: int) -> bool:
        """One SMS. False when the modem cannot send now (the sweep stops for this round)."""
        at = now_ms()
        await self.store.submit(_record(eid, recipient, number, "sending", at, attempts + 1))
        try:
            result = await self.modem.send_sms(number, text)
        except (ModemError, PduError) as exc:
            reason = type(exc).__name__
            await self.store.submit(_update(eid, recipient, "failed", now_ms(), 0, str(exc)[:200]))
            self.metrics.inc("sms_failed")
            self.metrics.inc(f"sms_failed_{reason}")
            log.warning("event=sms_failed id=%s to=%s reason=%s error=%r modem=%s", eid, recipient,
                        reason, str(exc), self.modem.state)
            return isinstance(exc, PduError)
        await self.store.submit(_update(eid, recipient, "sent", now_ms(), result.parts, None))
        self.metrics.inc("sms_sent")
        self.metrics.inc(f"sms_sent_{recipient}")
        log.info("event=sms_sent id=%s to=%s parts=%d after_ms=%d", eid, recipient, result.parts,
                 now_ms() - at)
        return True

    async def _local_alert(self, eid: str, p: Pending, card: contacts.Household | None) -> None:
        if not self.mcfg.local_alert or (card is not None and not card.local_alert):
            await self.store.submit(_record(eid, SPEAKERS, "", "skipped", now_ms(), 0))
            log.info("event=local_alert_skipped id=%s reason=%s", eid,
                     "policy" if not self.mcfg.local_alert else "household_refuses")
            return
        client = self.village.client
        if client is None:
            return  # the village link is down as well: tried again at the next sweep
        speakers = self._speakers(p.village, card.group if card is not None else "")
        if not speakers:
            await self.store.submit(_record(eid, SPEAKERS, "", "skipped", now_ms(), 0))
            log.warning("event=local_alert_no_speaker id=%s village=%s", eid, p.village)
            return
        now = now_ms()
        fields: dict[str, object] = {
            "id": local_id(eid), "mt": "Alert", "st": "Actual", "pri": 0,
            "exp": now + LOCAL_ALERT_S * 1000, "clip": "siren", "rep": 2, "lang": "zh-CN",
            "text": local_alert_text(card, p.household),
        }
        await self.store.submit(_record(eid, SPEAKERS, ",".join(speakers), "sent", now, 1))
        for dev in speakers:
            key = self.registry.key_for(dev)
            if key is None:
                continue
            topic, payload = okproto.encode_bc(key, dev, self.village.next_counter(), {**fields, "ts": now})
            try:
                client.publish_nowait(topic, payload, qos=1).add_done_callback(_log_failure)
            except MqttError:
                break
        self.metrics.inc("local_alerts")
        log.info("event=local_alert id=%s speakers=%s", eid, ",".join(speakers))

    def _speakers(self, village: str, group: str) -> list[str]:
        devs = [d for d in self.registry.devices.values()
                if d.role == "speaker" and d.enabled and d.village == village]
        near = sorted(d.id for d in devs if group and group in d.groups)
        if near:
            return near
        return sorted(d.id for d in devs if self.mcfg.local_alert_group in d.groups)

    # -- what was sent, to the centre (§11)

    def _report(self) -> None:
        client = self.centre_client()
        if client is None or (self._report_task is not None and not self._report_task.done()):
            return
        self._report_task = asyncio.get_running_loop().create_task(self._report_unreported(client))
        self._report_task.add_done_callback(_log_failure)

    async def _report_unreported(self, client: MqttClient) -> None:
        rows = await self.store.db.execute_fetchall(
            "SELECT event, recipient, number, at, parts FROM fallback_sent"
            " WHERE state='sent' AND reported=0 AND recipient<>? LIMIT 100",
            (SPEAKERS,),
        )
        for r in rows:
            mark = (str(r[0]), str(r[1]))
            if mark in self._reporting:
                continue
            report = contacts.SmsReport(
                self.cfg.gateway_id, mark[0], mark[1], str(r[2]), int(r[3]), int(r[4])
            )
            topic, payload = contacts.signed_sms_report(self.key, report)
            try:
                fut = client.publish_nowait(topic, payload, qos=1)
            except MqttError:
                return
            self._reporting.add(mark)
            fut.add_done_callback(partial(self._reported, mark=mark))

    def _reported(self, fut: asyncio.Future[None], mark: tuple[str, str]) -> None:
        self._reporting.discard(mark)
        if fut.cancelled() or fut.exception() is not None:
            return  # the next sweep sends it again
        self.metrics.inc("sms_reports_out")
        self.store.submit(_mark_reported(*mark)).add_done_callback(_log_failure)


def _record(eid: str, recipient: str, number: str, state: str, at: int, attempts: int) -> _Op:
    async def op(db: aiosqlite.Connection) -> None:
        await db.execute(
            "INSERT INTO fallback_sent(event, recipient, number, state, at, attempts)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(event, recipient) DO UPDATE SET"
            " state=excluded.state, at=excluded.at, attempts=excluded.attempts",
            (eid, recipient, number, state, at, attempts),
        )

    return op


def _update(eid: str, recipient: str, state: str, at: int, parts: int, error: str | None) -> _Op:
    async def op(db: aiosqlite.Connection) -> None:
        await db.execute(
            "UPDATE fallback_sent SET state=?, at=?, parts=?, error=? WHERE event=? AND recipient=?",
            (state, at, parts, error, eid, recipient),
        )

    return op


def _mark_reported(eid: str, recipient: str) -> _Op:
    async def op(db: aiosqlite.Connection) -> None:
        await db.execute(
            "UPDATE fallback_sent SET reported=1 WHERE event=? AND recipient=?", (eid, recipient)
        )

    return op
