"""The gateway's SQLite store: device registry state, the event outbox, group commit.

Durability rule (DESIGN.md): an event is acknowledged to its device only after the
transaction holding it has committed with WAL and synchronous=FULL. Writes are queued to one
writer task that commits whatever has gathered in a single transaction (group commit), so a
burst of presses costs a few fsyncs, not one each.

One failing operation fails only itself: each runs under its own SAVEPOINT inside the group
transaction, and whatever it raises (not only sqlite3.Error) is rolled back to that savepoint and
given to its future alone as a StoreError, while the rest of the batch commits. A listener that
raises is logged and skipped. The writer task itself runs under a supervisor that restarts it if
it ever ends, so a fault never leaves later writes waiting forever.

A full disk (SQLITE_FULL) fails writes with StoreFullError, so that callers can tell it from a
fault of one operation; `health` says whether the last write committed, and the gateway's
heartbeat carries it to the centre (protocol §6.5 `store`). Writes resume by themselves once
space is freed: SQLite rolled the failed transaction back, and the next one starts afresh.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from device_fw import okproto
from gateway.errors import StoreError, StoreFullError
from transport.keys import private_db, private_dir

log = logging.getLogger("onekey.gateway.store")

SCHEMA_VERSION = 1
MAX_BATCH = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    key_hex TEXT NOT NULL,
    role TEXT NOT NULL,
    village TEXT NOT NULL,
    household TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    hb_counter INTEGER NOT NULL DEFAULT 0,
    event_floor INTEGER NOT NULL DEFAULT 0,
    last_seen INTEGER,
    status_json TEXT,
    groups TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    counter INTEGER NOT NULL,
    kind TEXT NOT NULL,
    ref INTEGER,
    village TEXT NOT NULL,
    household TEXT NOT NULL,
    gw_ts INTEGER NOT NULL,
    dev_ts INTEGER,
    dev_up INTEGER,
    state TEXT NOT NULL,
    acked_by TEXT,
    updated_at INTEGER NOT NULL,
    UNIQUE (device, counter)
);
CREATE INDEX IF NOT EXISTS events_outbox ON events(seq) WHERE state = 'stored';
CREATE TABLE IF NOT EXISTS supervision (
    device TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    low_battery INTEGER NOT NULL DEFAULT 0,
    fault TEXT,
    tamper INTEGER NOT NULL DEFAULT 0,
    last_seen INTEGER,
    bat INTEGER,
    fw TEXT,
    changed_at INTEGER NOT NULL
);
"""

# Columns added after the first release; each is applied once to older databases.
COLUMN_MIGRATIONS = (
    "ALTER TABLE devices ADD COLUMN groups TEXT NOT NULL DEFAULT ''",
    # The power profile chosen at provisioning and the device's heartbeat or check-in period
    # (0: the profile's default from the gateway's configuration); docs/gateway.md, Supervision.
    "ALTER TABLE devices ADD COLUMN power TEXT NOT NULL DEFAULT 'mains'",
    "ALTER TABLE devices ADD COLUMN period_s INTEGER NOT NULL DEFAULT 0",
    # A supervision event's `sup` object (protocol §6.2.1), JSON; NULL for the device kinds.
    "ALTER TABLE events ADD COLUMN detail TEXT",
)


async def add_column(db: aiosqlite.Connection, sql: str) -> None:
    try:
        await db.execute(sql)
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):
            raise


# Event states at the gateway, in the only order they may move.
STATES = ("stored", "received", "acked")

T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class EventRecord:
    device: str
    counter: int
    kind: str
    ref: int | None
    village: str
    household: str
    gw_ts: int
    dev_ts: int | None
    dev_up: int | None
    detail: str | None = None  # a supervision event's `sup` (§6.2.1), JSON


@dataclass(frozen=True)
class SupervisionRow:
    """A device's durable supervision state (the `supervision` table)."""

    device: str
    state: str
    low_battery: bool
    fault: str | None
    tamper: bool
    last_seen: int | None
    bat: int | None
    fw: str | None


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    record: EventRecord
    state: str
    acked_by: str | None


@dataclass(frozen=True)
class InsertResult:
    seq: int
    state: str
    new: bool
    acked_by: str | None


@dataclass(frozen=True)
class Refused:
    """An event the store would not take: `reason` is a §3.4 reason (`replay`), `detail` says
    why, for the log."""

    reason: str
    detail: str


@dataclass(frozen=True)
class StoreHealth:
    """What the writes did lately (§6.5 `store`): `ok` while the last write committed; from a
    write that failed until one commits again, not ok, `full` if that was a full disk, and
    `failed` the operations that failed since the last commit."""

    ok: bool = True
    full: bool = False
    failed: int = 0


_Op = Callable[[aiosqlite.Connection], Awaitable[Any]]

# A writer that ends (it never should) is started again after this long.
WRITER_RESTART_S = 0.5
# The meta row that holds the end of the gateway's reserved downlink counter block (§4.2).
DOWNLINK_COUNTER = "downlink_counter_end"


class _Pending:
    """One queued operation, its future, and how it changes the outbox depth once committed."""

    __slots__ = ("fut", "op", "outbox_delta")

    def __init__(self, op: _Op, fut: asyncio.Future[Any]) -> None:
        self.op = op
        self.fut = fut
        self.outbox_delta = 0


class Store:
    """Owns the SQLite connection and the single writer task. `start()` opens; `close()` ends."""

    def __init__(
        self, path: Path, *, observe_commit: Callable[[float], None] | None = None
    ) -> None:
        self.path = path
        # Told the duration (seconds, BEGIN to COMMIT with its fsync) of each committed batch.
        self.observe_commit = observe_commit
        self._db: aiosqlite.Connection | None = None
        # A second connection for the forwarder's reads: in WAL mode it sees only committed
        # rows, so no event leaves for the centre before the transaction that holds it commits
        # (the writer's connection would show rows of its open transaction).
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._batch: list[_Pending] = []
        self._current: _Pending | None = None
        self.commits = 0
        self.committed_ops = 0
        self.failed_ops = 0
        self.writer_restarts = 0
        # Events not yet received by the centre, kept exact on every commit (the outbox gauge).
        self.outbox_count = 0
        self.stored_listeners: list[Callable[[], None]] = []
        self.health = StoreHealth()
        # Called when `health.ok` or `health.full` changes (the heartbeat goes out at once).
        self.health_listeners: list[Callable[[], None]] = []

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def start(self) -> None:
        # gateway.db holds the device keys: its directory 0700, the file 0600 before sqlite
        # opens it (SQLite gives -wal and -shm the database file's mode), whatever the umask.
        private_dir(self.path.parent, tighten=True)
        private_db(self.path)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=FULL")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._db.executescript(SCHEMA)
            for sql in COLUMN_MIGRATIONS:
                await add_column(self._db, sql)
            await self._db.execute(
                "INSERT OR IGNORE INTO meta(name, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self.outbox_count = await self.outbox_depth()
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open gateway database {self.path}: {exc}") from None
        self._writer = asyncio.create_task(self._supervise_writer(), name="gateway-store-writer")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
            self._writer = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    # -- group commit

    def submit(self, op: _Op) -> asyncio.Future[Any]:
        """Queue a write; it commits with whatever else is waiting (group commit)."""
        return self._submit(op)

    def _submit(self, op: _Op) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(op, fut))
        return fut

    async def _supervise_writer(self) -> None:
        """The writer under supervision: if it ever ends, what it held fails and it restarts."""
        while True:
            try:
                await self._write_loop()
                log.error("event=task_ended task=store_writer restart_in=%.1fs", WRITER_RESTART_S)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    self._fail_batch(StoreError("the gateway store was closed before this write"))
                    raise
                # An operation raised CancelledError without the writer being cancelled.
                log.error("event=task_crashed task=store_writer error=CancelledError")
                self._fail_batch(StoreError(f"write to {self.path} was cancelled"))
            except Exception as exc:
                log.exception(
                    "event=task_crashed task=store_writer restart_in=%.1fs", WRITER_RESTART_S
                )
                self._fail_batch(
                    StoreError(f"write to {self.path} failed, nothing in this batch stored: {exc!r}")
                )
            self.writer_restarts += 1
            await self._rollback()
            await asyncio.sleep(WRITER_RESTART_S)

    def _fail_batch(self, err: StoreError) -> None:
        for p in self._batch:
            if not p.fut.done():
                p.fut.set_exception(err)
        self._batch = []

    async def _rollback(self) -> None:
        db = self._db
        if db is None or not db.in_transaction:
            return
        try:
            await db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error("event=store_rollback_failed error=%r", str(exc))

    async def _write_loop(self) -> None:
        while True:
            self._batch = [await self._queue.get()]
            # One turn of the loop lets handlers that are already running add their writes.
            await asyncio.sleep(0)
            while len(self._batch) < MAX_BATCH and not self._queue.empty():
                self._batch.append(self._queue.get_nowait())
            batch = self._batch
            if await self._commit(batch):
                self._notify()
            self._batch = []

    async def _commit(self, batch: list[_Pending]) -> bool:
        """One transaction for the batch, one SAVEPOINT per operation. True if it committed."""
        db = self.db
        results: list[tuple[_Pending, Any]] = []
        full: BaseException | None = None  # an operation found the disk full
        op_failures = 0
        started = time.perf_counter()
        changes = db.total_changes
        try:
            await db.execute("BEGIN IMMEDIATE")
            for p in batch:
                if p.fut.done():  # the caller gave up (cancelled): nothing to do
                    continue
                # Savepoints of successful operations are left to the COMMIT to release: one
                # statement per operation instead of two. ROLLBACK TO names the newest of them.
                await db.execute("SAVEPOINT op")
                self._current = p
                try:
                    results.append((p, await p.op(db)))
                except Exception as exc:
                    self._current = None
                    p.outbox_delta = 0
                    if _is_full(exc):
                        full = exc  # SQLite may have rolled back the whole transaction
                    # Undo what this operation wrote; the others in the batch still commit.
                    # If SQLite already rolled the whole transaction back (disk full, I/O
                    # error), ROLLBACK TO raises and the batch fails as a whole below.
                    await db.execute("ROLLBACK TO op")
                    self.failed_ops += 1
                    log.error(
                        "event=store_op_failed error=%r batch=%d", _describe(exc), len(batch)
                    )
                    err = _store_error(
                        f"write to {self.path} failed: {_describe(exc)}", exc, self.path
                    )
                    err.__cause__ = exc
                    op_failures += 1
                    p.fut.set_exception(err)
                    p.fut.exception()  # retrieved: a caller that dropped it is not warned
                self._current = None
            await db.execute("COMMIT")
        except sqlite3.Error as exc:
            await self._rollback()
            cause = full or exc
            err = _store_error(
                f"write to {self.path} failed, nothing in this batch stored: {cause}", cause, self.path
            )
            log.error(
                "event=store_write_failed batch=%d full=%d error=%r",
                len(batch), isinstance(err, StoreFullError), str(cause),
            )
            failed = 0
            for p in batch:
                if not p.fut.done():
                    p.fut.set_exception(err)
                    failed += 1
            self._set_health(False, isinstance(err, StoreFullError), failed + op_failures)
            return False
        if self.observe_commit is not None:
            self.observe_commit(time.perf_counter() - started)
        if full is not None:
            # It committed, but one of its operations found the disk full: still unable.
            self._set_health(False, True, op_failures)
        elif db.total_changes != changes:
            # Something was written: a batch of reads alone says nothing (it needs no space).
            self._set_health(True, False, 0)
        self.commits += 1
        self.committed_ops += len(results)
        for p, result in results:
            self.outbox_count += p.outbox_delta
            if not p.fut.done():
                p.fut.set_result(result)
        return True

    def _set_health(self, ok: bool, full: bool, failed: int) -> None:
        old = self.health
        self.health = StoreHealth(ok, full, 0 if ok else old.failed + failed)
        if (old.ok, old.full) == (ok, full):
            return
        if ok:
            log.info("event=store_writable failed_before=%d", old.failed)
        else:
            log.error(
                "event=store_unwritable full=%d free_bytes=%d db=%s",
                full, self.free_bytes(), self.path,
            )
        for listener in list(self.health_listeners):
            try:
                listener()
            except Exception:
                log.exception("event=store_listener_failed listener=%r", listener)

    def free_bytes(self) -> int:
        """Bytes free for the gateway's user on the state directory's filesystem; -1 if
        unknown."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return -1
        return st.f_bavail * st.f_frsize

    def _notify(self) -> None:
        for listener in list(self.stored_listeners):
            try:
                listener()
            except Exception:
                # A listener's fault is its own: the writer goes on.
                log.exception("event=store_listener_failed listener=%r", listener)

    def _outbox_changed(self, delta: int) -> None:
        """Called by an operation, inside the writer: the outbox depth moves by `delta` once
        (and only if) this operation commits."""
        if self._current is not None:
            self._current.outbox_delta += delta

    # -- events

    def insert_event(
        self, rec: EventRecord, *, window: bool = True
    ) -> asyncio.Future[InsertResult | Refused]:
        """Queue an event; the future resolves once it is committed (or was already there:
        a duplicate, answered with its state), or with Refused when its counter is outside the
        device's reorder window (§5.5; `window=False` skips that check)."""

        async def op(db: aiosqlite.Connection) -> InsertResult | Refused:
            # The fast path, one statement: a counter above every stored event of the device.
            rows = await db.execute_fetchall(
                _INSERT_EVENT + " WHERE ? > COALESCE((SELECT MAX(counter) FROM events"
                " WHERE device=?), 0) RETURNING seq",
                (*_event_values(rec), rec.counter, rec.device),
            )
            for row in rows:
                self._outbox_changed(+1)
                return InsertResult(seq=int(row[0]), state="stored", new=True, acked_by=None)
            # At or below the device's high-water mark: a copy of a stored event (§5.2) ...
            old = await db.execute_fetchall(
                "SELECT seq, state, acked_by FROM events WHERE device=? AND counter=?",
                (rec.device, rec.counter),
            )
            for r in old:
                return InsertResult(seq=int(r[0]), state=str(r[1]), new=False, acked_by=r[2])
            # ... or a new one, which only the reorder window lets in (§5.5).
            high = await db.execute_fetchall(
                "SELECT counter, gw_ts FROM events WHERE device=? ORDER BY counter DESC LIMIT 1",
                (rec.device,),
            )
            for h in high:
                if window:
                    try:
                        okproto.check_event_window(rec.counter, int(h[0]), rec.gw_ts - int(h[1]))
                    except okproto.ProtocolError as exc:
                        return Refused(exc.reason, exc.detail)
            rows = await db.execute_fetchall(_INSERT_EVENT + " RETURNING seq", _event_values(rec))
            for row in rows:
                self._outbox_changed(+1)
                return InsertResult(seq=int(row[0]), state="stored", new=True, acked_by=None)
            raise StoreError("event insert returned no row")  # pragma: no cover

        return self._submit(op)

    def advance_state(
        self, device: str, counter: int, state: str, acked_by: str | None = None
    ) -> asyncio.Future[bool]:
        """Move an event forward (stored -> received -> acked). True if it moved."""
        allowed_from = STATES[: STATES.index(state)]

        async def op(db: aiosqlite.Connection) -> bool:
            # One state at a time, oldest first, so that a move out of `stored` (the outbox)
            # is known without reading the row first.
            for old in allowed_from:
                rows = await db.execute_fetchall(
                    "UPDATE events SET state=?, acked_by=COALESCE(?, acked_by), updated_at=?"
                    " WHERE device=? AND counter=? AND state=? RETURNING seq",
                    (state, acked_by, now_ms(), device, counter, old),
                )
                if len(list(rows)) > 0:
                    if old == "stored":
                        self._outbox_changed(-1)
                    return True
            return False

        return self._submit(op)

    def event_states(
        self, device: str, counters: list[int]
    ) -> asyncio.Future[dict[int, tuple[str, str | None]]]:
        """counter -> (state, acked_by) of the device's events among `counters`. It runs in the
        writer and resolves after the commit, so a state it reports is durable (§4.3)."""

        async def op(db: aiosqlite.Connection) -> dict[int, tuple[str, str | None]]:
            if not counters:
                return {}
            marks = ",".join("?" for _ in counters)
            rows = await db.execute_fetchall(
                f"SELECT counter, state, acked_by FROM events WHERE device=? AND counter IN ({marks})",
                (device, *counters),
            )
            return {int(r[0]): (str(r[1]), r[2]) for r in rows}

        return self._submit(op)

    def record_heartbeat(
        self, device: str, counter: int, status_json: str, at: int
    ) -> asyncio.Future[None]:
        async def op(db: aiosqlite.Connection) -> None:
            await db.execute(
                "UPDATE devices SET hb_counter=MAX(hb_counter, ?), status_json=?, last_seen=?"
                " WHERE id=?",
                (counter, status_json, at, device),
            )

        return self._submit(op)

    def record_seen(self, device: str, counter: int, at: int) -> asyncio.Future[None]:
        """A broadcast report: advances the shared status watermark (§8.3) and last_seen."""

        async def op(db: aiosqlite.Connection) -> None:
            await db.execute(
                "UPDATE devices SET hb_counter=MAX(hb_counter, ?), last_seen=? WHERE id=?",
                (counter, at, device),
            )

        return self._submit(op)

    # -- supervision (docs/gateway.md, Supervision; protocol §6.2.1)

    def insert_supervision(
        self, source: str, make: Callable[[int], EventRecord], row: SupervisionRow, at: int
    ) -> asyncio.Future[int]:
        """Queue a supervision event and the device's new supervision state, in one operation:
        both commit or neither does. `make(n)` gives the event for the gateway's next
        supervision counter `n` (one above the highest of `source`'s events, read in the
        writer, so it never repeats). Resolves to the event's outbox seq once committed."""

        async def op(db: aiosqlite.Connection) -> int:
            top = await db.execute_fetchall(
                "SELECT COALESCE(MAX(counter), 0) FROM events WHERE device=?", (source,)
            )
            n = int(next(iter(top))[0]) + 1
            rec = make(n)
            rows = await db.execute_fetchall(
                "INSERT INTO events(device, counter, kind, ref, village, household, gw_ts,"
                " dev_ts, dev_up, state, updated_at, detail)"
                " VALUES (?,?,?,?,?,?,?,?,?,'stored',?,?) RETURNING seq",
                (*_event_values(rec), rec.detail),
            )
            seq = int(next(iter(rows))[0])
            self._outbox_changed(+1)
            await _save_supervision(db, row, at)
            return seq

        return self._submit(op)

    def save_supervision(self, row: SupervisionRow, at: int) -> asyncio.Future[None]:
        """Queue a supervision state change that raises no event (a new reading)."""

        async def op(db: aiosqlite.Connection) -> None:
            await _save_supervision(db, row, at)

        return self._submit(op)

    async def load_supervision(self) -> dict[str, SupervisionRow]:
        # last_seen: the newer of the one saved with the last supervision event and the
        # registry's, which every heartbeat and report updates (record_heartbeat).
        rows = await self.db.execute_fetchall(
            "SELECT s.device, s.state, s.low_battery, s.fault, s.tamper,"
            " NULLIF(MAX(COALESCE(s.last_seen, 0), COALESCE(d.last_seen, 0)), 0), s.bat, s.fw"
            " FROM supervision s LEFT JOIN devices d ON d.id = s.device"
        )
        return {
            str(r[0]): SupervisionRow(
                str(r[0]), str(r[1]), bool(r[2]), r[3], bool(r[4]), r[5], r[6], r[7]
            )
            for r in rows
        }

    # -- meta

    def put_meta_int(self, name: str, value: int) -> asyncio.Future[None]:
        """Durably record an integer setting (committed when the future resolves)."""

        async def op(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO meta(name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (name, str(value)),
            )

        return self._submit(op)

    async def get_meta_int(self, name: str) -> int | None:
        rows = await self.db.execute_fetchall("SELECT value FROM meta WHERE name=?", (name,))
        for r in rows:
            try:
                return int(r[0])
            except ValueError:
                raise StoreError(
                    f"meta {name!r} in {self.path} is {r[0]!r}, not an integer"
                ) from None
        return None

    async def outbox(self, after_seq: int, limit: int) -> list[StoredEvent]:
        """Committed events not yet received by the centre, in order, with seq > after_seq."""
        if self._reader is None:
            raise StoreError("store is not open")
        cur = await self._reader.execute(
            "SELECT seq, device, counter, kind, ref, village, household, gw_ts, dev_ts, dev_up,"
            " state, acked_by, detail FROM events WHERE state='stored' AND seq>? ORDER BY seq"
            " LIMIT ?",
            (after_seq, limit),
        )
        rows = await cur.fetchall()
        await cur.close()
        return [_event(r) for r in rows]

    def recent_progress(
        self, since_ms: int
    ) -> asyncio.Future[list[tuple[str, int, str, str | None]]]:
        """(device, counter, state, acked_by) of events that moved past `stored` since
        `since_ms`: their acks to the device may have been lost with the process or with the
        village broker. Read in the writer, so only committed states are reported."""

        async def op(db: aiosqlite.Connection) -> list[tuple[str, int, str, str | None]]:
            rows = await db.execute_fetchall(
                "SELECT device, counter, state, acked_by FROM events"
                " WHERE state<>'stored' AND updated_at>=? ORDER BY seq",
                (since_ms,),
            )
            return [(str(r[0]), int(r[1]), str(r[2]), r[3]) for r in rows]

        return self._submit(op)

    async def event_counts(self) -> dict[str, int]:
        """Committed events by state (read on the reader connection: never waits on writes)."""
        if self._reader is None:
            raise StoreError("store is not open")
        rows = await self._reader.execute_fetchall(
            "SELECT state, COUNT(*) FROM events GROUP BY state"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def outbox_depth(self) -> int:
        cur = await self.db.execute("SELECT COUNT(*) FROM events WHERE state='stored'")
        row = await cur.fetchone()
        await cur.close()
        return int(row[0]) if row else 0

    async def get_event(self, device: str, counter: int) -> StoredEvent | None:
        cur = await self.db.execute(
            "SELECT seq, device, counter, kind, ref, village, household, gw_ts, dev_ts, dev_up,"
            " state, acked_by, detail FROM events WHERE device=? AND counter=?",
            (device, counter),
        )
        row = await cur.fetchone()
        await cur.close()
        return _event(row) if row else None

    async def fetch_devices(self) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            cur = await self.db.execute(
                "SELECT id, key_hex, role, village, household, enabled, hb_counter, event_floor,"
                " groups, power, period_s FROM devices"
            )
            rows = list(await cur.fetchall())
            await cur.close()
        finally:
            self.db.row_factory = None
        return rows

    async def registry_version(self) -> str:
        cur = await self.db.execute("SELECT value FROM meta WHERE name='registry_version'")
        row = await cur.fetchone()
        await cur.close()
        return str(row[0]) if row else "0"


def _event(r: Any) -> StoredEvent:
    rec = EventRecord(
        device=r[1], counter=r[2], kind=r[3], ref=r[4], village=r[5], household=r[6],
        gw_ts=r[7], dev_ts=r[8], dev_up=r[9], detail=r[12] if len(r) > 12 else None,
    )
    return StoredEvent(seq=int(r[0]), record=rec, state=str(r[10]), acked_by=r[11])


_INSERT_EVENT = (
    "INSERT INTO events(device, counter, kind, ref, village, household, gw_ts, dev_ts, dev_up,"
    " state, updated_at) SELECT ?,?,?,?,?,?,?,?,?,'stored',?"
)


def _event_values(rec: EventRecord) -> tuple[Any, ...]:
    return (
        rec.device, rec.counter, rec.kind, rec.ref, rec.village, rec.household,
        rec.gw_ts, rec.dev_ts, rec.dev_up, rec.gw_ts,
    )


async def _save_supervision(db: aiosqlite.Connection, row: SupervisionRow, at: int) -> None:
    await db.execute(
        "INSERT INTO supervision(device, state, low_battery, fault, tamper, last_seen, bat, fw,"
        " changed_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(device) DO UPDATE SET"
        " state=excluded.state, low_battery=excluded.low_battery, fault=excluded.fault,"
        " tamper=excluded.tamper, last_seen=excluded.last_seen, bat=excluded.bat,"
        " fw=excluded.fw, changed_at=excluded.changed_at",
        (row.device, row.state, int(row.low_battery), row.fault, int(row.tamper),
         row.last_seen, row.bat, row.fw, at),
    )
def _is_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL (a full disk, or max_page_count reached), or ENOSPC itself."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def _store_error(message: str, cause: BaseException, path: Path) -> StoreError:
    if _is_full(cause):
        return StoreFullError(
            f"{message}; the disk holding {path.parent} is full: free space there "
            f"(df -h {path.parent}); writes resume by themselves"
        )
    return StoreError(message)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
