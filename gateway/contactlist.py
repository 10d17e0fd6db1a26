"""The contact list the centre pushes down (protocol §11), kept in the gateway's SQLite so that
the gateway knows whom to text, and which households refuse the local alert, while it is cut
off from the centre.

A version arrives in parts (`ok/v1/gw/{gw}/down/contacts`, signed with the centre's key, which
the gateway pinned at enrolment). Parts are staged in `contact_parts`; once every part of a
version newer than the one held is committed, the list is replaced in one transaction and the
version is confirmed to the centre (`cl` on `up/conf`, §6.6). A version at or below the one
held is a repeat: confirmed again, nothing changes. A part with a bad signature is neither
stored nor confirmed (it may not be the centre's at all).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.store import Store
from protocol import contacts
from protocol.errors import Rejected

log = logging.getLogger("onekey.gateway.contacts")

SCHEMA = """
CREATE TABLE IF NOT EXISTS contact_households (
    id TEXT PRIMARY KEY,
    body_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contact_parts (
    v INTEGER NOT NULL,
    part INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    body_json TEXT NOT NULL,
    PRIMARY KEY (v, part)
);
"""
VERSION = "contacts_version"  # meta row: the version held


@dataclass(frozen=True)
class Outcome:
    puback: bool  # done with: the broker may forget it
    confirm: int | None  # the version to confirm to the centre (§6.6, `cl`)


def _to_json(h: contacts.Household) -> str:
    return json.dumps(
        {"id": h.id, "village": h.village, "group": h.group, "name": h.name, "address": h.address,
         "local_alert": h.local_alert,
         "contacts": [[c.kind, c.name, c.phone] for c in h.contacts]},
        ensure_ascii=False, separators=(",", ":"),
    )


def _from_json(text: str) -> contacts.Household:
    d = json.loads(text)
    return contacts.Household(
        d["id"], d["village"], d["group"], d["name"], d["address"], bool(d["local_alert"]),
        tuple(contacts.Contact(k, n, p) for k, n, p in d["contacts"]),
    )


class ContactList:
    def __init__(self, store: Store, gateway_id: str, centre_key: Ed25519PublicKey, metrics: Metrics) -> None:
        self.store = store
        self.gateway_id = gateway_id
        self.centre_key = centre_key
        self.metrics = metrics
        self.version = 0

    async def init(self) -> None:
        await self.store.db.executescript(SCHEMA)
        self.version = await self.store.get_meta_int(VERSION) or 0
        self.metrics.gauge("contacts_version", self.version)

    async def household(self, household_id: str) -> contacts.Household | None:
        rows = await self.store.db.execute_fetchall(
            "SELECT body_json FROM contact_households WHERE id=?", (household_id,)
        )
        for r in rows:
            return _from_json(str(r[0]))
        return None

    async def on_centre_message(self, topic: str, payload: bytes) -> Outcome:
        try:
            part = contacts.open_part(self.centre_key, self.gateway_id, topic, payload)
        except Rejected as exc:
            self.metrics.reject(f"contacts_{exc.reason}")
            log.warning("event=contacts_rejected reason=%s detail=%r", exc.reason, exc.detail[:200])
            # A bad signature is not confirmed: it may not be the centre's; a copy that is
            # the centre's but wrong for good is (it would come back forever).
            return Outcome(True, None)
        if part.v <= self.version:
            return Outcome(True, part.v)  # a repeat of what is held, or older
        try:
            complete = await self.store.submit(self._stage_op(part))
        except StoreError as exc:
            log.error("event=store_failed on=contacts error=%r", str(exc))
            return Outcome(False, None)
        if not complete:
            return Outcome(True, None)
        self.version = part.v
        self.metrics.gauge("contacts_version", part.v)
        self.metrics.inc("contacts_updates")
        log.info("event=contacts_updated version=%d parts=%d", part.v, part.parts)
        return Outcome(True, part.v)

    def _stage_op(self, part: contacts.ContactPart) -> Callable[[aiosqlite.Connection], Awaitable[bool]]:
        body = json.dumps([_to_json(h) for h in part.households], ensure_ascii=False)

        async def op(db: aiosqlite.Connection) -> bool:
            held = await db.execute_fetchall("SELECT value FROM meta WHERE name=?", (VERSION,))
            for r in held:
                if int(r[0]) >= part.v:
                    return False
            # Parts of older versions are no use any more.
            await db.execute("DELETE FROM contact_parts WHERE v<?", (part.v,))
            await db.execute(
                "INSERT OR REPLACE INTO contact_parts(v, part, parts, body_json) VALUES (?,?,?,?)",
                (part.v, part.part, part.parts, body),
            )
            rows = await db.execute_fetchall(
                "SELECT body_json FROM contact_parts WHERE v=? AND parts=? ORDER BY part",
                (part.v, part.parts),
            )
            rows = list(rows)
            if len(rows) < part.parts:
                return False
            await db.execute("DELETE FROM contact_households")
            await db.executemany(
                "INSERT OR REPLACE INTO contact_households(id, body_json) VALUES (?,?)",
                [(json.loads(h)["id"], h) for r in rows for h in json.loads(str(r[0]))],
            )
            await db.execute("DELETE FROM contact_parts WHERE v<=?", (part.v,))
            await db.execute(
                "INSERT INTO meta(name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (VERSION, str(part.v)),
            )
            return True

        return op
