"""Broadcasts in the centre's SQLite store (tables of schema version 2, see centre/store.py).

`broadcasts` holds one row per broadcast, `broadcast_gateways` one per gateway copy (its signed
frame, whether it has been sent), `broadcast_reports` the latest state per speaker. A copy that
is due is put into the store's `downlinks` outbox in the same transaction, so the ingest task
publishes broadcasts exactly as it publishes staff acks: again after every reconnect and
restart, when the gateway is heard again and periodically, until the gateway confirms it
(§6.6, `confirm_copies`). The broker's PUBACK (`downlink_sent`) marks the copy `sent`; the
copy stays in the outbox until confirmed, or until its broadcast expires (a gateway refuses an
expired broadcast, so nothing is left to deliver).

Broadcast states: `awaiting_approval` (a second broadcaster releases it) and `recorded` (never
sent: a Test, or an Exercise where no village has drills), both stored `scheduled` with `hold`
set; `scheduled` (held until its start) → `sending` (some copy not yet at the
broker) → `sent`; or `cancelled` (staff cancelled it, or a Cancel referenced it), `updated` (an
Update replaced it), `expired` (its time ran out before any copy could be sent).
Copy states: `scheduled`, `pending`, `sent`, `expired` (not sent before it expired), `withheld`
(cancelled before it was due).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from centre import audit
from centre.auth import Principal
from centre.bcreports import ReportBatch, supersedes
from centre.broadcast import (
    Area,
    Broadcast,
    CapOrigin,
    Reference,
    areas_from_json,
    areas_json,
)
from centre.store import MAX_LIMIT, Store, fetch_all, fetch_one

DOWNLINK_STATE = "bc"  # `downlinks.state` of a broadcast copy (acks use received/acked)
STATES = (
    "awaiting_approval", "recorded", "scheduled", "sending", "sent", "cancelled", "updated",
    "expired",
)
# A broadcast held back is stored `scheduled` with `hold` set (its copies are never released
# while it is): `awaiting_approval` (a second broadcaster releases it), or `recorded` (never
# sent: status Test, or an Exercise where no village has drills enabled).
HOLDS = ("awaiting_approval", "recorded")
_STATE_SQL = "(CASE WHEN hold IS NOT NULL AND state = 'scheduled' THEN hold ELSE state END)"
COPY_STATES = ("scheduled", "pending", "sent", "expired", "withheld")
LIVE = ("scheduled", "sending", "sent")


class BroadcastNotFound(LookupError):
    """No broadcast has that id (or, for reports, none was sent to that gateway)."""


class BroadcastExists(Exception):
    """A broadcast with that id is already stored; ids are never reused."""


class CannotCancel(Exception):
    """The broadcast is a Cancel itself, was replaced, or has expired."""


class CannotApprove(Exception):
    """The broadcast is not awaiting approval, or has expired while it waited."""


class SameBroadcaster(Exception):
    """The broadcaster who created a broadcast cannot be its second approver."""


@dataclass(frozen=True)
class StoredBroadcast:
    bc: Broadcast
    created_by: str
    created_at: int
    source: str  # "api" or "cap"
    state: str
    released_at: int | None
    cancelled_at: int | None
    cancelled_by: str | None
    cancel_note: str | None
    replaced_by: str | None  # the Cancel or Update that stopped it
    hold_reason: str | None = None
    created_by_id: int | None = None
    approved_by: str | None = None
    approved_at: int | None = None


@dataclass(frozen=True)
class Copy:
    """A signed copy for one gateway, to be stored."""

    gw: str
    area: tuple[Area, ...]
    topic: str
    payload: bytes


@dataclass(frozen=True)
class GatewayCopy:
    gw: str
    area: tuple[Area, ...]
    state: str
    sent_at: int | None
    reports: int
    last_report: int | None


@dataclass(frozen=True)
class SpeakerState:
    device: str
    gw: str
    state: str
    at: int
    reported_at: int


@dataclass(frozen=True)
class Summary:
    gateways: dict[str, int]  # copy state -> count
    speakers: dict[str, int]  # speaker state -> count


_COLS = (
    "id, sender, sent, status, msg_type, refs, urgency, severity, certainty, start, expires, "
    "area, language, body_text, clip, repeat_n, category, event, created_by, created_at, "
    f"source, {_STATE_SQL}, released_at, cancelled_at, cancelled_by, cancel_note, replaced_by, "
    "hold_reason, created_by_id, approved_by, approved_at, cap_origin"
)
_INSERT_COLS = (
    "id, sender, sent, status, msg_type, refs, urgency, severity, certainty, start, expires, "
    "area, language, body_text, clip, repeat_n, category, event, created_by, created_at, "
    "source, state, released_at, hold, hold_reason, created_by_id, cap_identifier, cap_sender, "
    "cap_origin"
)
_COPY_COLS = "gw, area, state, sent_at, reports, last_report"


def _stored(row: Any) -> StoredBroadcast:
    refs = tuple(Reference(r["id"], r["sender"], r["sent"]) for r in json.loads(row[5]))
    bc = Broadcast(
        id=row[0], sender=row[1], sent=row[2], status=row[3], msg_type=row[4], references=refs,
        urgency=row[6], severity=row[7], certainty=row[8], start=row[9], expires=row[10],
        area=areas_from_json(row[11]), language=row[12], text=row[13], clip=row[14],
        repeat=row[15], category=row[16], event=row[17],
        origin=None if row[31] is None else CapOrigin.from_json(json.loads(row[31])),
    )
    return StoredBroadcast(bc, *row[18:31])


@dataclass(frozen=True)
class Settings:
    """What an admin sets for broadcasts (GET/PUT /api/settings/broadcasts)."""

    # "none", "extreme" (severity Extreme to a whole village) or "all": which broadcasts wait
    # for a second broadcaster's approval before release.
    approval: str = "none"
    drill_villages: tuple[str, ...] = ()  # where an Exercise plays (announced as a drill)

    def needs_approval(self, bc: Broadcast) -> bool:
        if bc.msg_type == "Cancel" or bc.status == "Test":
            return False  # stopping sound never waits; a Test never plays
        if self.approval == "all":
            return True
        return self.approval == "extreme" and bc.needs_extreme_confirmation()

    def as_json(self) -> dict[str, Any]:
        return {"approval": self.approval, "drill_villages": list(self.drill_villages)}


@dataclass(frozen=True)
class VillageCoverage:
    village: str  # several joined with "+" when one gateway copy serves them together
    gateways: tuple[str, ...]
    targeted: int  # speakers its gateways reported on (each reports every speaker it queues)
    played: int
    states: dict[str, int]


def _copy(row: Any) -> GatewayCopy:
    return GatewayCopy(row[0], areas_from_json(row[1]), row[2], row[3], row[4], row[5])


class BroadcastStore:
    """Broadcast methods over an open `Store` (same connection, lock and transactions)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writing

    async def create(
        self,
        bc: Broadcast,
        copies: Sequence[Copy],
        *,
        by: str,
        now: int,
        source: str = "api",
        note: str = "",
        hold: str | None = None,
        hold_reason: str | None = None,
        actor: Principal | str | None = None,
        address: str = "",
        detail: dict[str, Any] | None = None,
    ) -> StoredBroadcast:
        """Store a new broadcast and its copies; due copies go into the outbox at once.
        An Update or Cancel also stops the broadcasts it references (`by` and `note` are
        recorded on them). A broadcast on `hold` (HOLDS) keeps its copies back and stops
        nothing yet. With `actor`, the audit line `broadcast.create` commits with it.
        Raises BroadcastExists."""
        async with self.store.transaction() as db:
            await self._insert(
                db, bc, copies, by=by, now=now, source=source, note=note, hold=hold,
                hold_reason=hold_reason, created_by_id=_actor_id(actor),
            )
            stored = await self._get(db, bc.id)
            if actor is not None:
                await audit.record(db, now, actor, "broadcast.create", bc.id, {
                    "msgType": bc.msg_type, "status": bc.status, "severity": bc.severity,
                    "villages": [a.village for a in bc.area], "state": stored.state,
                    "source": source, **(detail or {}),
                }, address)
            return stored

    async def approve(
        self, bc_id: str, *, who: Principal, now: int, address: str = ""
    ) -> StoredBroadcast:
        """A second broadcaster releases a broadcast `awaiting_approval` (its copies go now,
        or at its start); an Update or Cancel stops what it references now. Raises
        BroadcastNotFound, CannotApprove, SameBroadcaster."""
        async with self.store.transaction() as db:
            orig = await self._get(db, bc_id)
            if orig.state != "awaiting_approval":
                raise CannotApprove(f"{bc_id} is {orig.state}, not awaiting approval")
            if orig.created_by_id is not None and orig.created_by_id == who.staff_id:
                raise SameBroadcaster(
                    f"{bc_id} was created by {who.username}: a different broadcaster must "
                    "approve it (需要另一位广播员批准)"
                )
            if now >= orig.bc.expires:
                raise CannotApprove(f"{bc_id} expired while it waited for approval; send it again")
            await db.execute(
                "UPDATE broadcasts SET hold = NULL, hold_reason = NULL, approved_by = ?, "
                "approved_at = ? WHERE id = ?",
                (who.username, now, bc_id),
            )
            if orig.bc.start is None or orig.bc.start <= now:
                await self._release(db, bc_id, now)
            await self._stop_references(db, orig.bc, by=who.username, note="", now=now)
            await audit.record(db, now, who, "broadcast.approve", bc_id, {
                "created_by": orig.created_by,
            }, address)
            return await self._get(db, bc_id)

    async def settings(self) -> Settings:
        async with self.store.transaction(write=False) as db:
            return await _settings(db)

    async def put_settings(
        self, settings: Settings, *, actor: Principal | str, now: int, address: str = ""
    ) -> Settings:
        async with self.store.transaction() as db:
            old = await _settings(db)
            for key, value in settings.as_json().items():
                await db.execute(
                    "INSERT INTO broadcast_settings (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, json.dumps(value, ensure_ascii=False)),
                )
            await audit.record(db, now, actor, "settings.put", "broadcasts", {
                "old": old.as_json(), "new": settings.as_json(),
            }, address)
            return await _settings(db)

    async def cancel(
        self,
        bc_id: str,
        *,
        by: str,
        note: str,
        now: int,
        make_cancel: Callable[[StoredBroadcast, list[GatewayCopy]], tuple[Broadcast, list[Copy]]],
        actor: Principal | str | None = None,
        address: str = "",
    ) -> tuple[StoredBroadcast, StoredBroadcast | None]:
        """Staff cancel a broadcast: (the original, the Cancel sent for it or None).

        Held (scheduled) copies are withheld and nothing needs to be sent; otherwise
        `make_cancel(original, copies already due)` builds the Cancel for those gateways.
        Cancelling a cancelled broadcast changes nothing. Raises BroadcastNotFound,
        CannotCancel."""
        async with self.store.transaction() as db:
            orig = await self._get(db, bc_id)
            if orig.state == "cancelled":
                return orig, None
            if orig.bc.msg_type == "Cancel":
                raise CannotCancel(f"{bc_id} is a Cancel itself")
            if orig.state == "updated":
                raise CannotCancel(f"{bc_id} was replaced by {orig.replaced_by}; cancel that one")
            if orig.state == "expired" or now >= orig.bc.expires:
                raise CannotCancel(f"{bc_id} has expired: no speaker plays it any more")
            due = [c for c in await self._copies(db, bc_id) if c.state in ("pending", "sent")]
            cancel_id = None
            if not due:  # nothing went out: hold it back for good
                await self._stop(db, bc_id, "cancelled", by=by, note=note, now=now, by_bc=None)
            else:
                cancel, copies = make_cancel(orig, due)
                await self._insert(
                    db, cancel, copies, by=by, now=now, source="api", note=note,
                    created_by_id=_actor_id(actor),
                )
                cancel_id = cancel.id
            if actor is not None:
                await audit.record(db, now, actor, "broadcast.cancel", bc_id, {
                    "was": orig.state, "cancel": cancel_id, "note": note,
                }, address)
            return (
                await self._get(db, bc_id),
                None if cancel_id is None else await self._get(db, cancel_id),
            )

    async def _insert(
        self,
        db: aiosqlite.Connection,
        bc: Broadcast,
        copies: Sequence[Copy],
        *,
        by: str,
        now: int,
        source: str,
        note: str,
        hold: str | None = None,
        hold_reason: str | None = None,
        created_by_id: int | None = None,
    ) -> None:
        if await fetch_one(db, "SELECT 1 FROM broadcasts WHERE id = ?", (bc.id,)) is not None:
            raise BroadcastExists(f"broadcast {bc.id} already exists; ids are never reused")
        origin = bc.origin
        if origin is not None:
            row = await fetch_one(
                db, "SELECT id FROM broadcasts WHERE cap_sender = ? AND cap_identifier = ?",
                (origin.sender, origin.identifier),
            )
            if row is not None:
                raise BroadcastExists(
                    f"alert {origin.identifier} from {origin.sender} was imported already, as "
                    f"broadcast {row[0]}"
                )
        assert hold is None or hold in HOLDS
        held = hold is not None or (bc.start is not None and bc.start > now)
        refs = json.dumps([r.as_json() for r in bc.references], ensure_ascii=False)
        await db.execute(
            f"INSERT INTO broadcasts ({_INSERT_COLS}) VALUES ({', '.join('?' * 29)})",
            (
                bc.id, bc.sender, bc.sent, bc.status, bc.msg_type, refs, bc.urgency,
                bc.severity, bc.certainty, bc.start, bc.expires, areas_json(bc.area),
                bc.language, bc.text, bc.clip, bc.repeat, bc.category, bc.event, by, now,
                source, "scheduled" if held else "sending", None if held else now,
                hold, hold_reason, created_by_id,
                None if origin is None else origin.identifier,
                None if origin is None else origin.sender,
                None if origin is None else json.dumps(origin.as_json(), ensure_ascii=False),
            ),
        )
        for c in copies:
            await db.execute(
                "INSERT INTO broadcast_gateways (bc, gw, area, state, topic, payload) "
                "VALUES (?, ?, ?, 'scheduled', ?, ?)",
                (bc.id, c.gw, areas_json(c.area), c.topic, c.payload),
            )
        if not held:
            await self._release(db, bc.id, now)
        if hold is None:
            await self._stop_references(db, bc, by=by, note=note, now=now)

    async def _stop_references(
        self, db: aiosqlite.Connection, bc: Broadcast, *, by: str, note: str, now: int
    ) -> None:
        if bc.msg_type in ("Cancel", "Update"):
            state = "cancelled" if bc.msg_type == "Cancel" else "updated"
            for ref in bc.references:
                await self._stop(db, ref.id, state, by=by, note=note, now=now, by_bc=bc.id)

    async def _release(self, db: aiosqlite.Connection, bc_id: str, now: int) -> None:
        """Put every held copy of `bc_id` into the outbox."""
        rows = await fetch_all(
            db,
            "SELECT gw, topic, payload FROM broadcast_gateways "
            "WHERE bc = ? AND state = 'scheduled' ORDER BY gw",
            (bc_id,),
        )
        for gw, topic, payload in rows:
            cur = await db.execute(
                "INSERT INTO downlinks (gw, event_id, state, topic, payload, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (gw, bc_id, DOWNLINK_STATE, topic, payload, now),
            )
            await db.execute(
                "UPDATE broadcast_gateways SET state = 'pending', downlink_id = ? "
                "WHERE bc = ? AND gw = ?",
                (cur.lastrowid, bc_id, gw),
            )
        await db.execute(
            "UPDATE broadcasts SET state = 'sending', released_at = ? "
            "WHERE id = ? AND state = 'scheduled'",
            (now, bc_id),
        )

    async def _stop(
        self,
        db: aiosqlite.Connection,
        bc_id: str,
        state: str,
        *,
        by: str,
        note: str,
        now: int,
        by_bc: str | None,
    ) -> None:
        """Mark a live broadcast cancelled or updated; its held copies are never sent.
        Copies already in the outbox still go, ahead of the Cancel that follows them."""
        cur = await db.execute(
            "UPDATE broadcasts SET state = ?, cancelled_at = ?, cancelled_by = ?, "
            "cancel_note = ?, replaced_by = ? WHERE id = ? AND state IN (?, ?, ?)",
            (state, now, by, note, by_bc, bc_id, *LIVE),
        )
        if cur.rowcount:
            await db.execute(
                "UPDATE broadcast_gateways SET state = 'withheld' "
                "WHERE bc = ? AND state = 'scheduled'",
                (bc_id,),
            )

    async def release_due(self, now: int) -> list[str]:
        """Send the held broadcasts whose start has come; one whose time ran out while the
        centre was down becomes `expired` instead. Returns the ids released."""
        released = []
        async with self.store.transaction() as db:
            rows = await fetch_all(
                db,
                "SELECT id, expires FROM broadcasts WHERE state = 'scheduled' AND start <= ? "
                "AND hold IS NULL ORDER BY start, id",
                (now,),
            )
            for bc_id, expires in rows:
                if expires <= now:
                    await db.execute(
                        "UPDATE broadcasts SET state = 'expired' WHERE id = ?", (bc_id,)
                    )
                    await db.execute(
                        "UPDATE broadcast_gateways SET state = 'expired' "
                        "WHERE bc = ? AND state = 'scheduled'",
                        (bc_id,),
                    )
                else:
                    await self._release(db, bc_id, now)
                    released.append(bc_id)
        return released

    async def expire_unsent(self, now: int) -> int:
        """Take out of the outbox the copies of expired broadcasts (a gateway refuses an expired
        broadcast anyway): those the broker never took become `expired`, and those it took but
        their gateway never confirmed are no longer sent. Returns how many became `expired`."""
        async with self.store.transaction() as db:
            rows = await fetch_all(
                db,
                "SELECT g.bc, g.gw, g.downlink_id, g.state FROM broadcast_gateways g "
                "JOIN broadcasts b ON b.id = g.bc "
                "WHERE g.state IN ('pending', 'sent') AND b.expires <= ? AND g.downlink_id IN "
                "(SELECT id FROM downlinks WHERE state = ?)",
                (now, DOWNLINK_STATE),
            )
            for _bc, _gw, dl_id, _state in rows:
                await db.execute("DELETE FROM downlinks WHERE id = ?", (dl_id,))
            unsent = [(bc_id, gw) for bc_id, gw, _dl, state in rows if state == "pending"]
            for bc_id, gw in unsent:
                await db.execute(
                    "UPDATE broadcast_gateways SET state = 'expired' WHERE bc = ? AND gw = ?",
                    (bc_id, gw),
                )
            for bc_id in {bc_id for bc_id, _gw in unsent}:
                await self._settle(db, bc_id)
        return len(unsent)

    async def downlink_sent(self, downlink_id: int, now: int) -> bool:
        """The broker took a downlink: if it is a broadcast copy still `pending`, it is now
        `sent` (and the broadcast, once every copy is). The downlink stays in the outbox until
        its gateway confirms it (§6.6). True if a copy changed."""
        async with self.store.transaction() as db:
            return await self._mark_sent(db, "downlink_id = ?", (downlink_id,), now)

    async def _mark_sent(
        self, db: aiosqlite.Connection, where: str, args: tuple[Any, ...], now: int
    ) -> bool:
        row = await fetch_one(
            db, f"SELECT bc, gw FROM broadcast_gateways WHERE {where} AND state = 'pending'", args
        )
        if row is None:
            return False
        await db.execute(
            "UPDATE broadcast_gateways SET state = 'sent', sent_at = ? WHERE bc = ? AND gw = ?",
            (now, row[0], row[1]),
        )
        await self._settle(db, row[0])
        return True

    async def confirm_copies(
        self, db: aiosqlite.Connection, gw: str, bc_ids: Sequence[str], now: int
    ) -> int:
        """Gateway `gw` confirmed these broadcast copies (§6.6), in the caller's transaction:
        they leave the outbox, and a copy whose PUBACK was never recorded is `sent` now.
        Returns how many were still held (a repeat confirms nothing)."""
        held = 0
        for bc_id in bc_ids:
            cur = await db.execute(
                "DELETE FROM downlinks WHERE gw = ? AND event_id = ? AND state = ?",
                (gw, bc_id, DOWNLINK_STATE),
            )
            held += max(cur.rowcount, 0)
            await self._mark_sent(db, "bc = ? AND gw = ?", (bc_id, gw), now)
        return held

    async def _settle(self, db: aiosqlite.Connection, bc_id: str) -> None:
        """A sending broadcast with no copy left pending is sent, or expired if none went."""
        rows = await fetch_all(
            db, "SELECT state FROM broadcast_gateways WHERE bc = ?", (bc_id,)
        )
        states = {r[0] for r in rows}
        if "pending" in states or "scheduled" in states:
            return
        await db.execute(
            "UPDATE broadcasts SET state = ? WHERE id = ? AND state = 'sending'",
            ("sent" if "sent" in states else "expired", bc_id),
        )

    async def record_reports(self, batch: ReportBatch, now: int) -> int:
        """Apply a gateway's speaker reports; returns how many changed a speaker's state.
        Raises BroadcastNotFound when no copy of that broadcast went to that gateway."""
        async with self.store.transaction() as db:
            return await record_reports(db, batch, now)

    # -- reading

    async def _get(self, db: aiosqlite.Connection, bc_id: str) -> StoredBroadcast:
        row = await fetch_one(db, f"SELECT {_COLS} FROM broadcasts WHERE id = ?", (bc_id,))
        if row is None:
            raise BroadcastNotFound(f"no broadcast {bc_id!r}")
        return _stored(row)

    async def get(self, bc_id: str) -> StoredBroadcast | None:
        async with self.store.transaction(write=False) as db:
            try:
                return await self._get(db, bc_id)
            except BroadcastNotFound:
                return None

    async def get_many(self, ids: Iterable[str]) -> dict[str, StoredBroadcast]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        async with self.store.transaction(write=False) as db:
            rows = await fetch_all(
                db, f"SELECT {_COLS} FROM broadcasts WHERE id IN ({marks})", tuple(wanted)
            )
        return {r[0]: _stored(r) for r in rows}

    async def find(
        self,
        *,
        state: str | None = None,
        msg_type: str | None = None,
        village: str | None = None,
        since: int | None = None,
        limit: int = 100,
    ) -> list[StoredBroadcast]:
        """Newest first (by the centre's time of creation)."""
        where: list[str] = []
        args: list[Any] = []
        if state is not None:
            where.append(f"{_STATE_SQL} = ?")
            args.append(state)
        if msg_type is not None:
            where.append("msg_type = ?")
            args.append(msg_type)
        if village is not None:
            where.append(
                "EXISTS (SELECT 1 FROM json_each(broadcasts.area) a "
                "WHERE json_extract(a.value, '$.village') = ?)"
            )
            args.append(village)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        sql = f"SELECT {_COLS} FROM broadcasts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(max(1, min(limit, MAX_LIMIT)))
        async with self.store.transaction(write=False) as db:
            rows = await fetch_all(db, sql, tuple(args))
        return [_stored(r) for r in rows]

    async def _copies(self, db: aiosqlite.Connection, bc_id: str) -> list[GatewayCopy]:
        rows = await fetch_all(
            db, f"SELECT {_COPY_COLS} FROM broadcast_gateways WHERE bc = ? ORDER BY gw", (bc_id,)
        )
        return [_copy(r) for r in rows]

    async def copies(self, bc_id: str) -> list[GatewayCopy]:
        async with self.store.transaction(write=False) as db:
            return await self._copies(db, bc_id)

    async def speakers(self, bc_id: str) -> list[SpeakerState]:
        async with self.store.transaction(write=False) as db:
            rows = await fetch_all(
                db,
                "SELECT device, gw, state, at, reported_at FROM broadcast_reports "
                "WHERE bc = ? ORDER BY device",
                (bc_id,),
            )
        return [SpeakerState(*r) for r in rows]

    async def summaries(self, ids: Iterable[str]) -> dict[str, Summary]:
        wanted = sorted(set(ids))
        out = {i: Summary({}, {}) for i in wanted}
        if not wanted:
            return out
        marks = ",".join("?" * len(wanted))
        async with self.store.transaction(write=False) as db:
            gws = await fetch_all(
                db,
                f"SELECT bc, state, COUNT(*) FROM broadcast_gateways WHERE bc IN ({marks}) "
                "GROUP BY bc, state",
                tuple(wanted),
            )
            spk = await fetch_all(
                db,
                f"SELECT bc, state, COUNT(*) FROM broadcast_reports WHERE bc IN ({marks}) "
                "GROUP BY bc, state",
                tuple(wanted),
            )
        for bc_id, state, n in gws:
            out[bc_id].gateways[state] = n
        for bc_id, state, n in spk:
            out[bc_id].speakers[state] = n
        return out

    async def find_by_cap(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Broadcast]:
        """The broadcasts made of these CAP alerts, by (sender, identifier): imported ones by
        their source's identity, and this centre's own by its sender and id (an alert that
        references a broadcast the centre exported)."""
        out: dict[tuple[str, str], Broadcast] = {}
        async with self.store.transaction(write=False) as db:
            for sender, identifier in dict.fromkeys(keys):
                row = await fetch_one(
                    db,
                    f"SELECT {_COLS} FROM broadcasts WHERE (cap_sender = ? AND cap_identifier = ?)"
                    " OR (id = ? AND sender = ? AND cap_identifier IS NULL)",
                    (sender, identifier, identifier, sender),
                )
                if row is not None:
                    out[(sender, identifier)] = _stored(row).bc
        return out

    async def live_ids(self, ids: Iterable[str]) -> set[str]:
        """Those of `ids` still playing or due (scheduled, sending, sent and not expired)."""
        found = await self.get_many(ids)
        return {i for i, s in found.items() if s.state in LIVE}

    async def coverage(self, bc_id: str) -> list[VillageCoverage]:
        """Speakers targeted and played, per village: a speaker counts for the village of the
        gateway copy that reached it (a copy naming several villages counts them together)."""
        async with self.store.transaction(write=False) as db:
            copies = await self._copies(db, bc_id)
            rows = await fetch_all(
                db, "SELECT gw, state, COUNT(*) FROM broadcast_reports WHERE bc = ? "
                "GROUP BY gw, state", (bc_id,),
            )
        by_gw: dict[str, dict[str, int]] = {}
        for gw, state, n in rows:
            by_gw.setdefault(gw, {})[state] = int(n)
        groups: dict[str, list[str]] = {}
        for c in copies:
            groups.setdefault("+".join(a.village for a in c.area), []).append(c.gw)
        out = []
        for village, gws in groups.items():
            states: dict[str, int] = {}
            for gw in gws:
                for state, n in by_gw.get(gw, {}).items():
                    states[state] = states.get(state, 0) + n
            out.append(VillageCoverage(
                village, tuple(gws), sum(states.values()), states.get("played", 0), states,
            ))
        return out

    async def count_by_state(self) -> dict[str, int]:
        async with self.store.transaction(write=False) as db:
            rows = await fetch_all(
                db, f"SELECT {_STATE_SQL} AS s, COUNT(*) FROM broadcasts GROUP BY s", ()
            )
        return {r[0]: int(r[1]) for r in rows}


def _actor_id(actor: Principal | str | None) -> int | None:
    return actor.staff_id if isinstance(actor, Principal) else None


async def _settings(db: aiosqlite.Connection) -> Settings:
    rows = await fetch_all(db, "SELECT key, value FROM broadcast_settings", ())
    values = {k: json.loads(v) for k, v in rows}
    return Settings(
        approval=str(values.get("approval", "none")),
        drill_villages=tuple(str(v) for v in values.get("drill_villages", ())),
    )


async def record_reports(db: aiosqlite.Connection, batch: ReportBatch, now: int) -> int:
    """`BroadcastStore.record_reports` in the caller's transaction (the centre's ingest commits
    a whole batch of gateway messages at once). Raises BroadcastNotFound before any write."""
    row = await fetch_one(
        db,
        "SELECT state FROM broadcast_gateways WHERE bc = ? AND gw = ?",
        (batch.bc, batch.gw),
    )
    if row is None or row[0] in ("scheduled", "withheld"):
        raise BroadcastNotFound(f"no broadcast {batch.bc} was sent to {batch.gw}")
    changed = 0
    for r in batch.reports:
        old = await fetch_one(
            db,
            "SELECT state, at FROM broadcast_reports WHERE bc = ? AND device = ?",
            (batch.bc, r.device),
        )
        if not supersedes(r.state, r.at, *(old or (None, None))):
            continue
        await db.execute(
            "INSERT INTO broadcast_reports (bc, device, gw, state, at, reported_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (bc, device) DO UPDATE SET "
            "gw = excluded.gw, state = excluded.state, at = excluded.at, "
            "reported_at = excluded.reported_at",
            (batch.bc, r.device, batch.gw, r.state, r.at, now),
        )
        changed += 1
    await db.execute(
        "UPDATE broadcast_gateways SET reports = reports + ?, last_report = ? "
        "WHERE bc = ? AND gw = ?",
        (len(batch.reports), now, batch.bc, batch.gw),
    )
    return changed
