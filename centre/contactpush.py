"""The contact list each gateway keeps for its second path (docs/protocol.md §11), at the centre.

For every enrolled gateway the centre builds, from the household cards of the villages it
serves, the list the gateway needs while cut off: each household's name, address, group,
contacts, and whether it accepts the speakers' local alert. When the list a gateway should hold
changes (a card edited, imported or deleted, a gateway serving another village), the centre
makes a new version (strictly increasing: its clock in ms, or one above the last), signs its
parts with the centre's key and puts them in `downlinks` (state `contacts`), where the ingest
task's pump publishes them like any downlink: at once, again after each reconnect and when the
gateway is heard again, until the gateway confirms the version (`cl` on `up/conf`, §6.6).
A gateway that reconnects says which version it holds; one older than the centre's, with
nothing pending for it, makes the centre publish the current one again.

The tables are this module's own and created here (`CREATE TABLE IF NOT EXISTS`), so that
they need no schema version of `centre.store`: `contact_lists` (per gateway: the version and a
digest of its content) and `household_local_alert` (households that refuse the local alert;
absent: accepts, the default; set with `set_local_alert`, through
`PUT /api/households/{id}/local_alert`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Sequence

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from centre import households
from centre.store import Store, StoreError, now_ms
from protocol import contacts, topics

log = logging.getLogger("onekey.centre.contacts")

# One statement each: `executescript` would commit the caller's transaction.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS contact_lists (gw TEXT PRIMARY KEY, version INTEGER NOT NULL, "
    "digest TEXT)",
    "CREATE TABLE IF NOT EXISTS household_local_alert (household TEXT PRIMARY KEY, "
    "allowed INTEGER NOT NULL)",
)
STATE = "contacts"  # `downlinks.state` of a contact-list part
PERIOD_S = 5.0


def part_id(v: int, part: int) -> str:
    """`downlinks.event_id` of a part: the version zero-padded, so that versions compare as text."""
    return f"contacts:{v:016d}:{part}"


async def ensure_schema(db: aiosqlite.Connection) -> None:
    for sql in SCHEMA:
        await db.execute(sql)


async def set_local_alert(db: aiosqlite.Connection, household: str, allowed: bool) -> None:
    """Whether the household accepts the local alert on the speakers (default: it does)."""
    await ensure_schema(db)
    await db.execute(
        "INSERT INTO household_local_alert (household, allowed) VALUES (?, ?) "
        "ON CONFLICT (household) DO UPDATE SET allowed = excluded.allowed",
        (household, int(allowed)),
    )


async def local_alert_allowed(db: aiosqlite.Connection, household: str) -> bool:
    await ensure_schema(db)
    async with db.execute(
        "SELECT allowed FROM household_local_alert WHERE household = ?", (household,)
    ) as cur:
        row = await cur.fetchone()
    return row is None or bool(row[0])


async def _refusing(db: aiosqlite.Connection) -> set[str]:
    async with db.execute("SELECT household FROM household_local_alert WHERE allowed = 0") as cur:
        return {str(r[0]) for r in await cur.fetchall()}


async def build(db: aiosqlite.Connection, villages: Sequence[str]) -> list[contacts.Household]:
    """The households of `villages`, as the gateway keeps them."""
    refusing = await _refusing(db)
    out: list[contacts.Household] = []
    for village in sorted(set(villages)):
        for card in await households.load_cards(db, village=village):
            out.append(contacts.Household(
                card.id, card.village, card.group, card.name, card.address,
                card.id not in refusing,
                tuple(contacts.Contact(c.kind, c.name, c.phone)
                      for c in card.contacts[: contacts.MAX_CONTACTS]),
            ))
    return out


def digest(items: Sequence[contacts.Household]) -> str:
    blob = json.dumps([contacts.encode_part(contacts.ContactPart("", 1, 1, 1, tuple(items)))],
                      ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


async def confirm_versions(db: aiosqlite.Connection, gw: str, versions: Sequence[int]) -> int:
    """Gateway `gw` holds these versions (§6.6 `cl`), in the caller's transaction: parts of
    them and of older ones leave the outbox. A gateway holding less than the current version,
    with nothing pending for it, gets the current one again (its digest is forgotten, so the
    next refresh makes a new version). Returns how many parts were released."""
    if not versions:
        return 0
    await ensure_schema(db)
    held = max(versions)
    before = db.total_changes
    await db.execute(
        # Every part id of a version <= held sorts below this (';' follows ':').
        "DELETE FROM downlinks WHERE gw = ? AND state = ? AND event_id < ?",
        (gw, STATE, f"contacts:{held:016d};"),
    )
    released = db.total_changes - before
    async with db.execute("SELECT version FROM contact_lists WHERE gw = ?", (gw,)) as cur:
        row = await cur.fetchone()
    if row is not None and int(row[0]) > held:
        async with db.execute(
            "SELECT COUNT(*) FROM downlinks WHERE gw = ? AND state = ?", (gw, STATE)
        ) as cur:
            pending = await cur.fetchone()
        if pending is not None and int(pending[0]) == 0:
            await db.execute("UPDATE contact_lists SET digest = NULL WHERE gw = ?", (gw,))
    return released


class ContactPush:
    """`run()` refreshes every gateway's list every `period_s`; `refresh()` once."""

    def __init__(
        self, store: Store, key: Ed25519PrivateKey, kick: Callable[[], None],
        clock: Callable[[], int] = now_ms, period_s: float = PERIOD_S,
    ) -> None:
        self.store = store
        self.key = key
        self.kick = kick
        self.clock = clock
        self.period_s = period_s

    async def refresh(self) -> list[str]:
        """New versions for the gateways whose list changed; returns their ids."""
        changed: list[str] = []
        gateways = await self.store.list_gateways()
        async with self.store.transaction() as db:
            await ensure_schema(db)
            for g in gateways:
                items = await build(db, sorted(g.serves()))
                d = digest(items)
                async with db.execute(
                    "SELECT version, digest FROM contact_lists WHERE gw = ?", (g.id,)
                ) as cur:
                    row = await cur.fetchone()
                if (row is not None and row[1] == d) or (row is None and not items):
                    continue  # unchanged, or nothing yet for a gateway that never had a list
                v = max(self.clock(), int(row[0]) + 1 if row is not None else 1)
                parts = contacts.signed_parts(self.key, g.id, v, items)
                await db.execute("DELETE FROM downlinks WHERE gw = ? AND state = ?", (g.id, STATE))
                await db.executemany(
                    "INSERT INTO downlinks (gw, event_id, state, topic, payload, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(g.id, part_id(v, p.part), STATE, topics.contacts(g.id), payload, self.clock())
                     for p, payload in parts],
                )
                await db.execute(
                    "INSERT INTO contact_lists (gw, version, digest) VALUES (?, ?, ?) "
                    "ON CONFLICT (gw) DO UPDATE SET version = excluded.version, "
                    "digest = excluded.digest",
                    (g.id, v, d),
                )
                changed.append(g.id)
                # Gateway ids are plain tokens (§1.1): nothing to quote.
                log.info("event=contacts_version gw=%s version=%d households=%d parts=%d",
                         g.id, v, len(items), len(parts))
        if changed:
            self.kick()
        return changed

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except StoreError as exc:
                log.error("event=store_failed on=contacts error=%r", str(exc))
            await asyncio.sleep(self.period_s)
