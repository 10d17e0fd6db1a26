"""The append-only audit log: who did what, when. The table (store migration 3) refuses UPDATE
and DELETE by trigger. `record` runs inside the caller's transaction, so an action and its audit
line commit together or not at all."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

from centre.auth import Principal


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: int
    actor: str  # username, or "system" / "device" / "cli:<user>" for what no session did
    actor_id: int | None
    address: str
    action: str  # e.g. "login", "login_failed", "alarm.ack", "broadcast.create", "user.add"
    target: str  # e.g. the alarm's, broadcast's, household's or account's id
    detail: dict[str, Any]


async def record(
    db: aiosqlite.Connection,
    at: int,
    actor: Principal | str,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    address: str = "",
) -> None:
    name, actor_id = (actor.username, actor.staff_id) if isinstance(actor, Principal) else (actor, None)
    await db.execute(
        "INSERT INTO audit (at, actor, actor_id, address, action, target, detail)"
        " VALUES (?,?,?,?,?,?,?)",
        (at, name, actor_id, address, action, target,
         json.dumps(detail or {}, ensure_ascii=False, separators=(",", ":"))),
    )


def entry(row: Any) -> AuditEntry:
    return AuditEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]))


COLUMNS = "id, at, actor, actor_id, address, action, target, detail"
