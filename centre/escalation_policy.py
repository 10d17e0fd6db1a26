"""The escalation policy: when a chain starts, whom it asks, in what order, for how long.

One policy for the township (the defaults from the centre's configuration, overridden by what
an admin stored), overridden per village, overridden per household: each layer names only the
fields it changes. Stored in table `escalation_policy` (store migration "escalation"), one row
per scope: `township`, `village:<id>`, `household:<id>`.

The order is a list of groups of contact kinds. A group of several kinds joined by `+`
(`leader+grid`) is one step: every contact of those kinds gets the SMS at once. A group of one
kind (`family`) is one step per contact of that kind, in the card's order. Contacts without a
phone number are left out; a step with nobody in it is skipped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import aiosqlite

from centre.escalation_sms import normalise_phone

KINDS = ("leader", "grid", "family", "doctor")
DEFAULT_ORDER = ("leader+grid", "family", "doctor")
MAX_ROUNDS = 10
MIN_T_S = 1.0
MAX_T_S = 3600.0
FIELDS = ("enabled", "t1_s", "t2_s", "order", "rounds")


class PolicyError(ValueError):
    """A policy field has a value the chain cannot use; the message names the field."""


@dataclass(frozen=True)
class Policy:
    enabled: bool = True
    t1_s: float = 60.0  # not acknowledged at the centre within T1: the chain starts
    t2_s: float = 60.0  # each step waits this long for a confirmation
    order: tuple[str, ...] = DEFAULT_ORDER
    rounds: int = 3  # the whole order is tried this many times, then staff are alerted

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["order"] = list(self.order)
        return d


@dataclass(frozen=True)
class Contact:
    kind: str
    name: str
    phone: str
    relation: str = ""


def check_override(data: dict[str, Any]) -> dict[str, Any]:
    """A validated copy of a partial policy (only FIELDS; each field checked)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in FIELDS:
            raise PolicyError(f"unknown policy field {key!r}; fields: {', '.join(FIELDS)}")
        if value is None:
            continue
        if key == "enabled":
            if not isinstance(value, bool):
                raise PolicyError("enabled must be true or false")
        elif key in ("t1_s", "t2_s"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PolicyError(f"{key} must be a number of seconds")
            if not MIN_T_S <= value <= MAX_T_S:
                raise PolicyError(f"{key} must be between {MIN_T_S:g} and {MAX_T_S:g} seconds")
            value = float(value)
        elif key == "rounds":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ROUNDS:
                raise PolicyError(f"rounds must be a whole number from 1 to {MAX_ROUNDS}")
        elif key == "order":
            value = _check_order(value)
        out[key] = value
    return out


def _check_order(value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not value:
        raise PolicyError(
            "order must be a non-empty list of contact kinds or kinds joined by '+', "
            "e.g. [\"leader+grid\", \"family\", \"doctor\"]"
        )
    seen: set[str] = set()
    groups: list[str] = []
    for group in value:
        if not isinstance(group, str):
            raise PolicyError("order: every entry must be a string")
        kinds = [k.strip() for k in group.split("+")]
        for k in kinds:
            if k not in KINDS:
                raise PolicyError(f"order: unknown contact kind {k!r}; kinds: {', '.join(KINDS)}")
            if k in seen:
                raise PolicyError(f"order: contact kind {k!r} appears twice")
            seen.add(k)
        groups.append("+".join(kinds))
    return groups


def apply(policy: Policy, override: dict[str, Any]) -> Policy:
    changes = dict(override)
    if "order" in changes:
        changes["order"] = tuple(changes["order"])
    return replace(policy, **changes)


def township_scope() -> str:
    return "township"


def village_scope(village: str) -> str:
    return f"village:{village}"


def household_scope(household: str) -> str:
    return f"household:{household}"


async def load_overrides(db: aiosqlite.Connection) -> dict[str, dict[str, Any]]:
    """Every stored scope's override."""
    async with db.execute("SELECT scope, settings FROM escalation_policy") as cur:
        rows = await cur.fetchall()
    return {str(r[0]): json.loads(r[1]) for r in rows}


async def put_override(
    db: aiosqlite.Connection, scope: str, override: dict[str, Any], at: int, by: str
) -> None:
    await db.execute(
        "INSERT INTO escalation_policy (scope, settings, updated_at, updated_by) VALUES (?,?,?,?)"
        " ON CONFLICT (scope) DO UPDATE SET settings = excluded.settings,"
        " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        (scope, json.dumps(override, ensure_ascii=False), at, by),
    )


async def delete_override(db: aiosqlite.Connection, scope: str) -> bool:
    cur = await db.execute("DELETE FROM escalation_policy WHERE scope = ?", (scope,))
    return cur.rowcount > 0


def effective(
    defaults: Policy, overrides: dict[str, dict[str, Any]], village: str, household: str
) -> Policy:
    """The policy for one household: defaults, then township, village, household overrides."""
    policy = defaults
    for scope in (township_scope(), village_scope(village), household_scope(household)):
        if scope in overrides:
            policy = apply(policy, overrides[scope])
    return policy


def plan(order: tuple[str, ...] | list[str], contacts: list[Contact]) -> list[list[Contact]]:
    """The steps of one round: lists of contacts that get the SMS at once."""
    steps: list[list[Contact]] = []
    for group in order:
        kinds = group.split("+")
        members = [c for c in contacts if c.kind in kinds and c.phone.strip()]
        if len(kinds) > 1:
            step: list[Contact] = []
            phones: set[str] = set()
            for c in members:
                number = normalise_phone(c.phone)
                if number not in phones:  # one person both leader and grid worker: one SMS
                    phones.add(number)
                    step.append(c)
            if step:
                steps.append(step)
        else:
            steps.extend([c] for c in members)
    return steps
