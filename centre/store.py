"""The centre's SQLite store: enrolled gateways, events, and acks still owed to gateways.
Broadcasts have their own tables (schema version 2) and methods in `centre.bcstore`.

One connection, WAL, synchronous=FULL: a write has reached the disk when its method returns.
All statements go through one lock, so each method is one transaction and concurrent callers
(the ingest task and API requests) never see each other's half-done work.

Events are keyed by their system-wide id `{gw}:{device}:{counter}` (docs/protocol.md §1.2);
inserting an id that is already stored changes nothing and returns the stored row. A cancel is
stored as its own row (kind `cancel`, state `cancel`, `ref` = the alarm's id) and marks that
alarm `cancelled` if it is still open (an alarm staff took charge of keeps its state and gets
`cancelled_at`); if the cancel arrives before the alarm, the alarm is stored cancelled. Each
new event writes its step to the alarm's timeline (`centre.timeline`) in the same transaction;
staff steps are in `centre.lifecycle`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import aiosqlite

from centre import timeline
from protocol import uplink
from transport.keys import private_db

KINDS = ("alarm", "cancel", "test")
# States: an alarm is open, acked, dispatched, resolved, or cancelled (by its device before
# staff took charge; see centre.lifecycle); a test is `test`; a cancel event is `cancel`.
STATES = ("open", "acked", "dispatched", "resolved", "cancelled", "test", "cancel")
# The alarms staff still have to handle: the console's work list.
ACTIVE = ("open", "acked", "dispatched")
MAX_LIMIT = 1000


def now_ms() -> int:
    """The centre's clock: Unix milliseconds."""
    return time.time_ns() // 1_000_000

_MIGRATIONS: tuple[str, ...] = (
    # version 1
    """
    CREATE TABLE gateways (
        id          TEXT PRIMARY KEY,
        public_key  TEXT NOT NULL,
        name        TEXT NOT NULL DEFAULT '',
        enrolled_at INTEGER NOT NULL,
        last_seen   INTEGER,
        hb_ts       INTEGER,
        outbox      INTEGER,
        devices     INTEGER
    );
    CREATE TABLE alarms (
        id           TEXT PRIMARY KEY,
        gw           TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        kind         TEXT NOT NULL CHECK (kind IN ('alarm', 'cancel', 'test')),
        device       TEXT NOT NULL,
        counter      INTEGER NOT NULL,
        ref          TEXT,
        village      TEXT NOT NULL,
        household    TEXT NOT NULL,
        gw_ts        INTEGER NOT NULL,
        dev_ts       INTEGER,
        dev_up       INTEGER,
        received_at  INTEGER NOT NULL,
        state        TEXT NOT NULL
                     CHECK (state IN ('open', 'acked', 'cancelled', 'test', 'cancel')),
        acked_by     TEXT,
        acked_note   TEXT,
        acked_at     INTEGER,
        cancelled_at INTEGER
    );
    CREATE INDEX alarms_received ON alarms (received_at);
    CREATE INDEX alarms_state ON alarms (state, received_at);
    CREATE INDEX alarms_ref ON alarms (ref) WHERE ref IS NOT NULL;
    CREATE TABLE downlinks (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        gw         TEXT NOT NULL,
        event_id   TEXT NOT NULL,
        state      TEXT NOT NULL,
        topic      TEXT NOT NULL,
        payload    BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    """,
    # version 2: broadcasts (docs/protocol.md §8). `downlinks` also carries the signed copies of
    # broadcasts (state 'bc'), so that one outbox sends acks and broadcasts alike.
    """
    ALTER TABLE gateways ADD COLUMN villages TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE gateways ADD COLUMN reported_villages TEXT;
    CREATE TABLE broadcasts (
        id           TEXT PRIMARY KEY,
        sender       TEXT NOT NULL,
        sent         INTEGER NOT NULL,
        status       TEXT NOT NULL,
        msg_type     TEXT NOT NULL,
        refs         TEXT NOT NULL,
        urgency      TEXT NOT NULL,
        severity     TEXT NOT NULL,
        certainty    TEXT NOT NULL,
        start        INTEGER,
        expires      INTEGER NOT NULL,
        area         TEXT NOT NULL,
        language     TEXT NOT NULL,
        body_text    TEXT NOT NULL,
        clip         TEXT,
        repeat_n     INTEGER NOT NULL,
        category     TEXT NOT NULL,
        event        TEXT NOT NULL,
        created_by   TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        source       TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN
                     ('scheduled', 'sending', 'sent', 'cancelled', 'updated', 'expired')),
        released_at  INTEGER,
        cancelled_at INTEGER,
        cancelled_by TEXT,
        cancel_note  TEXT,
        replaced_by  TEXT
    );
    CREATE INDEX broadcasts_created ON broadcasts (created_at);
    CREATE INDEX broadcasts_scheduled ON broadcasts (start) WHERE state = 'scheduled';
    CREATE TABLE broadcast_gateways (
        bc          TEXT NOT NULL REFERENCES broadcasts (id),
        gw          TEXT NOT NULL,
        area        TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN
                    ('scheduled', 'pending', 'sent', 'expired', 'withheld')),
        topic       TEXT NOT NULL,
        payload     BLOB NOT NULL,
        downlink_id INTEGER,
        sent_at     INTEGER,
        reports     INTEGER NOT NULL DEFAULT 0,
        last_report INTEGER,
        PRIMARY KEY (bc, gw)
    );
    CREATE INDEX broadcast_gateways_downlink ON broadcast_gateways (downlink_id)
        WHERE downlink_id IS NOT NULL;
    CREATE TABLE broadcast_reports (
        bc          TEXT NOT NULL REFERENCES broadcasts (id),
        device      TEXT NOT NULL,
        gw          TEXT NOT NULL,
        state       TEXT NOT NULL,
        at          INTEGER NOT NULL,
        reported_at INTEGER NOT NULL,
        PRIMARY KEY (bc, device)
    );
    """,
    # version 3: the audit log (centre.audit), append-only: its triggers refuse UPDATE and DELETE.
    """
    CREATE TABLE audit (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        at       INTEGER NOT NULL,
        actor    TEXT NOT NULL,
        actor_id INTEGER,
        address  TEXT NOT NULL DEFAULT '',
        action   TEXT NOT NULL,
        target   TEXT NOT NULL DEFAULT '',
        detail   TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE INDEX audit_target ON audit (target, at);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
    # version 4: staff accounts (centre.accounts): argon2id password hashes, server-side
    # sessions and API tokens (both stored as SHA-256 of their secret), failed logins by address.
    """
    CREATE TABLE staff (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        username      TEXT NOT NULL UNIQUE,
        display_name  TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('operator', 'broadcaster', 'admin')),
        password_hash TEXT NOT NULL,
        disabled      INTEGER NOT NULL DEFAULT 0,
        failures      INTEGER NOT NULL DEFAULT 0,
        locked_until  INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE staff_sessions (
        hash       TEXT PRIMARY KEY,
        staff_id   INTEGER NOT NULL REFERENCES staff (id),
        created_at INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        address    TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX staff_sessions_staff ON staff_sessions (staff_id);
    CREATE TABLE api_tokens (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        hash       TEXT NOT NULL UNIQUE,
        staff_id   INTEGER NOT NULL REFERENCES staff (id),
        name       TEXT NOT NULL,
        role       TEXT NOT NULL CHECK (role IN ('operator', 'broadcaster', 'admin')),
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER,
        last_used  INTEGER
    );
    CREATE INDEX api_tokens_staff ON api_tokens (staff_id);
    CREATE TABLE login_failures (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        at       INTEGER NOT NULL,
        address  TEXT NOT NULL,
        username TEXT NOT NULL
    );
    CREATE INDEX login_failures_address ON login_failures (address, at);
    """,
    # version 5: the alarm's life (centre.lifecycle, centre.timeline). SQLite cannot alter a
    # CHECK, so the alarms table is rebuilt with the new states and columns, keeping every row;
    # the timeline of the alarms already stored is filled from what their rows say.
    """
    CREATE TABLE alarms_rebuilt (
        id              TEXT PRIMARY KEY,
        gw              TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        kind            TEXT NOT NULL CHECK (kind IN ('alarm', 'cancel', 'test')),
        device          TEXT NOT NULL,
        counter         INTEGER NOT NULL,
        ref             TEXT,
        village         TEXT NOT NULL,
        household       TEXT NOT NULL,
        gw_ts           INTEGER NOT NULL,
        dev_ts          INTEGER,
        dev_up          INTEGER,
        received_at     INTEGER NOT NULL,
        state           TEXT NOT NULL CHECK (state IN
                        ('open', 'acked', 'dispatched', 'resolved', 'cancelled', 'test', 'cancel')),
        acked_by        TEXT,
        acked_note      TEXT,
        acked_at        INTEGER,
        cancelled_at    INTEGER,
        dispatched_to   TEXT,
        dispatched_note TEXT,
        dispatched_at   INTEGER,
        dispatched_by   TEXT,
        resolved_at     INTEGER,
        resolved_by     TEXT,
        outcome         TEXT,
        resolved_note   TEXT
    );
    INSERT INTO alarms_rebuilt (id, gw, seq, kind, device, counter, ref, village, household, gw_ts,
                           dev_ts, dev_up, received_at, state, acked_by, acked_note, acked_at,
                           cancelled_at)
        SELECT id, gw, seq, kind, device, counter, ref, village, household, gw_ts, dev_ts,
               dev_up, received_at, state, acked_by, acked_note, acked_at, cancelled_at
        FROM alarms;
    DROP TABLE alarms;
    ALTER TABLE alarms_rebuilt RENAME TO alarms;
    CREATE INDEX alarms_received ON alarms (received_at);
    CREATE INDEX alarms_state ON alarms (state, received_at);
    CREATE INDEX alarms_ref ON alarms (ref) WHERE ref IS NOT NULL;
    CREATE TABLE alarm_timeline (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        alarm  TEXT NOT NULL,
        at     INTEGER NOT NULL,
        kind   TEXT NOT NULL,
        actor  TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX alarm_timeline_alarm ON alarm_timeline (alarm, at);
    INSERT INTO alarm_timeline (alarm, at, kind, actor, detail)
        SELECT id, received_at, 'received', 'device', json_object('kind', kind)
        FROM alarms WHERE kind IN ('alarm', 'test') ORDER BY received_at, id;
    INSERT INTO alarm_timeline (alarm, at, kind, actor, detail)
        SELECT ref, received_at, 'cancelled', 'device', json_object('event', id)
        FROM alarms WHERE kind = 'cancel' AND ref IS NOT NULL ORDER BY received_at, id;
    INSERT INTO alarm_timeline (alarm, at, kind, actor, detail)
        SELECT id, acked_at, 'acked', COALESCE(acked_by, ''), json_object('note', acked_note)
        FROM alarms WHERE acked_at IS NOT NULL ORDER BY acked_at, id;
    """,
    # version 6: household cards and their contacts (centre.households). Before this, centre.households
    # created a smaller `households` table itself (CREATE TABLE IF NOT EXISTS, outside these
    # versions): a database that has it keeps its rows (copied over, phones as they were
    # written); one without gets an empty one to copy from.
    """
    CREATE TABLE IF NOT EXISTS households (
        id TEXT PRIMARY KEY,
        village TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL DEFAULT '',
        phone TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '',
        notes TEXT NOT NULL DEFAULT '',
        updated_at INTEGER NOT NULL
    );
    DROP INDEX IF EXISTS households_village;
    ALTER TABLE households RENAME TO households_before_cards;
    CREATE TABLE households (
        id             TEXT PRIMARY KEY,
        village        TEXT NOT NULL DEFAULT '',
        village_group  TEXT NOT NULL DEFAULT '',
        name           TEXT NOT NULL DEFAULT '',
        address        TEXT NOT NULL DEFAULT '',
        phone          TEXT NOT NULL DEFAULT '',
        medical        TEXT NOT NULL DEFAULT '',
        language_notes TEXT NOT NULL DEFAULT '',
        lat            REAL CHECK (lat IS NULL OR lat BETWEEN -90 AND 90),
        lon            REAL CHECK (lon IS NULL OR lon BETWEEN -180 AND 180),
        notes          TEXT NOT NULL DEFAULT '',
        updated_at     INTEGER NOT NULL,
        CHECK ((lat IS NULL) = (lon IS NULL))
    );
    INSERT INTO households (id, village, name, phone, address, notes, updated_at)
        SELECT id, village, name, phone, address, notes, updated_at FROM households_before_cards;
    DROP TABLE households_before_cards;
    CREATE INDEX households_village ON households (village, village_group, id);
    CREATE TABLE household_contacts (
        household TEXT NOT NULL REFERENCES households (id) ON DELETE CASCADE,
        kind      TEXT NOT NULL CHECK (kind IN ('leader', 'grid', 'family', 'doctor')),
        position  INTEGER NOT NULL CHECK (position >= 1),
        name      TEXT NOT NULL,
        relation  TEXT NOT NULL DEFAULT '',
        phone     TEXT NOT NULL,
        PRIMARY KEY (household, kind, position)
    );
    """,
    # version 7: broadcasts from CAP sources and their release (centre.bcstore): a CAP import's own
    # identity (kept as its source gave it, mapped to the broadcast id), who created and who
    # approved a broadcast, a broadcast held back (`hold`: awaiting_approval, or recorded and
    # never sent: status Test, or an Exercise where no village has drills), and the broadcast
    # settings (second approval, drill villages).
    """
    ALTER TABLE broadcasts ADD COLUMN hold TEXT
        CHECK (hold IS NULL OR hold IN ('awaiting_approval', 'recorded'));
    ALTER TABLE broadcasts ADD COLUMN hold_reason TEXT;
    ALTER TABLE broadcasts ADD COLUMN created_by_id INTEGER;
    ALTER TABLE broadcasts ADD COLUMN approved_by TEXT;
    ALTER TABLE broadcasts ADD COLUMN approved_at INTEGER;
    ALTER TABLE broadcasts ADD COLUMN cap_identifier TEXT;
    ALTER TABLE broadcasts ADD COLUMN cap_sender TEXT;
    ALTER TABLE broadcasts ADD COLUMN cap_origin TEXT;
    CREATE UNIQUE INDEX broadcasts_cap ON broadcasts (cap_sender, cap_identifier)
        WHERE cap_identifier IS NOT NULL;
    CREATE TABLE broadcast_settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # version 8: device supervision (docs/centre.md, Devices; protocol §6.2.1): each gateway's devices as
    # its supervision events left them, and the events themselves, which staff acknowledge.
    """
    CREATE TABLE devices (
        gw           TEXT NOT NULL,
        id           TEXT NOT NULL,
        village      TEXT NOT NULL,
        household    TEXT NOT NULL,
        role         TEXT NOT NULL,
        power        TEXT NOT NULL,
        period_s     INTEGER NOT NULL,
        lost_after_s INTEGER NOT NULL,
        lost         INTEGER NOT NULL DEFAULT 0,
        low_battery  INTEGER NOT NULL DEFAULT 0,
        fault        TEXT,
        tamper       INTEGER NOT NULL DEFAULT 0,
        last_seen    INTEGER,
        bat          INTEGER,
        fw           TEXT,
        last_seq     INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        PRIMARY KEY (gw, id)
    );
    CREATE INDEX devices_village ON devices (village, id);
    CREATE TABLE device_events (
        id          TEXT PRIMARY KEY,
        gw          TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        device      TEXT NOT NULL,
        what        TEXT NOT NULL,
        village     TEXT NOT NULL,
        household   TEXT NOT NULL,
        gw_ts       INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        sup         TEXT NOT NULL,
        raised      INTEGER NOT NULL,
        cleared_at  INTEGER,
        acked_by    TEXT,
        acked_note  TEXT,
        acked_at    INTEGER
    );
    CREATE INDEX device_events_open ON device_events (raised, acked_at, received_at);
    CREATE INDEX device_events_device ON device_events (gw, device, received_at);
    """,
    # version 9: whether each gateway can write its store, as its last heartbeat said (§6.5
    # `store`, JSON; NULL: its heartbeats do not say).
    """
    ALTER TABLE gateways ADD COLUMN store_state TEXT;
    """,
    # version 10: escalation chains (centre.escalation): policy overrides per scope, one chain
    # per alarm, the SMS of each step (UNIQUE (alarm, step, number): a contact is never sent
    # the same step twice, even across restarts), and every reply received.
    """
    CREATE TABLE escalation_policy (
        scope      TEXT PRIMARY KEY,
        settings   TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT NOT NULL
    );
    CREATE TABLE escalations (
        alarm        TEXT PRIMARY KEY REFERENCES alarms (id),
        state        TEXT NOT NULL CHECK (state IN ('running', 'confirmed', 'stopped',
                     'exhausted', 'no_contacts', 'disabled', 'too_old')),
        policy       TEXT NOT NULL,
        plan         TEXT NOT NULL,
        facts        TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        step         INTEGER NOT NULL DEFAULT 0,
        step_due     INTEGER,
        ended_at     INTEGER,
        end_reason   TEXT,
        confirmed_by INTEGER
    );
    CREATE INDEX escalations_running ON escalations (state) WHERE state = 'running';
    CREATE TABLE escalation_messages (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        alarm        TEXT NOT NULL REFERENCES escalations (alarm),
        step         INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        name         TEXT NOT NULL,
        relation     TEXT NOT NULL,
        phone        TEXT NOT NULL,
        number       TEXT NOT NULL,
        body         TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'failed', 'unknown')),
        created_at   INTEGER NOT NULL,
        sent_at      INTEGER,
        refs         TEXT NOT NULL DEFAULT '[]',
        error        TEXT,
        delivery     TEXT CHECK (delivery IN ('delivered', 'failed')),
        delivered_at INTEGER,
        reports      TEXT NOT NULL DEFAULT '{}',
        due_at       INTEGER,
        timed_out_at INTEGER,
        confirmed_at INTEGER,
        UNIQUE (alarm, step, number)
    );
    CREATE INDEX escalation_messages_number ON escalation_messages (number, id);
    CREATE TABLE escalation_replies (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        at       INTEGER NOT NULL,
        number   TEXT NOT NULL,
        body     TEXT NOT NULL,
        message  INTEGER REFERENCES escalation_messages (id),
        alarm    TEXT,
        confirms INTEGER NOT NULL
    );
    CREATE INDEX escalation_replies_alarm ON escalation_replies (alarm, id);
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


class StoreError(Exception):
    """SQLite refused an operation (disk full, read-only file, corruption, newer schema)."""


class NotFound(StoreError):
    """No event has that id."""


class NotOpen(StoreError):
    """The event is not an alarm that can be acknowledged (a test, a cancel, a cancelled alarm)."""

    def __init__(self, event: Event) -> None:
        super().__init__(f"{event.id} is {event.state}, not an open alarm")
        self.event = event


# A validated event as the gateway sent it: the link's own record (§6.2).
NewEvent = uplink.Event


@dataclass(frozen=True)
class Event:
    id: str
    gw: str
    seq: int
    kind: str
    device: str
    counter: int
    ref: str | None
    village: str
    household: str
    gw_ts: int
    dev_ts: int | None
    dev_up: int | None
    received_at: int
    state: str
    acked_by: str | None
    acked_note: str | None
    acked_at: int | None
    cancelled_at: int | None  # by the device; an alarm staff took charge of keeps its state
    dispatched_to: str | None = None  # the responder staff sent
    dispatched_note: str | None = None
    dispatched_at: int | None = None
    dispatched_by: str | None = None
    resolved_at: int | None = None
    resolved_by: str | None = None
    outcome: str | None = None  # an id of centre.lifecycle.OUTCOMES
    resolved_note: str | None = None


def event_data(ev: Event) -> dict[str, Any]:
    """The event as `GET /api/alarms/{id}` returns it (and as the live hub publishes it)."""
    return {f.name: getattr(ev, f.name) for f in fields(Event)}


@dataclass(frozen=True)
class Gateway:
    id: str
    public_key: str
    name: str
    enrolled_at: int
    last_seen: int | None
    hb_ts: int | None
    outbox: int | None
    devices: int | None
    # Villages this gateway serves: given at enrolment, and as its heartbeat last reported
    # them (None: its heartbeats carry no list). Broadcasts target the union of both.
    villages: tuple[str, ...] = ()
    reported_villages: tuple[str, ...] | None = None
    # §6.5 `store` of its last heartbeat (None: its heartbeats do not carry it).
    store: uplink.StoreState | None = None

    def serves(self) -> frozenset[str]:
        return frozenset(self.villages) | frozenset(self.reported_villages or ())


@dataclass(frozen=True)
class Downlink:
    id: int
    gw: str
    event_id: str
    state: str
    topic: str
    payload: bytes
    created_at: int


@dataclass(frozen=True)
class InsertResult:
    event: Event
    created: bool  # False: a duplicate, nothing was written


@dataclass(frozen=True)
class AckResult:
    event: Event
    changed: bool  # False: it was already acked, nothing was written
    downlink: Downlink | None


_EVENT_COLS = (
    "id, gw, seq, kind, device, counter, ref, village, household, gw_ts, dev_ts, dev_up, "
    "received_at, state, acked_by, acked_note, acked_at, cancelled_at, dispatched_to, "
    "dispatched_note, dispatched_at, dispatched_by, resolved_at, resolved_by, outcome, "
    "resolved_note"
)
_EVENT_FIELDS = _EVENT_COLS.split(", ")
_GATEWAY_COLS = (
    "id, public_key, name, enrolled_at, last_seen, hb_ts, outbox, devices, villages, "
    "reported_villages, store_state"
)
_DOWNLINK_COLS = "id, gw, event_id, state, topic, payload, created_at"


def _event(row: Any) -> Event:
    return Event(*row)


def _event_row(e: Event) -> tuple[Any, ...]:
    """The values of _EVENT_COLS (dataclasses.astuple deep-copies, at a cost per event)."""
    return (
        e.id, e.gw, e.seq, e.kind, e.device, e.counter, e.ref, e.village, e.household, e.gw_ts,
        e.dev_ts, e.dev_up, e.received_at, e.state, e.acked_by, e.acked_note, e.acked_at,
        e.cancelled_at, e.dispatched_to, e.dispatched_note, e.dispatched_at, e.dispatched_by,
        e.resolved_at, e.resolved_by, e.outcome, e.resolved_note,
    )


def _gateway(row: Any) -> Gateway:
    reported = None if row[9] is None else tuple(json.loads(row[9]))
    return Gateway(
        id=row[0],
        public_key=row[1],
        name=row[2],
        enrolled_at=row[3],
        last_seen=row[4],
        hb_ts=row[5],
        outbox=row[6],
        devices=row[7],
        villages=tuple(json.loads(row[8])),
        reported_villages=reported,
        store=None if row[10] is None else uplink.StoreState(**json.loads(row[10])),
    )


async def fetch_one(db: aiosqlite.Connection, sql: str, args: tuple[Any, ...]) -> Any:
    async with db.execute(sql, args) as cur:
        return await cur.fetchone()


async def fetch_all(db: aiosqlite.Connection, sql: str, args: tuple[Any, ...]) -> list[Any]:
    async with db.execute(sql, args) as cur:
        return list(await cur.fetchall())


def _downlink(row: Any) -> Downlink:
    return Downlink(row[0], row[1], row[2], row[3], row[4], bytes(row[5]), row[6])


_CHUNK = 500  # ids per `IN (...)`: well below SQLite's limit on host parameters


def _marks(items: Sequence[object]) -> str:
    return ",".join("?" * len(items))


async def record_heartbeat(
    db: aiosqlite.Connection,
    gw: str,
    ts: int,
    outbox: int,
    devices: int,
    now_ms: int,
    villages: Sequence[str] | None = None,
    store: uplink.StoreState | None = None,
) -> bool:
    """Record a gateway heartbeat in the caller's transaction; False (and nothing written) if
    `ts` is not newer. `villages` (§6.5, optional) replaces the list the gateway reported
    before; None (a heartbeat without the field) keeps it. `store` (§6.5, optional) replaces
    the last one."""
    vjson = None if villages is None else json.dumps(sorted(set(villages)))
    sjson = None if store is None else json.dumps(uplink.encode_store_state(store))
    cur = await db.execute(
        "UPDATE gateways SET last_seen = ?, hb_ts = ?, outbox = ?, devices = ?, "
        "reported_villages = COALESCE(?, reported_villages), store_state = ? "
        "WHERE id = ? AND (hb_ts IS NULL OR hb_ts < ?)",
        (now_ms, ts, outbox, devices, vjson, sjson, gw, ts),
    )
    return cur.rowcount == 1


async def insert_events(
    db: aiosqlite.Connection, evs: Sequence[NewEvent], now_ms: int
) -> list[InsertResult]:
    """Store events, in order, in the caller's transaction: one result per event.

    An id already stored (or earlier in `evs`) changes nothing and gives the stored row. A
    cancel marks its alarm `cancelled`; an alarm whose cancel came first is stored cancelled.
    The statements are few and do not grow per event beyond one row each (group commit: a
    thousand events cost a handful of round trips to SQLite, not thousands).
    """
    for ev in evs:
        if ev.kind not in KINDS:
            raise ValueError(f"unknown kind {ev.kind!r}")
    ids = sorted({ev.id for ev in evs})
    stored: dict[str, Event] = {}
    for i in range(0, len(ids), _CHUNK):
        part = ids[i : i + _CHUNK]
        rows = await fetch_all(
            db, f"SELECT {_EVENT_COLS} FROM alarms WHERE id IN ({_marks(part)})", tuple(part)
        )
        stored.update({r[0]: _event(r) for r in rows})
    # When a cancel came before its alarm, the alarm is stored cancelled at that time.
    alarm_ids = sorted({ev.id for ev in evs if ev.kind == "alarm" and ev.id not in stored})
    cancelled_at: dict[str, int] = {}
    for i in range(0, len(alarm_ids), _CHUNK):
        part = alarm_ids[i : i + _CHUNK]
        rows = await fetch_all(
            db,
            "SELECT ref, MIN(received_at) FROM alarms "
            f"WHERE kind = 'cancel' AND ref IN ({_marks(part)}) GROUP BY ref",
            tuple(part),
        )
        cancelled_at.update({str(r[0]): int(r[1]) for r in rows})
    results: list[InsertResult] = []
    new: list[Event] = []
    cancels: list[Event] = []
    for ev in evs:
        old = stored.get(ev.id)
        if old is not None:
            results.append(InsertResult(old, created=False))
            continue
        state = {"alarm": "open", "test": "test", "cancel": "cancel"}[ev.kind]
        at: int | None = None
        if ev.kind == "alarm" and ev.id in cancelled_at:
            state, at = "cancelled", cancelled_at[ev.id]
        row = Event(
            ev.id, ev.gw, ev.seq, ev.kind, ev.device, ev.counter, ev.ref, ev.village,
            ev.household, ev.gw_ts, ev.dev_ts, ev.dev_up, now_ms, state, None, None, None, at,
        )
        stored[ev.id] = row
        new.append(row)
        results.append(InsertResult(row, created=True))
        if ev.kind == "cancel" and ev.ref is not None:
            cancels.append(row)
            cancelled_at.setdefault(ev.ref, now_ms)  # for its alarm, if later in `evs`
    if new:
        await db.executemany(
            f"INSERT INTO alarms ({_EVENT_COLS}) VALUES ({_marks(_EVENT_FIELDS)})",
            [_event_row(e) for e in new],
        )
    # The state each referenced alarm had when its cancel came (None: not here yet).
    was: dict[str, str | None] = {}
    if cancels:
        refs = sorted({str(c.ref) for c in cancels})
        for i in range(0, len(refs), _CHUNK):
            part = refs[i : i + _CHUNK]
            rows = await fetch_all(
                db,
                f"SELECT id, state FROM alarms WHERE kind = 'alarm' AND id IN ({_marks(part)})",
                tuple(part),
            )
            was.update({str(r[0]): str(r[1]) for r in rows})
        # Only an open alarm becomes `cancelled`: once staff took charge (acked, dispatched,
        # resolved) someone may be on the way, so the alarm stays theirs to resolve and the
        # cancel shows on its timeline and as `cancelled_at` (docs/centre.md, the alarm's life).
        await db.executemany(
            "UPDATE alarms SET state = CASE WHEN state = 'open' THEN 'cancelled' ELSE state END, "
            "cancelled_at = COALESCE(cancelled_at, ?) WHERE id = ? AND kind = 'alarm'",
            [(now_ms, c.ref) for c in cancels],
        )
    # In the order the events came: an alarm new in this batch is not there before its row.
    arriving = {e.id for e in new if e.kind == "alarm"}
    steps: list[tuple[str, int, str, str, dict[str, Any] | None]] = []
    for e in new:
        if e.kind != "cancel":
            arriving.discard(e.id)
            steps.append((e.id, now_ms, timeline.RECEIVED, timeline.DEVICE, {"kind": e.kind}))
            continue
        if e.ref is None:
            continue
        before = None if e.ref in arriving else was.get(e.ref)
        steps.append(
            (e.ref, now_ms, timeline.CANCELLED, timeline.DEVICE, {"event": e.id, "state": before})
        )
        if before == "open":
            was[e.ref] = "cancelled"
    await timeline.add_many(db, steps)
    return results


async def confirm_acks(db: aiosqlite.Connection, gw: str, acks: Sequence[tuple[str, str]]) -> int:
    """The gateway confirmed these acks (§6.6): drop them from the outbox, in the caller's
    transaction. Returns how many were still held (a repeat confirms nothing)."""
    if not acks:
        return 0
    before = db.total_changes
    await db.executemany(
        "DELETE FROM downlinks WHERE gw = ? AND event_id = ? AND state = ?",
        [(gw, event_id, state) for event_id, state in acks],
    )
    return db.total_changes - before


async def get_event_in(db: aiosqlite.Connection, event_id: str) -> Event:
    """The stored event, in the caller's transaction; raises NotFound."""
    row = await fetch_one(db, f"SELECT {_EVENT_COLS} FROM alarms WHERE id = ?", (event_id,))
    if row is None:
        raise NotFound(f"no event {event_id!r}")
    return _event(row)


async def ack_in(
    db: aiosqlite.Connection,
    ev: Event,
    by: str,
    note: str,
    at: int,
    make_downlink: Callable[[Event], tuple[str, bytes]],
) -> AckResult:
    """Staff acknowledge an open alarm, in the caller's transaction: its state, its timeline
    step and the ack owed to its gateway (`make_downlink(acked_event) -> (topic, payload)`).

    An alarm already acknowledged (whatever happened since) is returned unchanged. Raises
    NotOpen for a test, a cancel or an alarm its device cancelled before anyone took charge.
    """
    if ev.acked_at is not None:
        return AckResult(ev, changed=False, downlink=None)
    if ev.state != "open":
        raise NotOpen(ev)
    await db.execute(
        "UPDATE alarms SET state = 'acked', acked_by = ?, acked_note = ?, acked_at = ? "
        "WHERE id = ?",
        (by, note, at, ev.id),
    )
    ev = await get_event_in(db, ev.id)
    await timeline.add(db, ev.id, at, timeline.ACKED, by, {"note": note})
    topic, payload = make_downlink(ev)
    cur = await db.execute(
        "INSERT INTO downlinks (gw, event_id, state, topic, payload, created_at) "
        "VALUES (?, ?, 'acked', ?, ?, ?)",
        (ev.gw, ev.id, topic, payload, at),
    )
    dl_id = cur.lastrowid
    assert dl_id is not None
    downlink = Downlink(dl_id, ev.gw, ev.id, "acked", topic, payload, at)
    return AckResult(ev, changed=True, downlink=downlink)


class Store:
    """`async with Store(path) as store:` opens (creating or migrating the schema) and closes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        # 0600 before sqlite opens it (and so its -wal and -shm), in a 0700 directory if new.
        private_db(self.path)
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        self._db = db
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            await self._migrate(db)
        except BaseException:
            self._db = None
            await db.close()
            raise

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        try:
            async with db.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this program's "
                    f"{SCHEMA_VERSION}; upgrade onekey"
                )
            for n in range(version, SCHEMA_VERSION):
                await db.executescript(
                    f"BEGIN IMMEDIATE;\n{_MIGRATIONS[n]}\nPRAGMA user_version = {n + 1};\nCOMMIT;"
                )
        except sqlite3.Error as exc:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise StoreError(f"cannot create or migrate the schema of {self.path}: {exc}") from None

    def transaction(self, write: bool = True) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        """One transaction under the store's lock (for `centre.bcstore`)."""
        return self._tx(write)

    @asynccontextmanager
    async def _tx(self, write: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        db = self._db
        if db is None:
            raise StoreError("the store is not open")
        async with self._lock:
            try:
                if not write:
                    yield db
                    return
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
                await db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from None

    _one = staticmethod(fetch_one)
    _all = staticmethod(fetch_all)

    # -- gateways

    async def upsert_gateway(
        self,
        gw: str,
        public_key: str,
        now_ms: int,
        name: str | None = None,
        villages: Sequence[str] | None = None,
    ) -> Gateway:
        """Enrol a gateway, or replace its public key (and name and villages, when given)."""
        vjson = None if villages is None else json.dumps(sorted(set(villages)))
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO gateways (id, public_key, name, enrolled_at, villages) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, "
                "enrolled_at = excluded.enrolled_at, "
                "name = CASE WHEN ? IS NULL THEN gateways.name ELSE excluded.name END, "
                "villages = CASE WHEN ? IS NULL THEN gateways.villages ELSE excluded.villages END",
                (gw, public_key, name or "", now_ms, vjson or "[]", name, vjson),
            )
            row = await self._one(db, f"SELECT {_GATEWAY_COLS} FROM gateways WHERE id = ?", (gw,))
        return _gateway(row)

    async def get_gateway(self, gw: str) -> Gateway | None:
        async with self._tx(write=False) as db:
            row = await self._one(db, f"SELECT {_GATEWAY_COLS} FROM gateways WHERE id = ?", (gw,))
        return None if row is None else _gateway(row)

    async def list_gateways(self) -> list[Gateway]:
        async with self._tx(write=False) as db:
            rows = await self._all(db, f"SELECT {_GATEWAY_COLS} FROM gateways ORDER BY id", ())
        return [_gateway(r) for r in rows]

    async def record_heartbeat(
        self,
        gw: str,
        ts: int,
        outbox: int,
        devices: int,
        now_ms: int,
        villages: Sequence[str] | None = None,
        store: uplink.StoreState | None = None,
    ) -> bool:
        """Record a gateway heartbeat (see `record_heartbeat`, the function)."""
        async with self._tx() as db:
            return await record_heartbeat(db, gw, ts, outbox, devices, now_ms, villages, store)

    async def public_keys(self, gws: Iterable[str]) -> dict[str, str]:
        """The enrolled public key (hex) of each of `gws` that is enrolled."""
        wanted = sorted(set(gws))
        out: dict[str, str] = {}
        async with self._tx(write=False) as db:
            for i in range(0, len(wanted), _CHUNK):
                part = wanted[i : i + _CHUNK]
                rows = await self._all(
                    db,
                    f"SELECT id, public_key FROM gateways WHERE id IN ({_marks(part)})",
                    tuple(part),
                )
                out.update({str(r[0]): str(r[1]) for r in rows})
        return out

    # -- events

    async def insert_event(self, ev: NewEvent, now_ms: int) -> InsertResult:
        async with self._tx() as db:
            (result,) = await insert_events(db, [ev], now_ms)
        return result

    async def get_event(self, event_id: str) -> Event | None:
        async with self._tx(write=False) as db:
            row = await self._one(
                db, f"SELECT {_EVENT_COLS} FROM alarms WHERE id = ?", (event_id,)
            )
        return None if row is None else _event(row)

    async def list_events(
        self,
        *,
        state: str | None = None,
        village: str | None = None,
        kind: str | None = None,
        gw: str | None = None,
        since: int | None = None,
        limit: int = 100,
        active: bool = False,
    ) -> list[Event]:
        """Newest first (by the centre's receive time). `active`: only the alarms staff still
        have to handle (open, acked, dispatched; never a test press)."""
        where: list[str] = []
        args: list[Any] = []
        if active:
            where.append(f"state IN ({_marks(ACTIVE)})")
            args.extend(ACTIVE)
        for col, value in (("state", state), ("village", village), ("kind", kind), ("gw", gw)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        if since is not None:
            where.append("received_at >= ?")
            args.append(since)
        sql = f"SELECT {_EVENT_COLS} FROM alarms"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_at DESC, id DESC LIMIT ?"
        args.append(max(1, min(limit, MAX_LIMIT)))
        async with self._tx(write=False) as db:
            rows = await self._all(db, sql, tuple(args))
        return [_event(r) for r in rows]

    async def ack_event(
        self,
        event_id: str,
        by: str,
        note: str,
        at: int,
        make_downlink: Callable[[Event], tuple[str, bytes]],
    ) -> AckResult:
        """Acknowledge an open alarm in a transaction of its own (see `ack_in`)."""
        async with self._tx() as db:
            ev = await get_event_in(db, event_id)
            return await ack_in(db, ev, by, note, at, make_downlink)

    async def timeline(self, event_id: str) -> list[timeline.Step]:
        """The event's steps, oldest first; raises NotFound for an unknown id."""
        async with self._tx(write=False) as db:
            await get_event_in(db, event_id)
            return await timeline.steps(db, event_id)

    # -- downlinks the gateways have not yet confirmed (§6.6): staff acks, broadcast copies

    async def pending_downlinks(self) -> list[Downlink]:
        async with self._tx(write=False) as db:
            rows = await self._all(db, f"SELECT {_DOWNLINK_COLS} FROM downlinks ORDER BY id", ())
        return [_downlink(r) for r in rows]

    async def delete_downlink(self, downlink_id: int) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM downlinks WHERE id = ?", (downlink_id,))

    async def count_downlinks(self) -> int:
        async with self._tx(write=False) as db:
            row = await self._one(db, "SELECT COUNT(*) FROM downlinks", ())
        return int(row[0])
