"""Household cards at the centre: the card and its contacts, phone numbers, the API (as an
admin or an operator, `act_as`), the audit lines of every change, and the migration that keeps
the rows of the table the centre had before cards."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from centre import store as store_mod
from centre.auth import Role
from centre.household_api import households_router
from centre.households import load_card, normalise_phone
from centre.store import Store
from tests.auth_support import act_as

NOW = 1_700_000_000_000


@dataclass
class Api:
    app: FastAPI
    http: httpx.AsyncClient
    store: Store

    async def audit(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        async with self.store.transaction(write=False) as db:
            async with db.execute("SELECT actor, action, target, detail FROM audit ORDER BY id") as cur:
                return [(r[0], r[1], r[2], json.loads(r[3])) for r in await cur.fetchall()]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = Store(tmp_path / "centre.db")
    await store.open()
    app = FastAPI()
    app.include_router(households_router(lambda: store, lambda: NOW))
    act_as(app, Role.ADMIN, "admin-li")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        yield Api(app, c, store)
    await store.close()


def card(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "village": "v-1", "group": "第一村民小组", "name": "王秀英", "address": "东村 3 号",
        "phone": "+86 138 0013 8001", "medical": "高血压\n药在床头柜", "language_notes": "耳背",
        "lat": 25.04, "lon": 102.71, "notes": "钥匙在邻居家",
        # Given out of order on purpose: the card keeps family order, and sorts kinds.
        "contacts": [
            {"kind": "doctor", "name": "孙医生", "phone": "0871-64123456"},
            {"kind": "family", "name": "王二", "relation": "女儿", "phone": "13900000002"},
            {"kind": "leader", "name": "李队长", "phone": "139 0000 0091"},
            {"kind": "family", "name": "王大", "relation": "儿子", "phone": "0086 13900000001"},
            {"kind": "grid", "name": "赵网格", "phone": "13900000093"},
        ],
    }
    body.update(over)
    return body


async def test_a_card_round_trips_with_contacts_in_calling_order(api: Api) -> None:
    r = await api.http.put("/api/households/h-001", json=card())
    assert r.status_code == 200, r.text
    got = (await api.http.get("/api/households/h-001")).json()
    assert got == r.json()
    assert {k: got[k] for k in ("id", "village", "group", "name", "phone", "lat", "lon")} == {
        "id": "h-001", "village": "v-1", "group": "第一村民小组", "name": "王秀英",
        "phone": "13800138001", "lat": 25.04, "lon": 102.71,
    }
    assert got["medical"] == "高血压\n药在床头柜" and got["updated_at"] == NOW
    assert [(c["kind"], c["name"], c["relation"], c["phone"], c["position"])
            for c in got["contacts"]] == [
        ("leader", "李队长", "", "13900000091", 1),
        ("grid", "赵网格", "", "13900000093", 1),
        ("family", "王二", "女儿", "13900000002", 1),
        ("family", "王大", "儿子", "13900000001", 2),
        ("doctor", "孙医生", "", "0871-64123456", 1),
    ]


async def test_a_card_read_can_be_written_back_unchanged(api: Api) -> None:
    first = (await api.http.put("/api/households/h-001", json=card())).json()
    again = await api.http.put("/api/households/h-001", json=first)
    assert again.status_code == 200, again.text
    assert again.json() == first


async def test_load_card_gives_server_code_the_card_in_calling_order(api: Api) -> None:
    await api.http.put("/api/households/h-001", json=card())
    async with api.store.transaction(write=False) as db:
        c = await load_card(db, "h-001")
        assert await load_card(db, "h-404") is None
    assert c is not None
    assert (c.name, c.address, c.village, c.group) == ("王秀英", "东村 3 号", "v-1", "第一村民小组")
    assert [k.kind for k in c.contacts] == ["leader", "grid", "family", "family", "doctor"]
    assert [k.name for k in c.of_kind("family")] == ["王二", "王大"]


async def test_put_replaces_the_whole_card_contacts_included(api: Api) -> None:
    await api.http.put("/api/households/h-001", json=card())
    r = await api.http.put("/api/households/h-001", json=card(
        lat=None, lon=None, contacts=[{"kind": "family", "name": "新", "phone": "13900000009"}]))
    assert r.status_code == 200, r.text
    got = (await api.http.get("/api/households/h-001")).json()
    assert [c["name"] for c in got["contacts"]] == ["新"] and got["lat"] is None


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("13812345678", "13812345678"),
        ("138 1234 5678", "13812345678"),
        ("138-1234-5678", "13812345678"),
        ("+86 138 1234 5678", "13812345678"),
        ("0086-13812345678", "13812345678"),
        ("１３８１２３４５６７８", "13812345678"),  # full-width, as some input methods type
        ("19912345678", "19912345678"),
        ("010-62345678", "010-62345678"),
        ("01062345678", "010-62345678"),
        ("(021) 5123 4567", "021-51234567"),
        ("+86 10 6234 5678", "010-62345678"),
        ("0871-6412345", "0871-6412345"),
        ("0871 64123456", "0871-64123456"),
        ("+86 871 6412345", "0871-6412345"),
    ],
)
def test_good_phone_numbers_are_stored_in_one_form(text: str, stored: str) -> None:
    assert normalise_phone(text) == stored


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("12812345678", "not a mainland phone number"),  # 12x is not a mobile prefix
        ("1381234567", "not a mainland phone number"),  # 10 digits
        ("138123456789", "not a mainland phone number"),  # 12 digits
        ("+1 415 555 0100", "not a mainland number"),
        ("0044 20 7946 0000", "not a mainland number"),
        ("110", "not a mainland phone number"),
        ("021-1234567", "not a mainland phone number"),  # 02x cities have 8-digit numbers
        ("0871-0123456", "not a mainland phone number"),  # a local number never starts 0
        ("call me", "not a phone number"),
        ("138x1234x5678", "not a phone number"),
        ("1.38123E+10", "scientific notation"),  # what Excel makes of a long number
    ],
)
def test_bad_phone_numbers_are_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        normalise_phone(text)


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"phone": "call me"}, "not a phone number"),
        ({"contacts": [{"kind": "family", "name": "A", "phone": "12345"}]}, "not a mainland"),
        ({"contacts": [{"kind": "family", "name": "A", "phone": ""}]}, "required"),
        ({"contacts": [{"kind": "family", "name": "", "phone": "13900000001"}]}, "required"),
        ({"contacts": [{"kind": "cousin", "name": "A", "phone": "13900000001"}]}, "kind"),
        ({"contacts": [{"kind": "leader", "name": "A", "relation": "x",
                        "phone": "13900000001"}]}, "family contacts only"),
        ({"contacts": [{"kind": "leader", "name": f"L{i}", "phone": "13900000001"}
                       for i in range(2)]}, "at most 1 leader"),
        ({"contacts": [{"kind": "family", "name": f"F{i}", "phone": "13900000001"}
                       for i in range(6)]}, "at most 5 family"),
        ({"lat": 91.0}, "less than or equal to 90"),
        ({"lon": -181.0}, "greater than or equal to -180"),
        ({"lat": 30.0, "lon": None}, "both or neither"),
        ({"name": ""}, "required"),
        ({"name": "x" * 101}, "at most 100 characters"),
        ({"address": "x" * 201}, "at most 200 characters"),
        ({"notes": "x" * 2001}, "at most 2000 characters"),
        ({"medical": "x" * 1001}, "at most 1000 characters"),
        ({"name": "王\x00秀英"}, "control characters"),
        ({"name": "王\n秀英"}, "no line breaks"),
        ({"village": "Not An Id"}, "not a village id"),
        ({"nmae": "typo"}, "Extra inputs"),
        ({"id": "h-002"}, "not the path's"),
    ],
)
async def test_a_bad_card_is_refused_and_nothing_changes(
    api: Api, over: dict[str, Any], says: str
) -> None:
    r = await api.http.put("/api/households/h-001", json=card(**over))
    assert r.status_code == 422 and says in r.text, r.text
    assert (await api.http.get("/api/households/h-001")).status_code == 404
    assert await api.audit() == []


@pytest.mark.parametrize(
    "name", ["<script>alert('x')</script>", "<img src=x onerror=alert(1)>", "王 & 李 <家>"]
)
async def test_html_and_script_in_names_are_kept_as_text(api: Api, name: str) -> None:
    body = card(name=name, notes=f"<b>{name}</b>", contacts=[
        {"kind": "family", "name": name, "relation": "<i>", "phone": "13900000001"}])
    assert (await api.http.put("/api/households/h-1", json=body)).status_code == 200
    got = (await api.http.get("/api/households/h-1")).json()
    assert (got["name"], got["notes"]) == (name, f"<b>{name}</b>")
    assert (got["contacts"][0]["name"], got["contacts"][0]["relation"]) == (name, "<i>")


async def test_list_filters_by_village_and_group_and_searches_names(api: Api) -> None:
    await api.http.put("/api/households/h-1", json=card(village="v-1", group="一组", name="王秀英"))
    await api.http.put("/api/households/h-2", json=card(village="v-1", group="二组", name="李四"))
    await api.http.put("/api/households/h-3", json=card(village="v-2", group="一组", name="王五"))
    await api.http.put("/api/households/h-4", json=card(village="v-1", name="100%_real"))

    async def ids(**params: str) -> list[str]:
        r = await api.http.get("/api/households", params=params)
        assert r.status_code == 200, r.text
        return [h["id"] for h in r.json()]

    assert await ids() == ["h-1", "h-2", "h-3", "h-4"]
    assert await ids(village="v-1") == ["h-1", "h-2", "h-4"]
    assert await ids(village="v-1", group="一组") == ["h-1"]
    assert await ids(q="王") == ["h-1", "h-3"]
    assert await ids(q="%_") == ["h-4"]  # as text, not a LIKE pattern
    assert await ids(q="H-2") == ["h-2"]
    assert (await api.http.get("/api/households")).json()[0]["contacts"][0]["kind"] == "leader"


async def test_delete_removes_the_card_and_its_contacts(api: Api) -> None:
    await api.http.put("/api/households/h-1", json=card())
    assert (await api.http.delete("/api/households/h-1")).status_code == 204
    assert (await api.http.get("/api/households/h-1")).status_code == 404
    assert (await api.http.delete("/api/households/h-1")).status_code == 404
    async with api.store.transaction(write=False) as db:
        async with db.execute("SELECT COUNT(*) FROM household_contacts") as cur:
            assert (await cur.fetchone()) == (0,)


async def test_every_change_is_audited_with_the_actor_and_no_personal_data(api: Api) -> None:
    await api.http.put("/api/households/h-1", json=card())
    await api.http.put("/api/households/h-1", json=card(name="王秀兰"))
    await api.http.delete("/api/households/h-1")
    lines = await api.audit()
    assert lines == [
        ("admin-li", "household.put", "h-1", {"created": True, "changed": [], "contacts": 5}),
        ("admin-li", "household.put", "h-1", {"created": False, "changed": ["name"],
                                               "contacts": 5}),
        ("admin-li", "household.delete", "h-1", {}),
    ]
    assert "王秀兰" not in repr(lines)


async def test_unknown_household_is_404(api: Api) -> None:
    assert (await api.http.get("/api/households/h-404")).status_code == 404


def test_reads_are_for_operators_and_changes_for_admins() -> None:
    from centre.access import ACCESS

    reads = [("GET", "/api/households"), ("GET", "/api/households/{household_id}"),
             ("GET", "/api/households/{household_id}/local_alert")]
    writes = [("PUT", "/api/households/{household_id}"),
              ("DELETE", "/api/households/{household_id}"),
              ("POST", "/api/households/import"), ("GET", "/api/households/export"),
              ("PUT", "/api/households/{household_id}/local_alert")]
    assert [ACCESS[r] for r in reads] == [Role.OPERATOR] * 3
    assert [ACCESS[w] for w in writes] == [Role.ADMIN] * 5
    router = households_router(lambda: None, lambda: NOW)  # type: ignore[arg-type,return-value]
    routes = {(m, r.path) for r in router.routes for m in getattr(r, "methods", ())}
    assert routes == set(reads + writes)


# -- the migration


def _migrations_before_cards() -> list[str]:
    i = next(n for n, m in enumerate(store_mod._MIGRATIONS) if "households_before_cards" in m)
    return list(store_mod._MIGRATIONS[:i])


async def test_the_migration_keeps_the_rows_of_the_table_from_before_cards(tmp_path: Path) -> None:
    db = tmp_path / "centre.db"
    conn = sqlite3.connect(db)
    for n, sql in enumerate(_migrations_before_cards(), 1):
        conn.executescript(f"{sql}\nPRAGMA user_version = {n};")
    # The table as centre.households created it before it was a store migration.
    conn.executescript("""
        CREATE TABLE IF NOT EXISTS households (
            id TEXT PRIMARY KEY, village TEXT NOT NULL DEFAULT '', name TEXT NOT NULL DEFAULT '',
            phone TEXT NOT NULL DEFAULT '', address TEXT NOT NULL DEFAULT '',
            notes TEXT NOT NULL DEFAULT '', updated_at INTEGER NOT NULL);
        CREATE INDEX IF NOT EXISTS households_village ON households (village, id);
    """)
    conn.execute("INSERT INTO households VALUES ('h-001', 'v-1', '张桂英', '+86 138 0000 0000',"
                 " '东头3号', 'lives alone', 123)")
    conn.commit()
    conn.close()
    async with Store(db) as s, s.transaction(write=False) as c:
        got = await load_card(c, "h-001")
    assert got is not None
    assert (got.id, got.village, got.name, got.phone, got.address, got.notes, got.updated_at) == (
        "h-001", "v-1", "张桂英", "+86 138 0000 0000", "东头3号", "lives alone", 123)
    assert (got.group, got.medical, got.lat, got.contacts) == ("", "", None, ())


async def test_a_new_database_gets_the_household_tables(tmp_path: Path) -> None:
    async with Store(tmp_path / "c.db") as s, s.transaction(write=False) as c:
        async with c.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cur:
            tables = {r[0] for r in await cur.fetchall()}
    assert {"households", "household_contacts"} <= tables
    assert "households_before_cards" not in tables


async def test_household_refuses_the_local_alert_audited_and_pushed_in_the_contact_list(
    api: Api,
) -> None:
    from centre import contactpush

    assert (await api.http.get("/api/households/h-404/local_alert")).status_code == 404
    refuse = {"allowed": False}
    assert (await api.http.put("/api/households/h-404/local_alert", json=refuse)).status_code == 404
    await api.http.put("/api/households/h-001", json=card())
    assert (await api.http.get("/api/households/h-001/local_alert")).json() == {"allowed": True}
    r = await api.http.put("/api/households/h-001/local_alert", json={"allowed": False})
    assert r.status_code == 200 and r.json() == {"allowed": False}
    assert (await api.http.get("/api/households/h-001/local_alert")).json() == {"allowed": False}
    assert (await api.audit())[-1] == ("admin-li", "household.local_alert", "h-001", {"allowed": False})
    async with api.store.transaction(write=False) as db:
        (h,) = await contactpush.build(db, ["v-1"])
    assert h.id == "h-001" and not h.local_alert
