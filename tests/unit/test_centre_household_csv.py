"""Household cards as CSV: every problem reported with its line, column and rule, nothing of a
bad file imported, Excel's encodings, and export -> import unchanged."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from centre.auth import Role
from centre.household_api import households_router
from centre.household_csv import (
    HEADER,
    MAX_BYTES,
    CsvRefused,
    Problem,
    import_into,
    parse,
    render,
)
from centre.households import HouseholdCard, HouseholdIn, card_from, load_cards
from centre.store import Store
from tests.auth_support import act_as

HEAD = ",".join(HEADER)


def row(hid: str = "h-001", **cells: str) -> str:
    values = {"village": "v-1", "group": "一组", "name": "王秀英", "address": "东村3号",
              "phone": "13900000001", "leader_name": "李队长", "leader_phone": "13900000091",
              "family1_name": "王大", "family1_relation": "儿子", "family1_phone": "13900000011"}
    values.update(cells)
    values["id"] = hid
    out = []
    for name in HEADER:
        v = values.get(name, "")
        out.append('"' + v.replace('"', '""') + '"' if any(ch in v for ch in ',"\n') else v)
    return ",".join(out)


def csv_file(*rows: str, bom: bool = False) -> bytes:
    data = "\r\n".join([HEAD, *rows]).encode() + b"\r\n"
    return codecs.BOM_UTF8 + data if bom else data


def problems(data: bytes) -> list[tuple[int, str, str]]:
    with pytest.raises(CsvRefused) as info:
        parse(data)
    return [(p.line, p.column, p.rule) for p in info.value.problems]


def test_a_good_file_gives_one_card_per_row() -> None:
    rows = parse(csv_file(row("h-001"), row("h-002", name="李四", phone="+86 139 0000 0002")))
    assert [(r.line, r.id, r.card.name, r.card.phone) for r in rows] == [
        (2, "h-001", "王秀英", "13900000001"), (3, "h-002", "李四", "13900000002")]
    assert [(c.kind, c.name, c.relation) for c in rows[0].card.contacts] == [
        ("leader", "李队长", ""), ("family", "王大", "儿子")]


def test_excel_byte_order_mark_is_accepted() -> None:
    plain, bom = parse(csv_file(row())), parse(csv_file(row(), bom=True))
    assert plain == bom and plain[0].id == "h-001"


def test_every_bad_row_is_reported_with_line_column_and_rule() -> None:
    data = csv_file(
        row("h-001", notes="第一行\n第二行"),  # lines 2-3: a quoted line break
        row("h-002", phone="12345"),  # line 4
        "",  # line 5: blank, skipped
        row("h-003", family1_phone="13900000011x", address="址" * 201),  # line 6: two problems
        row("h-001"),  # line 7: the id again
        row("h-004", name="x" * 101),  # line 8
        row("", name="无名"),  # line 9
        row("h-005", lat="30.5"),  # line 10
    )
    got = problems(data)
    assert [(line, col) for line, col, _ in got] == [
        (4, "phone"), (6, "address"), (6, "family1_phone"), (7, "id"), (8, "name"), (9, "id"),
        (10, "lat")]
    rules = [rule for _, _, rule in got]
    assert "not a mainland phone number" in rules[0]
    assert rules[1] == "at most 200 characters (this has 201)"
    assert "not a phone number" in rules[2]
    assert rules[3] == "h-001 is also on line 2"
    assert rules[4] == "at most 100 characters (this has 101)"
    assert "required" in rules[5]
    assert rules[6] == "lat and lon: both or neither"


def test_the_refusal_says_nothing_was_imported_and_counts_the_problems() -> None:
    with pytest.raises(CsvRefused) as info:
        parse(csv_file(row("h-1", phone="1"), row("h-2", phone="2")))
    assert str(info.value) == "nothing imported: 2 problem(s) on 2 line(s)"
    assert str(info.value.problems[0]).startswith("line 2, column phone: ")


def test_a_gbk_file_is_refused_with_how_to_save_it_as_utf8() -> None:
    data = (HEAD + "\r\n" + row("h-001")).encode("gbk")
    ((line, column, rule),) = problems(data)
    assert line == 2 and column == ""
    assert "not UTF-8" in rule and "CSV UTF-8" in rule


def test_a_utf16_file_is_refused() -> None:
    assert "UTF-16" in problems(codecs.BOM_UTF16_LE + csv_file(row()).decode().encode("utf-16-le"))[0][2]


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\r\n\r\n", b"  \n"])
def test_an_empty_file_is_refused(data: bytes) -> None:
    assert "empty" in problems(data)[0][2]


def test_unknown_missing_and_repeated_columns_are_refused() -> None:
    head = HEAD.replace("address", "adress") + ",mobile,name"
    got = problems(f"{head}\r\n".encode())
    assert (1, "adress", got[0][2]) == got[0] and "unknown column" in got[0][2]
    assert got[1][:2] == (1, "mobile")
    assert got[2] == (1, "name", "named twice in the header")
    assert got[3][1] == "" and "missing column(s) address" in got[3][2]


def test_columns_may_come_in_any_order_and_case() -> None:
    names = list(reversed(HEADER))
    values = dict(zip(HEADER, row("h-9").split(","), strict=True))
    data = (",".join(n.upper() for n in names) + "\n" + ",".join(values[n] for n in names) + "\n")
    assert parse(data.encode())[0].card.name == "王秀英"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('h-1,"unterminated', "broken quoting"),
        ('h-1,"closed"then more', "broken quoting"),
    ],
)
def test_broken_quoting_is_refused_with_its_line(line: str, says: str) -> None:
    ((at, _, rule),) = problems(csv_file(row("h-0"), line))
    assert at == 3 and says in rule


def test_broken_quoting_is_reported_after_the_problems_before_it() -> None:
    got = problems(csv_file(row("h-1", phone="1"), 'h-2,"open', row("h-3")))
    assert [(line, col) for line, col, _ in got] == [(2, "phone"), (3, "")]
    assert "broken quoting" in got[1][2]


def test_rows_with_too_few_or_too_many_values_are_refused() -> None:
    got = problems(csv_file(row("h-1") + ",extra", "h-2,v-1"))
    assert [(line, col) for line, col, _ in got] == [(2, ""), (3, "")]
    assert "comma inside a field" in got[0][2] and "2 values" in got[1][2]


def test_an_oversized_file_is_refused_before_reading_it() -> None:
    got = problems(b"x" * (MAX_BYTES + 1))
    assert got[0][0] == 0 and "split it" in got[0][2]


def test_an_oversized_field_names_its_column_and_limit() -> None:
    got = problems(csv_file(row("h-1", notes="长" * 2001, family1_name="名" * 101)))
    assert [(c, r) for _, c, r in got] == [
        ("notes", "at most 2000 characters (this has 2001)"),
        ("family1_name", "at most 100 characters (this has 101)"),
    ]


def test_html_and_formulas_in_cells_are_kept_as_text() -> None:
    (r,) = parse(csv_file(row("h-1", name="<script>alert(1)</script>", notes="=1+2")))
    assert (r.card.name, r.card.notes) == ("<script>alert(1)</script>", "=1+2")


def test_excel_scientific_phone_numbers_get_a_hint() -> None:
    ((_, col, rule),) = problems(csv_file(row("h-1", phone="1.39E+10")))
    assert col == "phone" and "format the phone columns as text" in rule


def _cards() -> list[HouseholdCard]:
    tricky = HouseholdIn.model_validate({
        "village": "v-1", "group": "二组, 东片", "name": '王 "大姐" <b>', "address": "东村,3号",
        "phone": "010-62345678", "medical": "第一行\n第二行", "language_notes": "-耳背",
        "lat": 25.040123456789, "lon": -102.5, "notes": "=HYPERLINK(\"x\")",
        "contacts": [
            {"kind": "doctor", "name": "孙", "phone": "13900000094"},
            *({"kind": "family", "name": f"家{i}", "relation": f"r{i}",
               "phone": f"1390000001{i}"} for i in range(1, 6)),
            {"kind": "grid", "name": "@赵", "phone": "13900000093"},
            {"kind": "leader", "name": "+李", "phone": "13900000091"},
        ],
    })
    plain = HouseholdIn.model_validate({"name": "李四"})
    return [card_from("h-001", tricky, 0), card_from("h-002", plain, 0)]


def test_export_then_import_gives_the_same_cards() -> None:
    cards = _cards()
    data = render(cards)
    assert data.startswith(codecs.BOM_UTF8)
    assert data.decode("utf-8-sig").splitlines()[0] == HEAD
    back = [card_from(r.id, r.card, 0) for r in parse(data)]
    assert back == cards
    assert render(back) == data


def test_export_keeps_spreadsheets_from_running_cells_as_formulas() -> None:
    text = render(_cards()).decode("utf-8-sig")
    assert "'=HYPERLINK" in text and "'+李" in text and "'@赵" in text and "'-耳背" in text


async def test_a_bad_file_imports_nothing_and_a_good_one_everything(tmp_path: Path) -> None:
    db = tmp_path / "centre.db"
    await import_into(db, csv_file(row("h-001", name="原来")), "cli:test")
    with pytest.raises(CsvRefused):
        await import_into(db, csv_file(row("h-001", name="改了"), row("h-002", phone="x")), "cli:test")
    async with Store(db) as s, s.transaction(write=False) as c:
        assert [(h.id, h.name) for h in await load_cards(c)] == [("h-001", "原来")]
    result = await import_into(db, csv_file(row("h-002"), row("h-003")), "cli:test", source="f.csv")
    assert (result.created, result.updated) == (2, 0)
    async with Store(db) as s, s.transaction(write=False) as c:
        # an upsert of the rows given: h-001, absent from the file, is kept
        assert [h.id for h in await load_cards(c)] == ["h-001", "h-002", "h-003"]
        async with c.execute("SELECT actor, action, detail FROM audit ORDER BY id") as cur:
            audit = await cur.fetchall()
    assert audit == [
        ("cli:test", "household.import", '{"count":1,"created":1,"updated":0}'),
        ("cli:test", "household.import",
         '{"count":2,"created":2,"updated":0,"source":"f.csv"}'),
    ]


def test_problem_text_names_line_and_column() -> None:
    assert str(Problem(7, "phone", "required")) == "line 7, column phone: required"
    assert str(Problem(0, "", "too big")) == "the file: too big"


# -- the admin API


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = Store(tmp_path / "centre.db")
    await store.open()
    app = FastAPI()
    app.include_router(households_router(lambda: store, lambda: 1))
    act_as(app, Role.ADMIN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        yield c
    await store.close()


async def test_import_and_export_over_http_round_trip(http: httpx.AsyncClient) -> None:
    ctype = {"Content-Type": "text/csv; charset=utf-8"}
    r = await http.post("/api/households/import", content=render(_cards()), headers=ctype)
    assert r.json() == {"imported": 2, "created": 2, "updated": 0}, r.text
    out = await http.get("/api/households/export")
    assert out.status_code == 200 and out.headers["content-type"].startswith("text/csv")
    assert "attachment" in out.headers["content-disposition"]
    assert out.content == render([card_from(c.id, _as_in(c), 1) for c in _cards()])
    again = await http.post("/api/households/import", content=out.content, headers=ctype)
    assert again.json() == {"imported": 2, "created": 0, "updated": 2}


def _as_in(c: HouseholdCard) -> HouseholdIn:
    (r,) = [r for r in parse(render([c]))]
    return r.card


async def test_a_bad_file_over_http_is_422_with_every_problem(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/households/import", headers={"Content-Type": "text/csv"},
                        content=csv_file(row("h-1"), row("h-2", phone="1")))
    assert r.status_code == 422
    assert r.json()["problems"] == [{"line": 3, "column": "phone", "rule": r.json()["problems"][0]["rule"]}]
    assert r.json()["total"] == 1 and r.json()["detail"].startswith("nothing imported")
    assert (await http.get("/api/households")).json() == []


async def test_import_wants_text_csv(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/households/import", json={"id": "h-1"})
    assert r.status_code == 415 and "text/csv" in r.text


def test_the_example_in_the_docs_imports_and_its_header_is_the_format() -> None:
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "centre.md").read_text(encoding="utf-8")
    example = re.search(r"```csv\n(.*?)```", doc, re.S)
    assert example is not None
    assert example.group(1).splitlines()[0] == HEAD
    assert [r.id for r in parse(example.group(1).encode())] == ["h-001", "h-004"]
    assert f"`{HEAD}`" in doc
