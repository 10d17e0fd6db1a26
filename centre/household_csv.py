"""Household cards as CSV: one row per household, contacts in numbered columns.

The format (docs/centre.md "Households"): UTF-8, with or without a byte order mark (Excel's
"CSV UTF-8" adds one), comma-separated, double quotes around a field holding a comma, quote or
line break. The first line names the columns, in any order, and must name every column of
`HEADER`. Blank lines are skipped. A file in GBK (Excel's plain "CSV") is refused with a message
saying how to save it as UTF-8: GB18030 would decode almost any bytes, so a wrong file would be
imported as garbled names instead of being refused.

`parse` checks a whole file and returns its rows, or raises `CsvRefused` listing every problem
with its line, column and rule; `import_rows` writes them in the caller's transaction (an upsert
of the rows given: households not in the file are kept). `render` writes a file that `parse`
reads back to the same cards.

A text cell that starts with = + - or @ is written with a ' in front, so that a spreadsheet
shows it as text instead of running it as a formula; `parse` removes that one '.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
from pydantic import ValidationError

from centre import audit
from centre.auth import Principal
from centre.households import (
    HOUSEHOLD_ID,
    MAX_FAMILY,
    HouseholdCard,
    HouseholdIn,
    card_from,
    existing_ids,
    load_cards,
    save_cards,
)
from centre.store import Store, now_ms

CARD_COLUMNS = ("id", "village", "group", "name", "address", "phone", "medical",
                "language_notes", "lat", "lon", "notes")
FAMILY_COLUMNS = tuple(
    f"family{i}_{part}" for i in range(1, MAX_FAMILY + 1) for part in ("name", "relation", "phone")
)
HEADER: tuple[str, ...] = (
    *CARD_COLUMNS, "leader_name", "leader_phone", "grid_name", "grid_phone", *FAMILY_COLUMNS,
    "doctor_name", "doctor_phone",
)
MAX_BYTES = 10 * 1024 * 1024  # about 20,000 full cards
MAX_ROWS = 20_000
MAX_REPORTED = 100  # problems listed; the count says how many more there were

_ID = re.compile(HOUSEHOLD_ID)
_FORMULA_START = ("=", "+", "-", "@")
SAVE_AS_UTF8 = (
    "save it as UTF-8: in Excel 另存为 → 文件类型 “CSV UTF-8(逗号分隔)(*.csv)”; "
    "in WPS 另存为 → “CSV 文件”, encoding UTF-8"
)


@dataclass(frozen=True)
class Problem:
    """What is wrong, and where: `line` is where the row starts in the file (1 is the header)."""

    line: int
    column: str  # "" when it is about the whole row or file
    rule: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "the file"
        where += f", column {self.column}" if self.column else ""
        return f"{where}: {self.rule}"


class CsvRefused(ValueError):
    """The file was not imported; `problems` says why (every problem found, up to
    MAX_REPORTED; `total` counts them all)."""

    def __init__(self, problems: Sequence[Problem], total: int | None = None) -> None:
        self.problems = list(problems[:MAX_REPORTED])
        self.total = len(problems) if total is None else total
        lines = {p.line for p in problems}
        unlisted = self.total - len(self.problems)
        more = f" ({unlisted} more not listed)" if unlisted > 0 else ""
        head = (f"nothing imported: {self.total} problem(s) on {len(lines)} line(s){more}"
                if self.total > 1 else f"nothing imported: {self.problems[0]}")
        super().__init__(head)


@dataclass(frozen=True)
class Row:
    line: int
    id: str
    card: HouseholdIn


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int

    @property
    def count(self) -> int:
        return self.created + self.updated


def _decode(data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise CsvRefused([Problem(0, "", f"the file has {len(data)} bytes, more than the "
                                         f"{MAX_BYTES} accepted: split it into several files")])
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CsvRefused([Problem(0, "", "the file is UTF-16 (Excel's “Unicode text”), not "
                                         f"CSV: {SAVE_AS_UTF8}")])
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CsvRefused([Problem(line, "", f"not UTF-8 (GBK, as Excel's plain “CSV” saves, "
                                            f"or another encoding): {SAVE_AS_UTF8}")]) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise CsvRefused([Problem(line, "", "a NUL byte: this is not a text file")])
    if not text.strip():
        raise CsvRefused([Problem(1, "", "the file is empty: the first line must name the "
                                         f"columns ({','.join(HEADER)})")])
    return text


def _records(text: str) -> Iterable[tuple[int, list[str] | Problem]]:
    """(line where the record starts, cells), skipping blank lines; broken quoting ends the
    file with a Problem (nothing after it can be told apart)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, Problem(start, "", (
                f"broken quoting ({exc}): a field holding a comma, quote or line break must be "
                'in double quotes, with each quote inside it doubled ("")'
            ))
            return
        if any(c.strip() for c in cells):
            yield start, cells


def _header(line: int, cells: list[str]) -> list[str]:
    names = [c.strip().lower() for c in cells]
    problems: list[Problem] = []
    known = set(HEADER)
    seen: set[str] = set()
    for name in names:
        if name and name not in known:
            problems.append(Problem(line, name, f"unknown column; the columns are: {','.join(HEADER)}"))
        elif name in seen:
            problems.append(Problem(line, name, "named twice in the header"))
        seen.add(name)
    missing = [n for n in HEADER if n not in seen]
    if missing:
        problems.append(Problem(line, "", (
            f"missing column(s) {', '.join(missing)}: every column must be there (a row replaces "
            "the whole card; export a file to start from)"
        )))
    if problems:
        raise CsvRefused(problems)
    return names


def _cell(value: str) -> str:
    value = value.strip()
    if len(value) > 1 and value[0] == "'" and value[1] in _FORMULA_START:
        return value[1:]
    return value


def _card_input(values: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The body of a HouseholdIn, and for each contact the columns it came from."""
    body: dict[str, Any] = {k: values[k] for k in CARD_COLUMNS if k not in ("id", "lat", "lon")}
    body["lat"] = values["lat"] or None
    body["lon"] = values["lon"] or None
    contacts: list[dict[str, Any]] = []
    sources: list[dict[str, str]] = []

    def add(kind: str, prefix: str, relation: bool) -> None:
        cols = {"name": f"{prefix}_name", "phone": f"{prefix}_phone"}
        if relation:
            cols["relation"] = f"{prefix}_relation"
        if any(values[c] for c in cols.values()):
            contacts.append({"kind": kind, **{k: values[c] for k, c in cols.items()}})
            sources.append(cols)

    add("leader", "leader", False)
    add("grid", "grid", False)
    for i in range(1, MAX_FAMILY + 1):
        add("family", f"family{i}", True)
    add("doctor", "doctor", False)
    body["contacts"] = contacts
    return body, sources


def _column(loc: tuple[int | str, ...], sources: list[dict[str, str]]) -> str:
    if not loc:  # the card as a whole: only "lat and lon: both or neither" comes from a file
        return "lat"
    if loc[0] == "contacts" and len(loc) >= 2 and isinstance(loc[1], int):
        cols = sources[loc[1]]
        return cols.get(str(loc[2]), "") if len(loc) >= 3 else cols["name"]
    return str(loc[0])


def _rule(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def parse(data: bytes) -> list[Row]:
    """The rows of a CSV file of household cards, or CsvRefused naming every problem."""
    records = iter(_records(_decode(data)))
    first = next(records, None)
    if first is None:  # only blank lines
        raise CsvRefused([Problem(1, "", "the file is empty")])
    if isinstance(first[1], Problem):
        raise CsvRefused([first[1]])
    names = _header(first[0], first[1])
    problems: list[Problem] = []
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    for line, cells in records:
        if isinstance(cells, Problem):
            problems.append(cells)
            break
        if len(rows) + len(problems) >= MAX_ROWS:
            problems.append(Problem(line, "", f"more than {MAX_ROWS} rows: split the file"))
            break
        if len(cells) < len(names):
            problems.append(Problem(line, "", (
                f"{len(cells)} values where the header has {len(names)} columns"
            )))
            continue
        extra = [c for c in cells[len(names):] if c.strip()]
        unnamed = [c for n, c in zip(names, cells, strict=False) if not n and c.strip()]
        if extra or unnamed:
            problems.append(Problem(line, "", (
                f"{len(cells)} values where the header has {len(names)} named columns (a comma "
                "inside a field that is not in double quotes?)"
            )))
            continue
        values = {n: _cell(c) for n, c in zip(names, cells, strict=False) if n}
        hid = values["id"]
        if not _ID.match(hid):
            problems.append(Problem(line, "id", (
                "required: 1 to 64 characters, no '/' and no control characters"
                if hid else "required: the household id the devices carry (h-001)"
            )))
            continue
        if hid in first_line:
            problems.append(Problem(line, "id", f"{hid} is also on line {first_line[hid]}"))
            continue
        first_line[hid] = line
        body, sources = _card_input(values)
        try:
            card = HouseholdIn.model_validate(body)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                problems.append(Problem(line, _column(loc, sources), _rule(err["msg"])))
            continue
        rows.append(Row(line, hid, card))
    if problems:
        raise CsvRefused(problems)
    return rows


async def import_rows(
    db: aiosqlite.Connection,
    rows: Sequence[Row],
    now_ms: int,
    actor: Principal | str,
    address: str = "",
    source: str = "",
) -> ImportResult:
    """Create or replace these cards, with one `household.import` audit line, in the caller's
    transaction. Households not among `rows` are left as they are."""
    ids = [r.id for r in rows]
    old = await existing_ids(db, ids)
    await save_cards(db, [card_from(r.id, r.card, now_ms) for r in rows])
    result = ImportResult(created=len(ids) - len(old), updated=len(old))
    detail: dict[str, Any] = {"count": result.count, "created": result.created,
                              "updated": result.updated}
    if source:
        detail["source"] = source
    await audit.record(db, now_ms, actor, "household.import", "", detail, address)
    return result


def _safe(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _number(x: float | None) -> str:
    return "" if x is None else repr(x)


def render(cards: Iterable[HouseholdCard]) -> bytes:
    """The cards as a CSV file: UTF-8 with a byte order mark (Excel then shows Chinese right),
    CRLF line ends, the columns of HEADER in that order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for c in cards:
        row: dict[str, str] = {
            "id": c.id, "village": c.village, "group": c.group, "name": c.name,
            "address": c.address, "phone": c.phone, "medical": c.medical,
            "language_notes": c.language_notes, "lat": _number(c.lat), "lon": _number(c.lon),
            "notes": c.notes,
        }
        for kind in ("leader", "grid", "doctor"):
            for k in c.of_kind(kind):
                row[f"{kind}_name"], row[f"{kind}_phone"] = k.name, k.phone
        for i, k in enumerate(c.of_kind("family"), 1):
            row[f"family{i}_name"] = k.name
            row[f"family{i}_relation"] = k.relation
            row[f"family{i}_phone"] = k.phone
        writer.writerow([_safe(row.get(name, "")) for name in HEADER])
    return codecs.BOM_UTF8 + out.getvalue().encode("utf-8")


async def import_into(
    db_path: Path, data: bytes, actor: Principal | str, source: str = ""
) -> ImportResult:
    """Check a whole file, then import it into the centre's database in one transaction (the
    command line and the demo; the centre may be running: SQLite serialises the writers)."""
    rows = parse(data)
    async with Store(db_path) as store, store.transaction() as db:
        return await import_rows(db, rows, now_ms(), actor, source=source)


async def export_from(
    db_path: Path, actor: Principal | str, village: str | None = None
) -> tuple[bytes, int]:
    """The file `render` makes of the database's cards, and how many; audited."""
    async with Store(db_path) as store, store.transaction() as db:
        cards = await load_cards(db, village=village)
        await audit.record(db, now_ms(), actor, "household.export", village or "",
                           {"count": len(cards)})
    return render(cards), len(cards)
