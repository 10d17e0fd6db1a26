"""Broadcasts and their per-speaker deliveries in the gateway's SQLite store.

Every accepted broadcast id is kept for good: it is the replay rule (§8.1.1). A delivery is one
speaker's copy; its `state` is the gateway's or the speaker's latest word on it, and `reported`
says whether the centre has that state yet. Writes go through the store's group-commit writer.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

from gateway.bcpolicy import FINAL_STATES, Broadcast, to_row
from gateway.store import Store

BC_SCHEMA = """
CREATE TABLE IF NOT EXISTS broadcasts (
    id TEXT PRIMARY KEY,
    body_json TEXT NOT NULL,
    msg_type TEXT NOT NULL,
    pri INTEGER NOT NULL,
    start_at INTEGER,
    expires INTEGER NOT NULL,
    accepted_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    bc TEXT NOT NULL,
    device TEXT NOT NULL,
    state TEXT NOT NULL,
    at INTEGER NOT NULL,
    sent_at INTEGER,
    sends INTEGER NOT NULL DEFAULT 0,
    reported INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bc, device)
);
CREATE INDEX IF NOT EXISTS deliveries_unreported ON deliveries(bc) WHERE reported = 0;
CREATE INDEX IF NOT EXISTS deliveries_device ON deliveries(device);
"""

_FINAL = ",".join(f"'{s}'" for s in FINAL_STATES)
# States in which a copy should still reach the speaker.
_UNDELIVERED = "'pending','queued','offline'"


@dataclass(frozen=True)
class Delivery:
    bc: str
    device: str
    state: str
    at: int
    sent_at: int | None
    pri: int
    expires: int
    start_at: int | None


@dataclass(frozen=True)
class Report:
    bc: str
    device: str
    state: str
    at: int


class BroadcastStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._bodies: dict[str, dict[str, Any]] = {}

    async def init(self) -> None:
        await self.store.db.executescript(BC_SCHEMA)

    # -- writes

    def accept(
        self, bc: Broadcast, devices: list[str], offline: set[str], now: int
    ) -> asyncio.Future[bool]:
        """Record a new broadcast and one delivery per speaker, in one transaction. False if
        the id was accepted before (a replay)."""
        body = json.dumps(to_row(bc), ensure_ascii=False, separators=(",", ":"))
        rows = [(bc.id, d, "offline" if d in offline else "pending", now) for d in devices]

        async def op(db: aiosqlite.Connection) -> bool:
            got = await db.execute_fetchall(
                "INSERT OR IGNORE INTO broadcasts(id, body_json, msg_type, pri, start_at, expires,"
                " accepted_at) VALUES (?,?,?,?,?,?,?) RETURNING id",
                (bc.id, body, bc.msg_type, bc.priority, bc.start, bc.expires, now),
            )
            if not list(got):
                return False
            await db.executemany(
                "INSERT INTO deliveries(bc, device, state, at) VALUES (?,?,?,?)", rows
            )
            return True

        return self.store.submit(op)

    def set_state(
        self, bc: str, device: str, state: str, at: int, *, only_from: tuple[str, ...] = ()
    ) -> asyncio.Future[bool]:
        """Move one delivery to `state` (optionally only from the given states). True if it moved."""
        cond = f" AND state IN ({','.join('?' for _ in only_from)})" if only_from else ""

        async def op(db: aiosqlite.Connection) -> bool:
            got = await db.execute_fetchall(
                f"UPDATE deliveries SET state=?, at=?, reported=0 WHERE bc=? AND device=?"
                f" AND state<>?{cond} RETURNING bc",
                (state, at, bc, device, state, *only_from),
            )
            return bool(list(got))

        return self.store.submit(op)

    def mark_sent(self, items: list[tuple[str, str]], at: int) -> asyncio.Future[None]:
        """Copies went out: pending/offline become queued (reported to the centre as such)."""

        async def op(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "UPDATE deliveries SET sent_at=?, sends=sends+1,"
                " reported=CASE WHEN state='queued' THEN reported ELSE 0 END,"
                " at=CASE WHEN state='queued' THEN at ELSE ? END,"
                " state=CASE WHEN state IN ('pending','offline') THEN 'queued' ELSE state END"
                " WHERE bc=? AND device=?",
                [(at, at, bc, dev) for bc, dev in items],
            )

        return self.store.submit(op)

    def mark_offline(self, device: str, at: int) -> asyncio.Future[int]:
        """A speaker went away: copies it has not confirmed are now waiting for it."""

        async def op(db: aiosqlite.Connection) -> int:
            got = await db.execute_fetchall(
                "UPDATE deliveries SET state='offline', at=?, reported=0"
                " WHERE device=? AND state IN ('pending','queued') RETURNING bc",
                (at, device),
            )
            return len(list(got))

        return self.store.submit(op)

    def cancel_undelivered(self, refs: tuple[str, ...], at: int) -> asyncio.Future[list[str]]:
        """A Cancel or Update: copies of the referenced broadcasts that never reached their
        speaker are cancelled here. Returns the devices still holding one (they get the Cancel)."""
        marks = ",".join("?" for _ in refs)

        async def op(db: aiosqlite.Connection) -> list[str]:
            await db.execute(
                f"UPDATE deliveries SET state='cancelled', at=?, reported=0"
                f" WHERE bc IN ({marks}) AND state IN ('pending','offline')",
                (at, *refs),
            )
            rows = await db.execute_fetchall(
                f"SELECT DISTINCT device FROM deliveries WHERE bc IN ({marks})"
                f" AND state NOT IN ({_FINAL})",
                refs,
            )
            return [str(r[0]) for r in rows]

        return self.store.submit(op)

    def expire_due(self, now: int) -> asyncio.Future[int]:
        """Copies not yet at their speaker when the broadcast expires are never sent (§8.1)."""

        async def op(db: aiosqlite.Connection) -> int:
            got = await db.execute_fetchall(
                f"UPDATE deliveries SET state='expired', at=?, reported=0"
                f" WHERE state IN ({_UNDELIVERED})"
                f" AND bc IN (SELECT id FROM broadcasts WHERE expires<=?) RETURNING bc",
                (now, now),
            )
            return len(list(got))

        return self.store.submit(op)

    def mark_reported(self, reports: list[Report]) -> asyncio.Future[None]:
        async def op(db: aiosqlite.Connection) -> None:
            # Only if the state has not moved again since it was sent.
            await db.executemany(
                "UPDATE deliveries SET reported=1 WHERE bc=? AND device=? AND state=? AND at=?",
                [(r.bc, r.device, r.state, r.at) for r in reports],
            )

        return self.store.submit(op)

    # -- reads

    async def body(self, bc_id: str) -> dict[str, Any] | None:
        cached = self._bodies.get(bc_id)
        if cached is not None:
            return cached
        rows = await self.store.db.execute_fetchall(
            "SELECT body_json FROM broadcasts WHERE id=?", (bc_id,)
        )
        for r in rows:
            body: dict[str, Any] = json.loads(r[0])
            if len(self._bodies) > 256:
                self._bodies.clear()
            self._bodies[bc_id] = body
            return body
        return None

    async def known(self, bc_id: str) -> bool:
        rows = await self.store.db.execute_fetchall("SELECT 1 FROM broadcasts WHERE id=?", (bc_id,))
        return bool(list(rows))

    async def to_send(self, now: int, resend_before: int, device: str | None = None) -> list[Delivery]:
        """Copies due to go out: never sent (and started), or sent before `resend_before` with no
        word from the speaker; most urgent first. Offline speakers only when `device` names one."""
        where = (
            "d.state IN ('pending','queued') AND (d.sent_at IS NULL OR d.sent_at<?)"
            if device is None
            else "d.device=? AND d.state IN ('pending','queued','offline')"
        )
        args: tuple[Any, ...] = (resend_before,) if device is None else (device,)
        rows = await self.store.db.execute_fetchall(
            "SELECT d.bc, d.device, d.state, d.at, d.sent_at, b.pri, b.expires, b.start_at"
            " FROM deliveries d JOIN broadcasts b ON b.id=d.bc"
            f" WHERE {where} AND b.expires>? AND (b.start_at IS NULL OR b.start_at<=?)"
            " ORDER BY b.pri, b.accepted_at, d.device LIMIT 5000",
            (*args, now, now),
        )
        return [Delivery(*r) for r in rows]

    async def unreported(self, limit: int) -> list[Report]:
        """States the centre has not heard yet. `pending` (stored here, not yet sent towards
        the speaker) is not a §8.3 state: it is reported once it is `queued` or `offline`."""
        rows = await self.store.db.execute_fetchall(
            "SELECT bc, device, state, at FROM deliveries WHERE reported=0 AND state<>'pending'"
            " ORDER BY bc, at LIMIT ?",
            (limit,),
        )
        return [Report(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    async def delivery_state(self, bc: str, device: str) -> str | None:
        rows = await self.store.db.execute_fetchall(
            "SELECT state FROM deliveries WHERE bc=? AND device=?", (bc, device)
        )
        for r in rows:
            return str(r[0])
        return None

    async def counts(self) -> dict[str, int]:
        rows = await self.store.db.execute_fetchall(
            "SELECT state, COUNT(*) FROM deliveries GROUP BY state"
        )
        return {str(r[0]): int(r[1]) for r in rows}
