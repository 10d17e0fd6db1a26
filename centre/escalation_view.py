"""An alarm's escalation chain as the console shows it: `GET /api/alarms/{id}/escalation`
(docs/centre.md, Escalation). Reads only."""

from __future__ import annotations

from typing import Any

import aiosqlite

from centre import escalation_policy as ep
from centre.escalation import CHAIN_COLS, MSG_COLS, chain_row, message_json
from centre.store import fetch_all, fetch_one


async def view(
    db: aiosqlite.Connection, alarm_id: str, defaults: ep.Policy
) -> dict[str, Any] | None:
    """An alarm's chain as the console shows it (None: no such alarm). Without a chain yet,
    state `waiting` (open: it starts at `starts_at` unless staff acknowledge first) or `none`."""
    alarm = await fetch_one(
        db, "SELECT kind, state, village, household, received_at FROM alarms WHERE id = ?",
        (alarm_id,),
    )
    if alarm is None:
        return None
    row = await fetch_one(
        db,
        f"SELECT {CHAIN_COLS}, created_at, ended_at, end_reason, confirmed_by "
        "FROM escalations WHERE alarm = ?",
        (alarm_id,),
    )
    if row is None:
        overrides = await ep.load_overrides(db)
        policy = ep.effective(defaults, overrides, alarm[2], alarm[3])
        waiting = alarm[0] == "alarm" and alarm[1] == "open" and policy.enabled
        return {
            "alarm": alarm_id, "state": "waiting" if waiting else "none",
            "starts_at": alarm[4] + int(policy.t1_s * 1000) if waiting else None,
            "policy": policy.to_json(), "steps": [], "messages": [], "replies": [],
            "confirmed_by": None, "started_at": None, "ended_at": None, "end_reason": None,
            "step": None, "round": None, "step_due": None,
        }
    chain = chain_row(row[:7])
    step = min(chain.step, max(0, chain.total_steps - 1))
    msgs = [message_json(r) for r in await fetch_all(
        db, f"SELECT {MSG_COLS} FROM escalation_messages WHERE alarm = ? ORDER BY id", (alarm_id,)
    )]
    replies = [
        {"id": r[0], "at": r[1], "number": r[2], "text": r[3], "message": r[4],
         "confirms": bool(r[5])}
        for r in await fetch_all(
            db, "SELECT id, at, number, body, message, confirms FROM escalation_replies "
            "WHERE alarm = ? ORDER BY id", (alarm_id,),
        )
    ]
    confirmed = next((m for m in msgs if m["id"] == row[10]), None)
    per_round = max(1, len(chain.plan))
    return {
        "alarm": alarm_id,
        "state": chain.state,
        "starts_at": None,
        "started_at": row[7],
        "ended_at": row[8],
        "end_reason": row[9],
        "policy": chain.policy.to_json(),
        "steps": [[{"kind": c.kind, "name": c.name, "relation": c.relation, "phone": c.phone}
                   for c in s] for s in chain.plan],
        "step": step % per_round + 1 if chain.plan else None,
        "round": step // per_round + 1 if chain.plan else None,
        "step_due": chain.step_due,
        "confirmed_by": None if confirmed is None else {
            k: confirmed[k] for k in ("id", "kind", "name", "relation", "phone", "confirmed_at")
        },
        "messages": msgs,
        "replies": replies,
    }
