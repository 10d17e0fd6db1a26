"""Households: who lives behind a household id. Kept at the centre only.

A gateway, and every message on the way, knows a device by its id and the household id it
serves (`h-0012`), nothing more. The names, phone numbers, address and notes that staff need
when an alarm comes in live here, in the centre's SQLite file, in a table of this module's
own (created when first used; the centre's schema version is not touched).

Mount the API in the centre's app::

    from centre.households import households_router
    app.include_router(households_router(config.db_path))

| method | path | what |
| --- | --- | --- |
| GET | /api/households?village=&limit= | households, by id |
| GET | /api/households/{id} | one (404 if unknown) |
| PUT | /api/households/{id} | create or replace it |
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, StringConstraints

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS households (
    id TEXT PRIMARY KEY,
    village TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS households_village ON households (village, id);
"""

HOUSEHOLD_ID = r"^[^\x00-\x1f/]{1,64}$"


@dataclass(frozen=True)
class Household:
    id: str
    village: str
    name: str
    phone: str
    address: str
    notes: str
    updated_at: int


def connect(db_path: Path) -> sqlite3.Connection:
    """A connection to the centre's database with the households table in it."""
    conn = sqlite3.connect(db_path, timeout=10, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


_COLUMNS = "id, village, name, phone, address, notes, updated_at"


def get(conn: sqlite3.Connection, household_id: str) -> Household | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM households WHERE id=?", (household_id,)).fetchone()
    return Household(*row) if row else None


def put(
    conn: sqlite3.Connection,
    household_id: str,
    *,
    village: str = "",
    name: str = "",
    phone: str = "",
    address: str = "",
    notes: str = "",
) -> Household:
    """Creates or replaces the household's record."""
    now = time.time_ns() // 1_000_000
    conn.execute(
        "INSERT INTO households (id, village, name, phone, address, notes, updated_at)"
        " VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET village=excluded.village,"
        " name=excluded.name, phone=excluded.phone, address=excluded.address,"
        " notes=excluded.notes, updated_at=excluded.updated_at",
        (household_id, village, name, phone, address, notes, now),
    )
    return Household(household_id, village, name, phone, address, notes, now)


def list_households(
    conn: sqlite3.Connection, village: str | None = None, limit: int = 1000
) -> list[Household]:
    if village:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM households WHERE village=? ORDER BY id LIMIT ?", (village, limit)
        ).fetchall()
    else:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM households ORDER BY id LIMIT ?", (limit,)).fetchall()
    return [Household(*r) for r in rows]


# -- HTTP


Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)]
Address = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Notes = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9+() -]{0,32}$")]
VillageId = Annotated[str, StringConstraints(pattern=r"^([a-z0-9][a-z0-9-]{0,31})?$")]


class HouseholdIn(BaseModel):
    village: VillageId = ""
    name: Name = Field(default="", description="who lives there")
    phone: Phone = Field(default="", description="whom to call")
    address: Address = ""
    notes: Notes = Field(default="", description="health, access, who holds a key, ...")


class HouseholdOut(BaseModel):
    id: str
    village: str
    name: str
    phone: str
    address: str
    notes: str
    updated_at: int = Field(description="Unix ms of the last change")


def households_router(db_path: Path) -> APIRouter:
    router = APIRouter(prefix="/api/households", tags=["households"])

    def run(fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = connect(db_path)
        try:
            return fn(conn)
        finally:
            conn.close()

    @router.get("", summary="Households, by id")
    async def list_all(
        village: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    ) -> list[HouseholdOut]:
        rows = await asyncio.to_thread(run, lambda c: list_households(c, village, limit))
        return [HouseholdOut(**asdict(h)) for h in rows]

    @router.get("/{household_id}", summary="One household")
    async def get_one(
        household_id: Annotated[str, PathParam(pattern=HOUSEHOLD_ID)],
    ) -> HouseholdOut:
        h = await asyncio.to_thread(run, lambda c: get(c, household_id))
        if h is None:
            raise HTTPException(404, f"no household {household_id}")
        return HouseholdOut(**asdict(h))

    @router.put("/{household_id}", summary="Create or replace a household")
    async def put_one(
        household_id: Annotated[str, PathParam(pattern=HOUSEHOLD_ID)], body: HouseholdIn
    ) -> HouseholdOut:
        h = await asyncio.to_thread(run, lambda c: put(c, household_id, **body.model_dump()))
        return HouseholdOut(**asdict(h))

    return router
