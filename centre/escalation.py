"""The escalation chain: an alarm nobody at the centre acknowledges goes to people by SMS.

One supervised task (`Escalation.run`) reads durable state about once a second (and at once
when kicked):

- an open real alarm (kind `alarm`, state `open`; never a test, never a cancelled one) older
  than T1 with no chain gets one: its household's contacts in the policy's order
  (`centre.escalation_policy`), the policy and the SMS facts frozen in table `escalations`;
- a running chain stops as soon as its alarm is no longer `open` (staff acknowledged it, the
  device cancelled it) or a contact confirmed; otherwise its current step is sent, or, once
  the step's T2 has passed without a confirmation, the next step is; after `rounds` rounds
  nobody confirmed and the chain ends `exhausted` (shown to staff).

Sending is at most once per contact and step: the SMS row is committed as `sending` before the
modem is asked and as `sent` (or `failed`) after. A centre stopped between the two finds the
row `sending` on restart, marks it `unknown` and never sends it again (it may have gone out: a
second copy would be worse than a missing one, because the next contact is asked T2 later in
any case and the reply of whoever got it still counts). Timers live in the database
(`step_due`), so a restarted centre resumes where it was.

A failed send (+CMS ERROR, no network, SIM missing, timeout) moves to the next contact at
once. A modem that is gone (unplugged, or none configured) pauses the chain before its next SMS
and raises the modem alert (LiveHub topic `modem`, a timeline row on every running chain).

Replies and delivery reports come from the modem (`consume`): a reply from a number that was
sent an SMS of a running chain is recorded on that alarm; if it is a confirmation
(`escalation_sms.CONFIRM_WORDS`) the chain stops and the contact is recorded as the one who
confirmed, even after its T2 (the chain still runs, so the help is still wanted).

The household's contacts, the modem, the alarm timeline and the live hub are passed in as
the small protocols below, so that the engine runs with fakes in unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiosqlite

from centre import escalation_policy as ep
from centre.escalation_sms import AlarmFacts, compose, is_confirmation, normalise_phone
from centre.ingest import kv
from centre.store import Store, fetch_all, fetch_one
from centre.timeline import SYSTEM

log = logging.getLogger("onekey.centre.escalation")

ACTOR = SYSTEM  # the timeline's actor for what the centre did by itself
ENDED = ("confirmed", "stopped", "exhausted", "no_contacts", "disabled", "too_old")


# -- what the engine needs from the other parts


@dataclass(frozen=True)
class HouseholdInfo:
    id: str
    name: str
    address: str
    village: str
    group: str
    contacts: list[ep.Contact]


class ContactSource(Protocol):
    async def household(
        self, db: aiosqlite.Connection, household_id: str
    ) -> HouseholdInfo | None: ...


class SendFailed(Exception):
    """The modem did not send the SMS. `reason` is a short code (cms_error, no_network,
    sim_missing, timeout, gone, ...); `gone` is true when the modem itself is not there."""

    def __init__(self, reason: str, message: str, *, gone: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.gone = gone


@dataclass(frozen=True)
class ModemStatus:
    # The modem package's states (ok, starting, no_network, sim_missing, gone), or `absent`
    # when the centre has no modem configured.
    state: str
    detail: str = ""

    @property
    def can_send(self) -> bool:
        """False when no SMS can leave at all: the chain waits rather than skip everybody."""
        return self.state not in ("gone", "absent", "starting")

    @property
    def alert(self) -> bool:
        """The modem is not there: staff must be told (a module still starting is not yet)."""
        return self.state in ("gone", "absent")

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "can_send": self.can_send,
                "alert": self.alert}


class SmsSender(Protocol):
    def status(self) -> ModemStatus: ...

    async def send(self, number: str, text: str) -> list[int]:
        """Sends; returns the message references (one per part). Raises SendFailed."""
        ...


class TimelineWriter(Protocol):
    def __call__(
        self,
        db: aiosqlite.Connection,
        alarm_id: str,
        at: int,
        kind: str,
        actor: str,
        detail: dict[str, Any],
    ) -> Awaitable[None]: ...


class Publisher(Protocol):
    def publish(self, topic: str, data: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class IncomingSms:
    number: str
    text: str


@dataclass(frozen=True)
class DeliveryReport:
    ref: int
    delivered: bool
    number: str = ""


@dataclass(frozen=True)
class ModemChanged:
    """The modem's state changed: look now (the alert is raised within the same second)."""


Incoming = IncomingSms | DeliveryReport | ModemChanged


# -- rows


@dataclass(frozen=True)
class Chain:
    alarm: str
    state: str
    policy: ep.Policy
    plan: list[list[ep.Contact]]
    facts: AlarmFacts
    step: int
    step_due: int | None

    @property
    def total_steps(self) -> int:
        return len(self.plan) * self.policy.rounds


CHAIN_COLS = "alarm, state, policy, plan, facts, step, step_due"
MSG_COLS = (
    "id, alarm, step, kind, name, relation, phone, number, body, state, created_at, sent_at, "
    "refs, error, delivery, delivered_at, reports, due_at, timed_out_at, confirmed_at"
)


def chain_row(row: Any) -> Chain:
    pol = json.loads(row[2])
    pol["order"] = tuple(pol["order"])
    return Chain(
        alarm=row[0],
        state=row[1],
        policy=ep.Policy(**pol),
        plan=[[ep.Contact(**c) for c in step] for step in json.loads(row[3])],
        facts=AlarmFacts(**json.loads(row[4])),
        step=row[5],
        step_due=row[6],
    )


def message_json(row: Any) -> dict[str, Any]:
    keys = [k.strip() for k in MSG_COLS.split(",")]
    d = dict(zip(keys, row, strict=True))
    d["refs"] = json.loads(d["refs"])
    d["reports"] = json.loads(d["reports"])
    return d


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class Escalation:
    """Constructing does nothing; `run()` (under the supervisor) does the work."""

    def __init__(
        self,
        store: Store,
        contacts: ContactSource,
        sender: SmsSender,
        timeline: TimelineWriter,
        hub: Publisher,
        defaults: ep.Policy,
        clock: Callable[[], int],
        *,
        period_s: float = 1.0,
        send_timeout_s: float = 120.0,
        max_start_age_s: float = 3600.0,
    ) -> None:
        self.store = store
        self.contacts = contacts
        self.sender = sender
        self.timeline = timeline
        self.hub = hub
        self.defaults = defaults
        self.clock = clock
        self.period_s = period_s
        self.send_timeout_s = send_timeout_s
        self.max_start_age_ms = int(max_start_age_s * 1000)
        self._kick = asyncio.Event()
        self._modem: ModemStatus | None = None

    def kick(self) -> None:
        """Look again now (an ack, a reply, a modem change) instead of at the next period."""
        self._kick.set()

    async def run(self) -> None:
        await self.recover()
        while True:
            self._kick.clear()
            await self.tick()
            # Wake at the period, or as a step's T2 ends if that is sooner: the next SMS goes
            # within milliseconds of T2, not up to a period later.
            wait_s = self.period_s
            async with self.store.transaction(write=False) as db:
                row = await fetch_one(
                    db, "SELECT MIN(step_due) FROM escalations WHERE state = 'running'", ()
                )
            if row is not None and row[0] is not None:
                wait_s = min(wait_s, max(0.0, (int(row[0]) - self.clock()) / 1000))
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # arrives as the kick is set, and the task would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._kick.wait()

    async def consume(self, incoming: AsyncIterator[Incoming]) -> None:
        """Replies, delivery reports and state changes from the modem, for as long as it
        delivers them."""
        async for item in incoming:
            if isinstance(item, IncomingSms):
                await self.on_reply(item.number, item.text)
            elif isinstance(item, DeliveryReport):
                await self.on_report(item.ref, item.delivered, item.number)
            else:
                self.kick()

    # -- one look at the state

    async def recover(self) -> None:
        """SMS left `sending` by a centre that stopped mid-send become `unknown`: not re-sent."""
        now = self.clock()
        changed: list[dict[str, Any]] = []
        async with self.store.transaction() as db:
            rows = await fetch_all(
                db, f"SELECT {MSG_COLS} FROM escalation_messages WHERE state = 'sending'", ()
            )
            for row in rows:
                msg = message_json(row)
                await db.execute(
                    "UPDATE escalation_messages SET state = 'unknown', "
                    "error = 'the centre stopped while sending; not sent again' WHERE id = ?",
                    (msg["id"],),
                )
                msg.update(state="unknown")
                await self.timeline(
                    db, msg["alarm"], now, "sms_unknown", ACTOR, self._msg_detail(msg)
                )
                changed.append(msg)
        for msg in changed:
            log.warning(kv(event="sms_unknown", alarm=msg["alarm"], message=msg["id"]))
            self._publish(msg["alarm"], "sms_unknown", msg)

    async def tick(self) -> None:
        await self._watch_modem()
        await self._start_due()
        async with self.store.transaction(write=False) as db:
            rows = await fetch_all(
                db, "SELECT alarm FROM escalations WHERE state = 'running' ORDER BY created_at", ()
            )
        for (alarm,) in rows:
            await self._advance(str(alarm))

    async def _watch_modem(self) -> None:
        status = self.sender.status()
        before, self._modem = self._modem, status
        if before == status:
            return
        self.hub.publish("modem", status.to_json())
        # Gone (was there, is not) is an error; absent (none configured) a standing warning.
        log_fn = log.error if status.state == "gone" else log.warning if status.alert else log.info
        log_fn(kv(event="modem_state", state=status.state, detail=status.detail))
        # Timeline rows only when the modem goes away or comes back.
        if before is not None and before.alert == status.alert:
            return
        if before is None and not status.alert:
            return
        kind = "modem_gone" if status.alert else "modem_back"
        now = self.clock()
        async with self.store.transaction() as db:
            running = await fetch_all(db, "SELECT alarm FROM escalations WHERE state = 'running'", ())
            for (alarm,) in running:
                await self.timeline(db, alarm, now, kind, ACTOR, status.to_json())
        for (alarm,) in running:
            self._publish(alarm, kind, None)

    async def _start_due(self) -> None:
        now = self.clock()
        async with self.store.transaction(write=False) as db:
            rows = await fetch_all(
                db,
                "SELECT a.id, a.village, a.household, a.received_at FROM alarms a "
                "WHERE a.kind = 'alarm' AND a.state = 'open' AND NOT EXISTS "
                "(SELECT 1 FROM escalations e WHERE e.alarm = a.id) "
                # A second press of the same household while its chain runs: the running
                # chain already asks its people; this alarm's chain waits until that one ends.
                "AND NOT EXISTS (SELECT 1 FROM escalations e2 JOIN alarms a2 ON a2.id = e2.alarm"
                " WHERE e2.state = 'running' AND a2.household = a.household) "
                "ORDER BY a.received_at LIMIT 200",
                (),
            )
            overrides = await ep.load_overrides(db) if rows else {}
        for alarm, village, household, received_at in rows:
            policy = ep.effective(self.defaults, overrides, village, household)
            if now < received_at + int(policy.t1_s * 1000):
                continue
            await self._start(alarm, village, household, received_at, policy, now)

    async def _start(
        self, alarm: str, village: str, household: str, received_at: int, policy: ep.Policy,
        now: int,
    ) -> None:
        async with self.store.transaction() as db:
            row = await fetch_one(
                db,
                "SELECT state, (SELECT 1 FROM escalations WHERE alarm = ?), "
                "(SELECT 1 FROM escalations e JOIN alarms a ON a.id = e.alarm "
                " WHERE e.state = 'running' AND a.household = ?) FROM alarms WHERE id = ?",
                (alarm, household, alarm),
            )
            if row is None or row[0] != "open" or row[1] is not None or row[2] is not None:
                return  # acked or started meanwhile, or its household's chain runs
            info = await self.contacts.household(db, household)
            contacts = info.contacts if info else []
            plan = ep.plan(policy.order, contacts)
            facts = AlarmFacts(
                person=(info.name if info and info.name else household),
                address=info.address if info else "",
                village=(info.village if info and info.village else village),
                group=info.group if info else "",
                received_at=received_at,
            )
            state, reason = "running", None
            if not policy.enabled:
                state, reason = "disabled", "the escalation policy is disabled for this household"
            elif now - received_at > self.max_start_age_ms:
                state, reason = "too_old", "the alarm was already this old when first seen"
            elif not plan:
                state, reason = "no_contacts", "the household card has no contact with a phone"
            await db.execute(
                "INSERT INTO escalations (alarm, state, policy, plan, facts, created_at, step, "
                "ended_at, end_reason) VALUES (?,?,?,?,?,?,0,?,?)",
                (
                    alarm, state, _dumps(policy.to_json()),
                    _dumps([[c.__dict__ for c in step] for step in plan]),
                    _dumps(facts.__dict__), now, None if state == "running" else now, reason,
                ),
            )
            detail: dict[str, Any] = {
                "policy": policy.to_json(),
                "steps": [[{"kind": c.kind, "name": c.name} for c in s] for s in plan],
            }
            kind = "escalation_started"
            if state != "running":
                kind = "escalation_not_started"
                detail.update(state=state, reason=reason)
            await self.timeline(db, alarm, now, kind, ACTOR, detail)
            modem = self.sender.status()
            if state == "running" and modem.alert:
                await self.timeline(db, alarm, now, "modem_gone", ACTOR, modem.to_json())
        log.info(kv(event=kind, alarm=alarm, state=state, steps=len(plan)))
        self._publish(alarm, kind, None)

    async def _load(self, alarm: str) -> tuple[Chain, str] | None:
        async with self.store.transaction(write=False) as db:
            row = await fetch_one(
                db,
                f"SELECT {CHAIN_COLS}, (SELECT state FROM alarms WHERE id = alarm) "
                "FROM escalations WHERE alarm = ?",
                (alarm,),
            )
        return None if row is None else (chain_row(row[:7]), str(row[7]))

    async def _advance(self, alarm: str) -> None:
        while True:
            loaded = await self._load(alarm)
            if loaded is None or loaded[0].state != "running":
                return
            chain, alarm_state = loaded
            if alarm_state != "open":
                await self._end(chain, "stopped", alarm_state, "escalation_stopped")
                return
            if chain.step >= chain.total_steps:
                await self._end(chain, "exhausted", "nobody confirmed", "escalation_exhausted")
                return
            if chain.step_due is None:
                if not self.sender.status().can_send:
                    return  # paused until the modem is back; the alert is raised
                result = await self._send_step(chain)
                if result == "paused":
                    return  # the modem went away mid-step: the rest waits for it
                if result == "stopped":
                    continue  # stopped meanwhile: the next look ends it
                out = result == "out"
                now = self.clock()
                due = now + int(chain.policy.t2_s * 1000) if out else now
                async with self.store.transaction() as db:
                    await db.execute(
                        "UPDATE escalations SET step_due = ? WHERE alarm = ? AND state = 'running'"
                        " AND step = ?",
                        (due, alarm, chain.step),
                    )
                    # Each SMS keeps when its step's T2 ends (the anchor of bench/escalation.py).
                    await db.execute(
                        "UPDATE escalation_messages SET due_at = ? WHERE alarm = ? AND step = ?",
                        (due, alarm, chain.step),
                    )
                if out:
                    return
                continue  # every send of the step failed: the next step at once
            if self.clock() < chain.step_due:
                return
            await self._time_out(chain)

    async def _send_step(self, chain: Chain) -> Literal["out", "none", "paused", "stopped"]:
        """Sends the step's SMS not yet sent: "out" if any went out (or may have), "none" if
        every one failed, "paused" if the modem is gone, "stopped" if the chain ended."""
        contacts = chain.plan[chain.step % len(chain.plan)]
        out = False
        for contact in contacts:
            if not self.sender.status().can_send:
                return "paused"
            number = normalise_phone(contact.phone)
            text = compose(chain.facts, contact.name)
            now = self.clock()
            async with self.store.transaction() as db:
                row = await fetch_one(
                    db,
                    "SELECT e.state, a.state FROM escalations e JOIN alarms a ON a.id = e.alarm "
                    "WHERE e.alarm = ?",
                    (chain.alarm,),
                )
                if row is None or row[0] != "running" or row[1] != "open":
                    return "stopped"
                done = await fetch_one(
                    db,
                    "SELECT state FROM escalation_messages WHERE alarm = ? AND step = ? AND number = ?",
                    (chain.alarm, chain.step, number),
                )
                if done is not None:  # sent (or tried) before a restart: never again
                    out = out or done[0] in ("sent", "unknown")
                    continue
                cur = await db.execute(
                    "INSERT INTO escalation_messages (alarm, step, kind, name, relation, phone, "
                    "number, body, state, created_at) VALUES (?,?,?,?,?,?,?,?,'sending',?)",
                    (chain.alarm, chain.step, contact.kind, contact.name, contact.relation,
                     contact.phone, number, text, now),
                )
                msg_id = cur.lastrowid
            assert msg_id is not None
            out = await self._send_one(chain, msg_id, contact.phone, text) or out
        return "out" if out else "none"

    async def _send_one(self, chain: Chain, msg_id: int, phone: str, text: str) -> bool:
        state, refs, error, gone = "sent", [], None, False
        try:
            async with asyncio.timeout(self.send_timeout_s):
                refs = await self.sender.send(phone, text)
        except SendFailed as exc:
            state, error, gone = "failed", f"{exc.reason}: {exc}", exc.gone
        except TimeoutError:
            # The modem may have sent it: counted as out, never re-sent.
            state, error = "unknown", f"no answer from the modem within {self.send_timeout_s:g} s"
        now = self.clock()
        kind = {"sent": "sms_sent", "failed": "sms_failed", "unknown": "sms_unknown"}[state]
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE escalation_messages SET state = ?, sent_at = ?, refs = ?, error = ? "
                "WHERE id = ?",
                (state, now if state == "sent" else None, _dumps(refs), error, msg_id),
            )
            msg = message_json(await fetch_one(
                db, f"SELECT {MSG_COLS} FROM escalation_messages WHERE id = ?", (msg_id,)
            ))
            detail = self._msg_detail(msg, chain)
            await self.timeline(db, chain.alarm, now, kind, ACTOR, detail)
        log_fn = log.info if state == "sent" else log.warning
        log_fn(kv(event=kind, alarm=chain.alarm, message=msg_id, kind=msg["kind"],
                  step=chain.step, error=error or ""))
        self._publish(chain.alarm, kind, msg)
        if gone:
            await self._watch_modem()
        return state != "failed"

    async def _time_out(self, chain: Chain) -> None:
        now = self.clock()
        async with self.store.transaction() as db:
            rows = await fetch_all(
                db,
                f"SELECT {MSG_COLS} FROM escalation_messages WHERE alarm = ? AND step = ? "
                "AND state IN ('sent', 'unknown') AND confirmed_at IS NULL",
                (chain.alarm, chain.step),
            )
            cur = await db.execute(
                "UPDATE escalations SET step = step + 1, step_due = NULL "
                "WHERE alarm = ? AND state = 'running' AND step = ?",
                (chain.alarm, chain.step),
            )
            if cur.rowcount != 1:
                return
            msgs = [message_json(r) for r in rows]
            if msgs:
                await db.execute(
                    f"UPDATE escalation_messages SET timed_out_at = ? "
                    f"WHERE id IN ({','.join('?' * len(msgs))})",
                    (now, *[m["id"] for m in msgs]),
                )
                await self.timeline(db, chain.alarm, now, "sms_timeout", ACTOR, {
                    "step": chain.step + 1,
                    "round": chain.step // len(chain.plan) + 1,
                    "names": [m["name"] for m in msgs],
                    "t2_s": chain.policy.t2_s,
                })
        if msgs:
            log.info(kv(event="sms_timeout", alarm=chain.alarm, step=chain.step))
            self._publish(chain.alarm, "sms_timeout", None)

    async def _end(self, chain: Chain, state: str, reason: str, kind: str) -> None:
        now = self.clock()
        async with self.store.transaction() as db:
            cur = await db.execute(
                "UPDATE escalations SET state = ?, ended_at = ?, end_reason = ?, step_due = NULL "
                "WHERE alarm = ? AND state = 'running'",
                (state, now, reason, chain.alarm),
            )
            if cur.rowcount != 1:
                return
            await self.timeline(db, chain.alarm, now, kind, ACTOR, {
                "reason": reason, "rounds": chain.policy.rounds,
                "steps_done": min(chain.step, chain.total_steps),
            })
        log_fn = log.warning if state == "exhausted" else log.info
        log_fn(kv(event=kind, alarm=chain.alarm, reason=reason))
        self._publish(chain.alarm, kind, None)

    # -- from the modem

    async def on_reply(self, number: str, text: str) -> dict[str, Any]:
        """Records a reply; confirms the chain it answers if it is a confirmation. Returns
        what was recorded (for logs and tests)."""
        now = self.clock()
        norm = normalise_phone(number)
        confirms = False
        async with self.store.transaction() as db:
            # The latest SMS to this number in a running chain; else the latest at all.
            row = await fetch_one(
                db,
                f"SELECT {', '.join('m.' + c.strip() for c in MSG_COLS.split(','))} "
                "FROM escalation_messages m JOIN escalations e ON e.alarm = m.alarm "
                "WHERE m.number = ? AND e.state = 'running' AND m.state IN ('sent', 'unknown') "
                "ORDER BY m.id DESC LIMIT 1",
                (norm,),
            )
            running = row is not None
            if row is None:
                row = await fetch_one(
                    db,
                    f"SELECT {MSG_COLS} FROM escalation_messages WHERE number = ? "
                    "ORDER BY id DESC LIMIT 1",
                    (norm,),
                )
            msg = None if row is None else message_json(row)
            confirms = running and is_confirmation(text)
            await db.execute(
                "INSERT INTO escalation_replies (at, number, body, message, alarm, confirms) "
                "VALUES (?,?,?,?,?,?)",
                (now, norm, text[:1000], msg and msg["id"], msg and msg["alarm"], int(confirms)),
            )
            if msg is not None:
                detail = {**self._msg_detail(msg), "text": text[:200], "confirms": confirms}
                if confirms:
                    await db.execute(
                        "UPDATE escalation_messages SET confirmed_at = ? WHERE id = ?",
                        (now, msg["id"]),
                    )
                    await db.execute(
                        "UPDATE escalations SET state = 'confirmed', ended_at = ?, "
                        "end_reason = 'confirmed', confirmed_by = ?, step_due = NULL "
                        "WHERE alarm = ?",
                        (now, msg["id"], msg["alarm"]),
                    )
                    msg["confirmed_at"] = now
                elif not running:
                    detail["note"] = "the chain had already ended"
                kind = "sms_confirmed" if confirms else "sms_reply"
                await self.timeline(db, msg["alarm"], now, kind, msg["name"] or norm, detail)
        if msg is None:
            log.info(kv(event="sms_from_unknown_number", number=norm))
            return {"alarm": None, "confirms": False}
        log.info(kv(event="sms_confirmed" if confirms else "sms_reply", alarm=msg["alarm"],
                    message=msg["id"], confirms=confirms))
        self._publish(msg["alarm"], "sms_confirmed" if confirms else "sms_reply", msg)
        return {"alarm": msg["alarm"], "message": msg["id"], "confirms": confirms}

    async def on_report(self, ref: int, delivered: bool, number: str = "") -> None:
        """A delivery report for message reference `ref` (the latest SMS that carried it)."""
        now = self.clock()
        args: tuple[Any, ...] = (ref,)
        where = ""
        if number:
            where, args = " AND number = ?", (ref, normalise_phone(number))
        async with self.store.transaction() as db:
            row = await fetch_one(
                db,
                f"SELECT {MSG_COLS} FROM escalation_messages WHERE state IN ('sent', 'unknown') "
                "AND EXISTS (SELECT 1 FROM json_each(refs) WHERE value = ?)"
                f"{where} ORDER BY id DESC LIMIT 1",
                args,
            )
            msg, kind = None, ""
            if row is not None:
                msg = message_json(row)
                reports = {**msg["reports"], str(ref): delivered}
                delivery = msg["delivery"]
                if not delivered:
                    delivery = "failed"
                elif delivery is None and all(reports.get(str(r)) for r in msg["refs"]):
                    delivery = "delivered"
                changed = delivery != msg["delivery"]
                await db.execute(
                    "UPDATE escalation_messages SET reports = ?, delivery = ?, delivered_at = ? "
                    "WHERE id = ?",
                    (_dumps(reports), delivery, now if changed else msg["delivered_at"], msg["id"]),
                )
                msg.update(reports=reports, delivery=delivery)
                if changed:
                    kind = "sms_delivered" if delivery == "delivered" else "sms_undelivered"
                    await self.timeline(db, msg["alarm"], now, kind, ACTOR, self._msg_detail(msg))
        if msg is not None and kind:
            self._publish(msg["alarm"], kind, msg)

    # -- helpers

    def _msg_detail(self, msg: dict[str, Any], chain: Chain | None = None) -> dict[str, Any]:
        d = {k: msg[k] for k in ("kind", "name", "relation", "phone", "state")}
        d["message"] = msg["id"]
        d["step"] = msg["step"] + 1
        if chain is not None:
            d["round"] = msg["step"] // len(chain.plan) + 1
        if msg.get("error"):
            d["error"] = msg["error"]
        if msg.get("refs"):
            d["refs"] = msg["refs"]
        return d

    def _publish(self, alarm: str, kind: str, msg: dict[str, Any] | None) -> None:
        self.hub.publish("escalation", {"alarm": alarm, "event": kind, "message": msg})

