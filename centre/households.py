"""Household cards: who lives behind a household id, and whom to call. Kept at the centre only.

A gateway, and every message on the way, knows a device by its id and the household id it
serves (`h-0012`), nothing more. The names, phone numbers, address, medical notes and contacts
that staff need when an alarm comes in live here, in the centre's SQLite file (tables
`households` and `household_contacts`, a migration of `centre.store`).

A card holds its contacts in the order escalation calls them: the ten-household group's leader
(十联户 联户长), the grid worker (网格员), the family contacts (亲情号码) in their own order, the
village doctor (村医). `position` numbers the contacts of one kind from 1.

Phone numbers are checked and stored in one form (`normalise_phone`): a mainland mobile as its
11 digits (`13812345678`), a landline as area code, hyphen, number (`010-62345678`,
`0871-6412345`). Text is stored as given (HTML included: escaping is the page's job), stripped of
surrounding spaces, without control characters, and bounded in length (`LIMITS`, in characters).

The functions taking an `aiosqlite.Connection` run in the caller's transaction; the HTTP API is
`centre.household_api`, the CSV format `centre.household_csv`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import aiosqlite
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

HOUSEHOLD_ID = r"^[^\x00-\x1f\x7f/]{1,64}$"
VILLAGE_ID = r"^([a-z0-9][a-z0-9-]{0,31})?$"

ContactKind = Literal["leader", "grid", "family", "doctor"]
# The order escalation calls them in (the nearest people first), and the order of `contacts`.
KINDS: tuple[ContactKind, ...] = ("leader", "grid", "family", "doctor")
KIND_NAMES = {"leader": "联户长 ten-household leader", "grid": "网格员 grid worker",
              "family": "亲情号码 family contact", "doctor": "村医 village doctor"}
MAX_FAMILY = 5  # family contacts per card (the CSV's family1..family5 columns)
MAX_OTHER = 1  # leaders, grid workers, doctors per card (each one pair of CSV columns)

# Longest text, in characters (not bytes).
LIMITS = {
    "group": 32,
    "name": 100,
    "address": 200,
    "medical": 1000,
    "language_notes": 500,
    "notes": 2000,
    "contact_name": 100,
    "relation": 32,
}


# -- phone numbers

_SEPARATORS = re.compile(r"[\s\-().]")
_MOBILE = re.compile(r"^1[3-9]\d{9}$")
# 3-digit area codes (with the trunk 0): Beijing 010 and the 02x cities, all with 8-digit
# numbers; every other area code has 4 digits and 7- or 8-digit numbers. A local number never
# starts with 0 or 1.
_LANDLINE_3 = re.compile(r"^(0(?:10|2\d))([2-9]\d{7})$")
_LANDLINE_4 = re.compile(r"^(0[3-9]\d\d)([2-9]\d{6,7})$")
_EXCEL_SCIENTIFIC = re.compile(r"^\d(\.\d+)?[eE]\+?\d+$")


def normalise_phone(text: str) -> str:
    """The stored form of a mainland phone number, or ValueError saying what is wrong.

    Accepts spaces, hyphens, dots and brackets between digits, full-width digits, and a `+86` or
    `0086` prefix. A mobile (1[3-9] and 9 digits) is stored as its 11 digits; a landline as
    `0AREA-NUMBER` (the trunk 0 is put back after +86)."""
    raw = unicodedata.normalize("NFKC", text).strip()
    if _EXCEL_SCIENTIFIC.match(raw):
        raise ValueError(
            f"{text!r} is a number in scientific notation, as Excel shows long numbers: format "
            "the phone columns as text (设置单元格格式 → 文本) and type the numbers again"
        )
    digits = _SEPARATORS.sub("", raw)
    international = False
    if digits.startswith("+86"):
        digits, international = digits[3:], True
    elif digits.startswith("0086"):
        digits, international = digits[4:], True
    elif digits.startswith(("+", "00")):
        raise ValueError(f"{text!r} is not a mainland number (+86): the centre sends SMS in China only")
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(
            f"{text!r} is not a phone number: digits only (with +86 or 0086 in front, and "
            "spaces or hyphens between, if you like)"
        )
    if _MOBILE.match(digits):
        return digits
    if international and not digits.startswith("0"):
        digits = "0" + digits
    for pattern in (_LANDLINE_3, _LANDLINE_4):
        m = pattern.match(digits)
        if m:
            return f"{m.group(1)}-{m.group(2)}"
    raise ValueError(
        f"{text!r} is not a mainland phone number: a mobile is 11 digits starting 13-19 "
        "(13812345678), a landline the area code and the number (010-62345678, 0871-6412345)"
    )


def is_mobile(phone: str) -> bool:
    """True for a stored mobile number (one that can receive SMS)."""
    return bool(_MOBILE.match(phone))


# -- text fields

_VILLAGE = re.compile(VILLAGE_ID)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _line(limit: int) -> Any:
    def check(text: str) -> str:
        text = text.strip()
        if _CONTROL.search(text):
            raise ValueError("no line breaks or control characters in this field")
        if len(text) > limit:
            raise ValueError(f"at most {limit} characters (this has {len(text)})")
        return text

    return AfterValidator(check)


def _para(limit: int) -> Any:
    def check(text: str) -> str:
        text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
        if _CONTROL_BUT_LINES.search(text):
            raise ValueError("no control characters (line breaks and tabs are fine)")
        if len(text) > limit:
            raise ValueError(f"at most {limit} characters (this has {len(text)})")
        return text

    return AfterValidator(check)


def _required(text: str) -> str:
    if not text:
        raise ValueError("required")
    return text


def _village(text: str) -> str:
    text = text.strip()
    if not _VILLAGE.match(text):
        raise ValueError(
            f"{text!r} is not a village id: lower-case letters, digits and hyphens, at most 32 "
            "(v-xiaocun), as the village's gateway was enrolled with"
        )
    return text


def _optional_phone(text: str) -> str:
    text = text.strip()
    return normalise_phone(text) if text else ""


def _phone(text: str) -> str:
    return normalise_phone(_required(text.strip()))


Phone = Annotated[str, AfterValidator(_phone)]
OptionalPhone = Annotated[str, AfterValidator(_optional_phone)]


class ContactIn(BaseModel):
    """A contact as written (PUT, CSV). Order within a kind is the order given."""

    model_config = ConfigDict(extra="forbid")

    kind: ContactKind = Field(description="leader (联户长), grid (网格员), family (亲情号码), doctor (村医)")
    name: Annotated[str, _line(LIMITS["contact_name"]), AfterValidator(_required)]
    relation: Annotated[str, _line(LIMITS["relation"])] = Field(
        default="", description="family contacts only: 儿子, 女儿, 邻居, ..."
    )
    phone: Phone = Field(description="normalised: 13812345678 or 010-62345678")
    position: int | None = Field(
        default=None, description="ignored on input (the list's order is the order)"
    )

    @model_validator(mode="after")
    def _relation_is_for_family(self) -> ContactIn:
        if self.relation and self.kind != "family":
            raise ValueError(
                f"relation is for family contacts only (a {self.kind} contact's kind says who "
                "they are)"
            )
        return self


class HouseholdIn(BaseModel):
    """A household card as written (PUT, CSV): the whole card, contacts included."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="ignored if equal to the path's id")
    village: Annotated[str, AfterValidator(_village)] = ""
    group: Annotated[str, _line(LIMITS["group"])] = Field(default="", description="村民小组")
    name: Annotated[str, _line(LIMITS["name"]), AfterValidator(_required)] = Field(
        description="who lives there"
    )
    address: Annotated[str, _line(LIMITS["address"])] = ""
    phone: OptionalPhone = ""
    medical: Annotated[str, _para(LIMITS["medical"])] = Field(
        default="", description="conditions, medicines, allergies"
    )
    language_notes: Annotated[str, _para(LIMITS["language_notes"])] = Field(
        default="", description="dialect spoken, hearing or speech difficulties"
    )
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None
    notes: Annotated[str, _para(LIMITS["notes"])] = Field(
        default="", description="access, who holds a key, ..."
    )
    contacts: list[ContactIn] = Field(default_factory=list, max_length=MAX_FAMILY + 3 * MAX_OTHER)
    updated_at: int | None = Field(default=None, description="ignored on input")

    @model_validator(mode="after")
    def _whole(self) -> HouseholdIn:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon: both or neither")
        for kind in KINDS:
            n = sum(1 for c in self.contacts if c.kind == kind)
            most = MAX_FAMILY if kind == "family" else MAX_OTHER
            if n > most:
                raise ValueError(f"at most {most} {kind} contact(s) per household (this has {n})")
        return self


# -- the card


@dataclass(frozen=True)
class Contact:
    kind: ContactKind
    name: str
    relation: str
    phone: str
    position: int  # from 1 within its kind: the order they are called in


@dataclass(frozen=True)
class HouseholdCard:
    id: str
    village: str
    group: str
    name: str
    address: str
    phone: str
    medical: str
    language_notes: str
    lat: float | None
    lon: float | None
    notes: str
    contacts: tuple[Contact, ...]  # by kind (KINDS order), then position
    updated_at: int  # Unix ms of the last change

    def of_kind(self, kind: ContactKind) -> tuple[Contact, ...]:
        return tuple(c for c in self.contacts if c.kind == kind)


def card_from(household_id: str, body: HouseholdIn, updated_at: int) -> HouseholdCard:
    """The card `body` describes, contacts numbered and in escalation order."""
    contacts: list[Contact] = []
    for kind in KINDS:
        given = [c for c in body.contacts if c.kind == kind]
        contacts += [Contact(kind, c.name, c.relation, c.phone, i) for i, c in enumerate(given, 1)]
    return HouseholdCard(
        household_id, body.village, body.group, body.name, body.address, body.phone,
        body.medical, body.language_notes, body.lat, body.lon, body.notes, tuple(contacts),
        updated_at,
    )


def changed_fields(old: HouseholdCard | None, new: HouseholdCard) -> list[str]:
    """The names of the fields that differ (for the audit line: what changed, not the data)."""
    if old is None:
        return []
    names = ("village", "group", "name", "address", "phone", "medical", "language_notes", "lat",
             "lon", "notes", "contacts")
    return [n for n in names if getattr(old, n) != getattr(new, n)]


# -- storage

_COLS = ("id, village, village_group, name, address, phone, medical, language_notes, lat, lon, "
         "notes, updated_at")
_KIND_ORDER = "CASE kind WHEN 'leader' THEN 0 WHEN 'grid' THEN 1 WHEN 'family' THEN 2 ELSE 3 END"
_CHUNK = 500  # ids per `IN (...)`


async def _contacts(db: aiosqlite.Connection, ids: Sequence[str]) -> dict[str, list[Contact]]:
    found: dict[str, list[Contact]] = {i: [] for i in ids}
    for i in range(0, len(ids), _CHUNK):
        part = list(ids[i : i + _CHUNK])
        async with db.execute(
            "SELECT household, kind, name, relation, phone, position FROM household_contacts "
            f"WHERE household IN ({','.join('?' * len(part))}) "
            f"ORDER BY household, {_KIND_ORDER}, position",
            part,
        ) as cur:
            async for r in cur:
                found[r[0]].append(Contact(r[1], r[2], r[3], r[4], r[5]))
    return found


def _card(row: Any, contacts: list[Contact]) -> HouseholdCard:
    return HouseholdCard(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10],
        tuple(contacts), row[11],
    )


async def load_card(db: aiosqlite.Connection, household_id: str) -> HouseholdCard | None:
    """The household's card with its contacts in calling order, or None if there is none."""
    async with db.execute(f"SELECT {_COLS} FROM households WHERE id = ?", (household_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    return _card(row, (await _contacts(db, [household_id]))[household_id])


async def load_cards(
    db: aiosqlite.Connection,
    *,
    village: str | None = None,
    group: str | None = None,
    q: str | None = None,
    limit: int | None = None,
) -> list[HouseholdCard]:
    """Cards by id; `village` and `group` filter exactly, `q` matches part of the name or id
    (ASCII letters without regard to case)."""
    where, args = [], []
    if village is not None:
        where.append("village = ?")
        args.append(village)
    if group is not None:
        where.append("village_group = ?")
        args.append(group)
    if q:
        # instr, not LIKE: a name may hold % and _ as text.
        where.append("(instr(lower(name), lower(?)) > 0 OR instr(lower(id), lower(?)) > 0)")
        args += [q, q]
    sql = f"SELECT {_COLS} FROM households"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    async with db.execute(sql, args) as cur:
        rows = list(await cur.fetchall())
    contacts = await _contacts(db, [r[0] for r in rows])
    return [_card(r, contacts[r[0]]) for r in rows]


async def existing_ids(db: aiosqlite.Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        part = list(ids[i : i + _CHUNK])
        async with db.execute(
            f"SELECT id FROM households WHERE id IN ({','.join('?' * len(part))})", part
        ) as cur:
            found.update(str(r[0]) for r in await cur.fetchall())
    return found


async def save_cards(db: aiosqlite.Connection, cards: Iterable[HouseholdCard]) -> None:
    """Create or replace these cards, contacts included, in the caller's transaction (a few
    statements for any number of cards)."""
    cards = list(cards)
    if not cards:
        return
    await db.executemany(
        f"INSERT INTO households ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (id) DO UPDATE SET village = excluded.village, "
        "village_group = excluded.village_group, name = excluded.name, "
        "address = excluded.address, phone = excluded.phone, medical = excluded.medical, "
        "language_notes = excluded.language_notes, lat = excluded.lat, lon = excluded.lon, "
        "notes = excluded.notes, updated_at = excluded.updated_at",
        [(c.id, c.village, c.group, c.name, c.address, c.phone, c.medical, c.language_notes,
          c.lat, c.lon, c.notes, c.updated_at) for c in cards],
    )
    await db.executemany(
        "DELETE FROM household_contacts WHERE household = ?", [(c.id,) for c in cards]
    )
    await db.executemany(
        "INSERT INTO household_contacts (household, kind, position, name, relation, phone) "
        "VALUES (?,?,?,?,?,?)",
        [(c.id, k.kind, k.position, k.name, k.relation, k.phone) for c in cards for k in c.contacts],
    )


async def delete_card(db: aiosqlite.Connection, household_id: str) -> bool:
    """Remove the card and its contacts; False if there was none."""
    await db.execute("DELETE FROM household_contacts WHERE household = ?", (household_id,))
    cur = await db.execute("DELETE FROM households WHERE id = ?", (household_id,))
    return cur.rowcount == 1
