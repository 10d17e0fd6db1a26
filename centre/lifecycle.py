"""An alarm's life at the centre, as staff move it: open -> acked -> dispatched -> resolved.

Each step is one transaction holding the state change, its timeline step (`centre.timeline`)
and its audit line (`centre.audit`), so the three commit together or not at all. The rules
(docs/centre.md, "The alarm's life"):

- `acknowledge` takes charge of an open alarm and owes its gateway the signed `acked` ack
  (docs/protocol.md §6.4), which the button shows. Again on an alarm already acknowledged, it
  changes nothing.
- `dispatch` sends a named responder. From `open` it acknowledges first (one transaction, both
  steps on the timeline): whoever sends someone has taken charge, and the button must say so.
  From `dispatched` it sends another responder (the first could not go); both stay on the
  timeline.
- `resolve` closes the alarm with an outcome from `OUTCOMES` and a note. From `open` it
  acknowledges first, as `dispatch` does. `other` needs a note saying what happened.
- A cancel from the device closes only an alarm still `open` (state `cancelled`). Once staff
  took charge someone may be on the way: the alarm keeps its state, gets `cancelled_at` and a
  `cancelled` step, and staff resolve it (perhaps calling the responder back).
- A test press (state `test`), a cancel event and an alarm cancelled while open refuse every
  step; a resolved alarm refuses dispatch and resolve (`Refused`, HTTP 409); nothing changes.
  Acknowledging an alarm already acknowledged returns it as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiosqlite

from centre import audit, timeline
from centre.auth import Principal
from centre.store import (
    AckResult,
    Downlink,
    Event,
    NotFound,
    Store,
    ack_in,
    get_event_in,
)
from protocol.acks import MAX_BY

MakeDownlink = Callable[[Event], tuple[str, bytes]]


@dataclass(frozen=True)
class Outcome:
    id: str
    zh: str
    en: str


# How an alarm ended, as staff record it: a fixed list, so that reports can count them.
OUTCOMES: Final = (
    Outcome("on_site", "已到场处理", "Handled on site"),
    Outcome("false_alarm", "误按", "Pressed by mistake"),
    Outcome("hospital", "送医", "Taken to hospital"),
    Outcome("family_contacted", "已联系家属", "Family contacted"),
    Outcome("unreachable", "无法联系", "Could not be reached"),
    Outcome("other", "其他", "Other (see the note)"),
)
OUTCOME_IDS: Final = frozenset(o.id for o in OUTCOMES)
NEEDS_NOTE: Final = frozenset({"other"})

MAX_RESPONDER = 64
MAX_NOTE = 1000  # dispatch and resolve notes stay at the centre (the ack's note goes to the device)


class Refused(Exception):
    """The step does not apply to the alarm in its current state; nothing was changed."""

    def __init__(self, event: Event, message: str) -> None:
        super().__init__(message)
        self.event = event


class BadOutcome(ValueError):
    """An outcome not in OUTCOMES, or `other` without a note."""


@dataclass(frozen=True)
class StepResult:
    event: Event
    changed: bool
    downlink: Downlink | None  # an `acked` ack owed to the gateway, when this step acknowledged


def ack_name(who: Principal) -> str:
    """Who acknowledged, as the gateway and the button get it (§6.4 caps `by`)."""
    return who.display_name.strip()[:MAX_BY] or who.username[:MAX_BY]


def _name(who: Principal) -> str:
    return who.display_name.strip() or who.username


def _refusal(ev: Event, verb: str) -> str | None:
    """Why `verb` does not apply to `ev`, or None if it may go ahead from its state."""
    if ev.kind == "test":
        return f"{ev.id} is a test press: test presses are kept apart and cannot be {verb}"
    if ev.kind == "cancel":
        return f"{ev.id} is a cancel event; act on the alarm it cancels, {ev.ref}"
    if ev.state == "cancelled":
        return f"{ev.id} was cancelled by its device before anyone took charge; it cannot be {verb}"
    if ev.state == "resolved":
        return f"{ev.id} is already resolved ({ev.outcome}, by {ev.resolved_by}); it cannot be {verb}"
    return None


async def _take_charge(
    db: aiosqlite.Connection,
    ev: Event,
    who: Principal,
    note: str,
    at: int,
    make_downlink: MakeDownlink,
    address: str,
) -> AckResult:
    result = await ack_in(db, ev, ack_name(who), note, at, make_downlink)
    if result.changed:
        await audit.record(db, at, who, "alarm.ack", ev.id, {"note": note}, address)
    return result


async def acknowledge(
    store: Store,
    event_id: str,
    who: Principal,
    note: str,
    at: int,
    make_downlink: MakeDownlink,
    address: str = "",
) -> StepResult:
    """Take charge of an open alarm (unchanged if already acknowledged). Raises NotFound,
    Refused."""
    async with store.transaction() as db:
        ev = await get_event_in(db, event_id)
        if ev.acked_at is None and (why := _refusal(ev, "acknowledged")):
            raise Refused(ev, why)
        result = await _take_charge(db, ev, who, note, at, make_downlink, address)
    return StepResult(result.event, result.changed, result.downlink)


async def dispatch(
    store: Store,
    event_id: str,
    who: Principal,
    responder: str,
    note: str,
    at: int,
    make_downlink: MakeDownlink,
    address: str = "",
) -> StepResult:
    """Send `responder` to an acknowledged (or dispatched: another responder) alarm; an open
    one is acknowledged first. Raises NotFound, Refused."""
    async with store.transaction() as db:
        ev = await get_event_in(db, event_id)
        if why := _refusal(ev, "dispatched"):
            raise Refused(ev, why)
        ack = await _take_charge(db, ev, who, "", at, make_downlink, address)
        await db.execute(
            "UPDATE alarms SET state = 'dispatched', dispatched_to = ?, dispatched_note = ?, "
            "dispatched_at = ?, dispatched_by = ? WHERE id = ?",
            (responder, note, at, _name(who), event_id),
        )
        detail = {"responder": responder, "note": note}
        if ev.state == "dispatched":
            detail["instead_of"] = ev.dispatched_to or ""
        await timeline.add(db, event_id, at, timeline.DISPATCHED, _name(who), detail)
        await audit.record(db, at, who, "alarm.dispatch", event_id, detail, address)
        ev = await get_event_in(db, event_id)
    return StepResult(ev, True, ack.downlink)


def check_outcome(outcome: str, note: str) -> None:
    if outcome not in OUTCOME_IDS:
        raise BadOutcome(
            f"unknown outcome {outcome!r}; one of: {', '.join(o.id for o in OUTCOMES)}"
        )
    if outcome in NEEDS_NOTE and not note:
        raise BadOutcome(f"outcome {outcome!r} needs a note saying what happened")


async def resolve(
    store: Store,
    event_id: str,
    who: Principal,
    outcome: str,
    note: str,
    at: int,
    make_downlink: MakeDownlink,
    address: str = "",
) -> StepResult:
    """Close an acknowledged or dispatched alarm with an outcome; an open one is acknowledged
    first. Raises BadOutcome, NotFound, Refused."""
    check_outcome(outcome, note)
    async with store.transaction() as db:
        ev = await get_event_in(db, event_id)
        if why := _refusal(ev, "resolved"):
            raise Refused(ev, why)
        ack = await _take_charge(db, ev, who, "", at, make_downlink, address)
        await db.execute(
            "UPDATE alarms SET state = 'resolved', resolved_at = ?, resolved_by = ?, "
            "outcome = ?, resolved_note = ? WHERE id = ?",
            (at, _name(who), outcome, note, event_id),
        )
        detail = {"outcome": outcome, "note": note}
        await timeline.add(db, event_id, at, timeline.RESOLVED, _name(who), detail)
        await audit.record(db, at, who, "alarm.resolve", event_id, detail, address)
        ev = await get_event_in(db, event_id)
    return StepResult(ev, True, ack.downlink)


__all__ = [
    "OUTCOMES",
    "BadOutcome",
    "NotFound",
    "Outcome",
    "Refused",
    "StepResult",
    "acknowledge",
    "check_outcome",
    "dispatch",
    "resolve",
]
