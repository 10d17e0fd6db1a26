"""An alarm's timeline: every step of its life, in order, as staff see it on the console.

Rows live in table `alarm_timeline` (alarm, at, kind, actor, detail JSON). Each is written in the
same transaction as the change it records, by whoever makes the change: ingest (`received`,
`cancelled`), staff through `centre.lifecycle` (`acked`, `dispatched`, `resolved`), the
escalation chain (`escalation_started`, `sms_sent`, ...). So a step is on the timeline exactly
when it happened, never before its commit nor lost after it.

Kinds are free text to this module (each writer owns its own); `at` is the centre's clock
(Unix ms); `actor` is a staff member's display name, or "device" / "system" for what no person
did. Rows are listed by time, then by the order they were written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

DEVICE = "device"  # the actor of what the button did: pressed, cancelled
SYSTEM = "system"  # the actor of what the centre did by itself

# Kinds written by ingest and the alarm's lifecycle (escalation adds its own).
RECEIVED = "received"
ACKED = "acked"
DISPATCHED = "dispatched"
RESOLVED = "resolved"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class Step:
    at: int
    kind: str
    actor: str
    detail: dict[str, Any]


def _json(detail: dict[str, Any] | None) -> str:
    return json.dumps(detail or {}, ensure_ascii=False, separators=(",", ":"))


async def add(
    db: aiosqlite.Connection,
    alarm_id: str,
    at: int,
    kind: str,
    actor: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one step, inside the caller's transaction."""
    await db.execute(
        "INSERT INTO alarm_timeline (alarm, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
        (alarm_id, at, kind, actor, _json(detail)),
    )


async def add_many(
    db: aiosqlite.Connection, steps: Sequence[tuple[str, int, str, str, dict[str, Any] | None]]
) -> None:
    """Append (alarm_id, at, kind, actor, detail) steps in one statement (ingest's group
    commit: a batch of events costs one round trip here, not one per event)."""
    if steps:
        await db.executemany(
            "INSERT INTO alarm_timeline (alarm, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
            [(a, at, kind, actor, _json(detail)) for a, at, kind, actor, detail in steps],
        )


async def steps(db: aiosqlite.Connection, alarm_id: str) -> list[Step]:
    """The alarm's steps, oldest first (ties in time keep the order they were written)."""
    async with db.execute(
        "SELECT at, kind, actor, detail FROM alarm_timeline WHERE alarm = ? ORDER BY at, id",
        (alarm_id,),
    ) as cur:
        rows = await cur.fetchall()
    return [Step(int(r[0]), str(r[1]), str(r[2]), json.loads(r[3])) for r in rows]
