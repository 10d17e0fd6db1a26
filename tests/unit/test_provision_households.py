"""Households at the centre: personal data behind the household ids devices carry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from centre import households


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(households.households_router(tmp_path / "centre.db"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        yield c


async def test_put_then_get_a_household(client: httpx.AsyncClient) -> None:
    body = {"village": "v-1", "name": "王秀英", "phone": "+86 138 0000 0000",
            "address": "东村 3 号", "notes": "lives alone; neighbour Li has a key"}
    r = await client.put("/api/households/h-001", json=body)
    assert r.status_code == 200, r.text
    got = (await client.get("/api/households/h-001")).json()
    assert {k: got[k] for k in body} == body and got["id"] == "h-001" and got["updated_at"] > 0


async def test_put_replaces_and_list_filters_by_village(client: httpx.AsyncClient) -> None:
    await client.put("/api/households/h-1", json={"village": "v-1", "name": "A"})
    await client.put("/api/households/h-2", json={"village": "v-2", "name": "B"})
    await client.put("/api/households/h-1", json={"village": "v-1", "name": "A2"})
    all_ = (await client.get("/api/households")).json()
    assert [h["name"] for h in all_] == ["A2", "B"]
    v2 = (await client.get("/api/households", params={"village": "v-2"})).json()
    assert [h["id"] for h in v2] == ["h-2"]


async def test_unknown_household_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/households/h-404")).status_code == 404


@pytest.mark.parametrize(
    "body", [{"phone": "call me"}, {"village": "Not An Id"}, {"notes": "x" * 1001}]
)
async def test_bad_fields_are_refused(client: httpx.AsyncClient, body: dict[str, str]) -> None:
    assert (await client.put("/api/households/h-1", json=body)).status_code == 422


def test_the_table_lives_beside_the_centres_and_is_created_once(tmp_path: Path) -> None:
    db = tmp_path / "centre.db"
    for _ in range(2):
        conn = households.connect(db)
        households.put(conn, "h-1", name="A")
        conn.close()
    conn = households.connect(db)
    assert [h.id for h in households.list_households(conn)] == ["h-1"]
    conn.close()
