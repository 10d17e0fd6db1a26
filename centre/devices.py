"""Device supervision at the centre (docs/centre.md, "Devices"; protocol §6.2.1).

Gateways report what happens to their devices as supervision events. Ingest stores each in
`device_events` (deduplicated by id, like alarms) and applies it to the device's row in
`devices` (state, battery, firmware, profile, last seen), in the same transaction as the rest of
its batch, before the `received` ack goes back. A gateway's events are applied in `seq` order:
an older one arriving late (a re-send) is stored but does not move the device's row back.

Staff items: `lost`, `low_battery`, `fault` and `tamper` are raised to staff (`raised` = 1) as
items of a lower priority than alarms: they are listed and pushed (`device` on the live hub),
and staff acknowledge them (`ack`, audited, on the item's timeline), but they are never
escalated by SMS. The event that clears one (`restored`, `battery_ok`, `fault_clear`,
`tamper_clear`) marks the device's open items of that condition `cleared_at`, with a step on
their timelines. They live in tables of their own, not in `alarms`: the alarm lifecycle
(dispatch, resolve, escalation) does not apply to them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import aiosqlite

from centre import audit, timeline
from centre.auth import Principal
from centre.store import NewEvent, NotFound, Store, fetch_all, fetch_one
from protocol import acks, uplink

# what -> the condition it raises; what -> the condition it clears
RAISES = {"lost": "lost", "low_battery": "low_battery", "fault": "fault", "tamper": "tamper"}
CLEARS = {"restored": "lost", "battery_ok": "low_battery", "fault_clear": "fault",
          "tamper_clear": "tamper"}
# Timeline kinds of a device item (centre.timeline rows keyed by the event id).
CLEARED = "cleared"

STATUSES = ("ok", "lost", "low_battery", "fault", "tamper")


@dataclass(frozen=True)
class DeviceEvent:
    id: str
    gw: str
    seq: int
    device: str
    what: str
    village: str
    household: str
    gw_ts: int
    received_at: int
    sup: dict[str, Any]
    raised: bool
    cleared_at: int | None
    acked_by: str | None
    acked_note: str | None
    acked_at: int | None


@dataclass(frozen=True)
class Device:
    gw: str
    id: str
    village: str
    household: str
    role: str
    power: str
    period_s: int
    lost_after_s: int
    lost: bool
    low_battery: bool
    fault: str | None
    tamper: bool
    last_seen: int | None
    bat: int | None
    fw: str | None
    updated_at: int

    @property
    def status(self) -> str:
        """One word for the list: the most serious condition first."""
        if self.lost:
            return "lost"
        if self.tamper:
            return "tamper"
        if self.fault:
            return "fault"
        if self.low_battery:
            return "low_battery"
        return "ok"


@dataclass(frozen=True)
class SupResult:
    event: DeviceEvent
    created: bool  # False: a duplicate, nothing was written


_EV_COLS = (
    "id, gw, seq, device, what, village, household, gw_ts, received_at, sup, raised, "
    "cleared_at, acked_by, acked_note, acked_at"
)
_DEV_COLS = (
    "gw, id, village, household, role, power, period_s, lost_after_s, lost, low_battery, "
    "fault, tamper, last_seen, bat, fw, updated_at"
)


def _event(r: Any) -> DeviceEvent:
    return DeviceEvent(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], json.loads(r[9]), bool(r[10]),
        r[11], r[12], r[13], r[14],
    )


def _device(r: Any) -> Device:
    return Device(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), bool(r[9]), r[10],
        bool(r[11]), r[12], r[13], r[14], r[15],
    )


def event_data(ev: DeviceEvent) -> dict[str, Any]:
    return {f.name: getattr(ev, f.name) for f in fields(DeviceEvent)}


def device_data(d: Device) -> dict[str, Any]:
    return {**{f.name: getattr(d, f.name) for f in fields(Device)}, "status": d.status}


def ack_body(ev: DeviceEvent) -> dict[str, Any]:
    """§6.4: a supervision event is only ever `received` (staff acknowledge it here, at the
    centre: no device waits for it)."""
    return acks.encode_ack(acks.Ack(ev.id, acks.RECEIVED, ev.received_at))


async def insert_supervision(
    db: aiosqlite.Connection, evs: Sequence[NewEvent], now_ms: int
) -> list[SupResult]:
    """Store supervision events and apply them to their devices, in order, in the caller's
    transaction: one result per event (a duplicate id changes nothing)."""
    results: list[SupResult] = []
    for ev in evs:
        sup = ev.sup
        if ev.kind != uplink.SUPERVISION or sup is None:
            raise ValueError(f"{ev.id} is not a supervision event")
        row = await fetch_one(db, f"SELECT {_EV_COLS} FROM device_events WHERE id = ?", (ev.id,))
        if row is not None:
            results.append(SupResult(_event(row), created=False))
            continue
        raised = sup.what in RAISES
        sup_json = uplink.encode_supervision(sup)
        new = DeviceEvent(
            ev.id, ev.gw, ev.seq, sup.subject, sup.what, ev.village, ev.household, ev.gw_ts,
            now_ms, sup_json, raised, None, None, None, None,
        )
        await db.execute(
            f"INSERT INTO device_events ({_EV_COLS}) VALUES ({','.join('?' * 15)})",
            (new.id, new.gw, new.seq, new.device, new.what, new.village, new.household,
             new.gw_ts, now_ms, json.dumps(sup_json, separators=(",", ":")), int(raised),
             None, None, None, None),
        )
        await timeline.add(
            db, new.id, now_ms, timeline.RECEIVED, timeline.SYSTEM, {"kind": sup.what}
        )
        await _apply(db, ev, sup, now_ms)
        cond = CLEARS.get(sup.what)
        if cond is not None:
            opened = await fetch_all(
                db,
                "SELECT id FROM device_events WHERE gw = ? AND device = ? AND what = ? "
                "AND cleared_at IS NULL AND seq < ?",
                (ev.gw, sup.subject, cond, ev.seq),
            )
            await db.execute(
                "UPDATE device_events SET cleared_at = ? WHERE gw = ? AND device = ? "
                "AND what = ? AND cleared_at IS NULL AND seq < ?",
                (now_ms, ev.gw, sup.subject, cond, ev.seq),
            )
            await timeline.add_many(
                db, [(str(r[0]), now_ms, CLEARED, timeline.SYSTEM, {"event": ev.id})
                     for r in opened],
            )
        results.append(SupResult(new, created=True))
    return results


async def _apply(
    db: aiosqlite.Connection, ev: NewEvent, sup: uplink.Supervision, now_ms: int
) -> None:
    """The device's row as this event leaves it, unless a newer event (higher seq) of the
    same gateway was applied already."""
    row = await fetch_one(
        db, "SELECT last_seq, lost, low_battery, fault, tamper FROM devices "
        "WHERE gw = ? AND id = ?", (ev.gw, sup.subject),
    )
    if row is not None and int(row[0]) > ev.seq:
        return
    lost, low, fault, tamper = (
        (bool(row[1]), bool(row[2]), row[3], bool(row[4])) if row else (False, False, None, False)
    )
    what = sup.what
    if what in ("lost", "restored", "seen"):  # seen: heard, so not lost
        lost = what == "lost"
    elif what in ("low_battery", "battery_ok"):
        low = what == "low_battery"
    elif what in ("fault", "fault_clear"):
        fault = (sup.code or "fault") if what == "fault" else None
    elif what in ("tamper", "tamper_clear"):
        tamper = what == "tamper"
    await db.execute(
        f"INSERT INTO devices ({_DEV_COLS}, last_seq) VALUES ({','.join('?' * 17)}) "
        "ON CONFLICT (gw, id) DO UPDATE SET village = excluded.village, "
        "household = excluded.household, role = excluded.role, power = excluded.power, "
        "period_s = excluded.period_s, lost_after_s = excluded.lost_after_s, "
        "lost = excluded.lost, low_battery = excluded.low_battery, fault = excluded.fault, "
        "tamper = excluded.tamper, last_seen = COALESCE(excluded.last_seen, devices.last_seen), "
        "bat = COALESCE(excluded.bat, devices.bat), fw = COALESCE(excluded.fw, devices.fw), "
        "updated_at = excluded.updated_at, last_seq = excluded.last_seq",
        (ev.gw, sup.subject, ev.village, ev.household, sup.role, sup.power, sup.period_s,
         sup.lost_after_s, int(lost), int(low), fault, int(tamper), sup.last_seen, sup.bat,
         sup.fw, now_ms, ev.seq),
    )


async def record_seen(
    db: aiosqlite.Connection, gw: str, devs: Sequence[uplink.DeviceSeen], now_ms: int
) -> int:
    """A gateway heartbeat's `devs` (§6.5): when each device was last heard, its last reading.
    Only devices already in the list (their `seen` came) change, and last_seen never moves
    back. Returns how many rows changed."""
    if not devs:
        return 0
    before = db.total_changes
    await db.executemany(
        "UPDATE devices SET last_seen = ?, bat = COALESCE(?, bat), fw = COALESCE(?, fw), "
        "updated_at = ? WHERE gw = ? AND id = ? AND (last_seen IS NULL OR last_seen < ?)",
        [(d.last_seen, d.bat, d.fw, now_ms, gw, d.id, d.last_seen) for d in devs],
    )
    return db.total_changes - before


# -- reads and staff actions (the API, centre.device_api)


async def list_devices(store: Store, village: str | None = None) -> list[Device]:
    where, args = ("WHERE village = ?", (village,)) if village else ("", ())
    async with store.transaction(write=False) as db:
        rows = await fetch_all(
            db, f"SELECT {_DEV_COLS} FROM devices {where} ORDER BY village, id, gw", args
        )
    return [_device(r) for r in rows]


async def get_device(store: Store, gw: str, device: str) -> Device | None:
    async with store.transaction(write=False) as db:
        row = await fetch_one(
            db, f"SELECT {_DEV_COLS} FROM devices WHERE gw = ? AND id = ?", (gw, device)
        )
    return None if row is None else _device(row)


async def list_events(
    store: Store, *, village: str | None = None, open_only: bool = False, limit: int = 200
) -> list[DeviceEvent]:
    """Newest first. `open_only`: the items staff still have to look at (raised, not
    acknowledged)."""
    conds, args_l = [], []
    if village:
        conds.append("village = ?")
        args_l.append(village)
    if open_only:
        conds.append("raised = 1 AND acked_at IS NULL")
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    async with store.transaction(write=False) as db:
        rows = await fetch_all(
            db, f"SELECT {_EV_COLS} FROM device_events {where} "
            "ORDER BY received_at DESC, seq DESC LIMIT ?", (*args_l, limit),
        )
    return [_event(r) for r in rows]


async def get_event(store: Store, event_id: str) -> tuple[DeviceEvent, list[timeline.Step]]:
    async with store.transaction(write=False) as db:
        row = await fetch_one(db, f"SELECT {_EV_COLS} FROM device_events WHERE id = ?",
                              (event_id,))
        if row is None:
            raise NotFound(f"no device event {event_id!r}")
        return _event(row), await timeline.steps(db, event_id)


class NotRaised(Exception):
    """The event is information (seen, restored, ...), not an item for staff."""


async def ack_event(
    store: Store, event_id: str, who: Principal, note: str, at: int, address: str = ""
) -> tuple[DeviceEvent, bool]:
    """Staff acknowledge a raised item: its state, a timeline step and an audit line in one
    transaction. Returns (event, changed); acknowledging twice changes nothing."""
    async with store.transaction() as db:
        row = await fetch_one(db, f"SELECT {_EV_COLS} FROM device_events WHERE id = ?",
                              (event_id,))
        if row is None:
            raise NotFound(f"no device event {event_id!r}")
        ev = _event(row)
        if not ev.raised:
            raise NotRaised(f"{event_id} is a {ev.what} event, not an item to acknowledge")
        if ev.acked_at is not None:
            return ev, False
        await db.execute(
            "UPDATE device_events SET acked_by = ?, acked_note = ?, acked_at = ? WHERE id = ?",
            (who.display_name, note, at, event_id),
        )
        await timeline.add(db, event_id, at, timeline.ACKED, who.display_name, {"note": note})
        await audit.record(
            db, at, who, "device_event.ack", event_id,
            {"device": ev.device, "what": ev.what, "note": note}, address,
        )
        row = await fetch_one(db, f"SELECT {_EV_COLS} FROM device_events WHERE id = ?",
                              (event_id,))
    return _event(row), True
