"""The household part of the centre's HTTP API (docs/centre.md, "Households").

`households_router(store, clock)` returns the routes; `centre.api` includes them. Reading needs
an operator, changing an admin (`centre.access`). Every change is written with its audit line
in one transaction: `household.put`, `household.delete`, `household.import`; an export, which
hands out every card's personal data at once, is audited too (`household.export`).

| method | path | what |
| --- | --- | --- |
| GET | /api/households?village=&group=&q=&limit= | cards, by id |
| GET | /api/households/export?village= | all cards as CSV (centre.household_csv) |
| POST | /api/households/import | a CSV file (text/csv): all rows or nothing |
| GET | /api/households/{id} | one card (404 if unknown) |
| PUT | /api/households/{id} | create or replace a card, contacts included |
| DELETE | /api/households/{id} | remove a card and its contacts |
| GET | /api/households/{id}/local_alert | whether it accepts the speakers' local alert |
| PUT | /api/households/{id}/local_alert | `{"allowed": false}`: it refuses it (centre.contactpush) |
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from centre import audit
from centre.auth import Principal, current_principal
from centre.contactpush import local_alert_allowed, set_local_alert
from centre.household_csv import MAX_BYTES, CsvRefused, import_rows, parse, render
from centre.households import (
    HOUSEHOLD_ID,
    ContactKind,
    HouseholdCard,
    HouseholdIn,
    card_from,
    changed_fields,
    delete_card,
    load_card,
    load_cards,
    save_cards,
)
from centre.ingest import kv
from centre.store import Store

log = logging.getLogger("onekey.centre.api")

CSV_TYPE = "text/csv"
HouseholdId = Annotated[str, PathParam(pattern=HOUSEHOLD_ID)]
Who = Annotated[Principal, Depends(current_principal)]


class ErrorOut(BaseModel):
    detail: str


class ProblemOut(BaseModel):
    line: int = Field(description="where the row starts in the file (1: the header; 0: the file)")
    column: str = Field(description="empty when about the whole row or file")
    rule: str


class CsvRefusedOut(BaseModel):
    detail: str
    problems: list[ProblemOut] = Field(description="every problem found, up to 100")
    total: int = Field(description="how many problems there were in all")


class ImportOut(BaseModel):
    imported: int
    created: int
    updated: int


class ContactOut(BaseModel):
    kind: ContactKind
    name: str
    relation: str = Field(description="family contacts only")
    phone: str = Field(description="13812345678 (mobile) or 010-62345678 (landline)")
    position: int = Field(description="from 1 within its kind: the order they are called in")


class HouseholdOut(BaseModel):
    id: str
    village: str
    group: str = Field(description="村民小组")
    name: str
    address: str
    phone: str
    medical: str
    language_notes: str = Field(description="dialect, hearing or speech")
    lat: float | None
    lon: float | None
    notes: str
    contacts: list[ContactOut] = Field(
        description="leader, grid, family (in order), doctor: the order escalation calls them in"
    )
    updated_at: int = Field(description="Unix ms of the last change")


def card_out(c: HouseholdCard) -> HouseholdOut:
    return HouseholdOut(
        id=c.id, village=c.village, group=c.group, name=c.name, address=c.address,
        phone=c.phone, medical=c.medical, language_notes=c.language_notes, lat=c.lat,
        lon=c.lon, notes=c.notes, updated_at=c.updated_at,
        contacts=[ContactOut(kind=k.kind, name=k.name, relation=k.relation, phone=k.phone,
                             position=k.position) for k in c.contacts],
    )


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


def households_router(store: Callable[[], Store], clock: Callable[[], int]) -> APIRouter:
    router = APIRouter(prefix="/api/households", tags=["households"])

    @router.get("", summary="Household cards, by id", response_model=list[HouseholdOut])
    async def list_cards(
        village: Annotated[str | None, Query(max_length=32)] = None,
        group: Annotated[str | None, Query(max_length=32, description="村民小组")] = None,
        q: Annotated[
            str | None, Query(max_length=100, description="part of the name or the id")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    ) -> list[HouseholdOut]:
        async with store().transaction(write=False) as db:
            cards = await load_cards(db, village=village, group=group, q=q, limit=limit)
        return [card_out(c) for c in cards]

    @router.get(
        "/export",
        summary="Every household card as CSV",
        response_class=Response,
        responses={200: {"content": {CSV_TYPE: {"schema": {"type": "string"}}}}},
    )
    async def export_csv(
        request: Request,
        who: Who,
        village: Annotated[str | None, Query(max_length=32)] = None,
    ) -> Response:
        async with store().transaction() as db:
            cards = await load_cards(db, village=village)
            await audit.record(db, clock(), who, "household.export", village or "",
                               {"count": len(cards)}, _address(request))
        name = f"households-{village}.csv" if village else "households.csv"
        return Response(
            render(cards), media_type=f"{CSV_TYPE}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @router.post(
        "/import",
        summary="Import household cards from CSV: every row, or nothing",
        description=(
            "Creates or replaces the card of every row (households not in the file are kept). "
            "If any row is bad, nothing is imported and the answer (422) lists every problem "
            "with its line, column and rule."
        ),
        response_model=ImportOut,
        openapi_extra={
            "requestBody": {"required": True,
                            "content": {CSV_TYPE: {"schema": {"type": "string"}}}},
        },
        responses={413: {"model": ErrorOut}, 415: {"model": ErrorOut},
                   422: {"model": CsvRefusedOut}},
    )
    async def import_csv(request: Request, who: Who) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != CSV_TYPE:
            raise HTTPException(415, f"send the file as {CSV_TYPE} (got {ctype or 'none'})")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_BYTES:
                raise HTTPException(413, f"a file is at most {MAX_BYTES} bytes: split it")
        try:
            rows = parse(bytes(data))
        except CsvRefused as exc:
            return JSONResponse(
                {"detail": str(exc), "total": exc.total,
                 "problems": [{"line": p.line, "column": p.column, "rule": p.rule}
                              for p in exc.problems]},
                status_code=422,
            )
        async with store().transaction() as db:
            result = await import_rows(db, rows, clock(), who, _address(request))
        log.info(kv(event="households_imported", count=result.count, created=result.created,
                    by=who.username))
        return ImportOut(imported=result.count, created=result.created, updated=result.updated)

    @router.get(
        "/{household_id}", summary="One household card", response_model=HouseholdOut,
        responses={404: {"model": ErrorOut}},
    )
    async def get_card(household_id: HouseholdId) -> HouseholdOut:
        async with store().transaction(write=False) as db:
            card = await load_card(db, household_id)
        if card is None:
            raise HTTPException(404, f"no household {household_id}")
        return card_out(card)

    @router.put(
        "/{household_id}",
        summary="Create or replace a household card, contacts included",
        description=(
            "The body is the whole card: contacts not in it are removed. Contacts of one kind "
            "are called in the order given. `id`, `updated_at` and a contact's `position` may "
            "be sent back as read; they are ignored (an `id` must match the path)."
        ),
        response_model=HouseholdOut,
        responses={422: {"model": ErrorOut}},
    )
    async def put_card(
        household_id: HouseholdId, body: HouseholdIn, request: Request, who: Who
    ) -> HouseholdOut:
        if body.id is not None and body.id != household_id:
            raise HTTPException(422, f"the body's id {body.id!r} is not the path's {household_id!r}")
        now = clock()
        card = card_from(household_id, body, now)
        async with store().transaction() as db:
            old = await load_card(db, household_id)
            await save_cards(db, [card])
            await audit.record(
                db, now, who, "household.put", household_id,
                {"created": old is None, "changed": changed_fields(old, card),
                 "contacts": len(card.contacts)},
                _address(request),
            )
        log.info(kv(event="household_put", id=household_id, created=old is None, by=who.username))
        return card_out(card)

    @router.delete(
        "/{household_id}", summary="Remove a household card and its contacts", status_code=204,
        responses={404: {"model": ErrorOut}},
    )
    async def delete(household_id: HouseholdId, request: Request, who: Who) -> Response:
        async with store().transaction() as db:
            if not await delete_card(db, household_id):
                raise HTTPException(404, f"no household {household_id}")
            await audit.record(db, clock(), who, "household.delete", household_id, {},
                               _address(request))
        log.info(kv(event="household_deleted", id=household_id, by=who.username))
        return Response(status_code=204)

    @router.get(
        "/{household_id}/local_alert",
        summary="Whether the household accepts the local alert on the speakers",
        response_model=LocalAlertIn, responses={404: {"model": ErrorOut}},
    )
    async def get_local_alert(household_id: HouseholdId) -> LocalAlertIn:
        async with store().transaction(write=False) as db:
            if await load_card(db, household_id) is None:
                raise HTTPException(404, f"no household {household_id}")
            return LocalAlertIn(allowed=await local_alert_allowed(db, household_id))

    @router.put(
        "/{household_id}/local_alert",
        summary="Accept or refuse the local alert on the speakers",
        description=(
            "While its village is cut off from the centre, the gateway has the speakers near a "
            "household that pressed play a short alert naming its group and house (docs/"
            "gateway.md). A household may refuse it; the choice goes down to the gateway with "
            "the contact list (protocol §11)."
        ),
        response_model=LocalAlertIn, responses={404: {"model": ErrorOut}},
    )
    async def put_local_alert(
        household_id: HouseholdId, body: LocalAlertIn, request: Request, who: Who
    ) -> LocalAlertIn:
        async with store().transaction() as db:
            if await load_card(db, household_id) is None:
                raise HTTPException(404, f"no household {household_id}")
            await set_local_alert(db, household_id, body.allowed)
            await audit.record(db, clock(), who, "household.local_alert", household_id,
                               {"allowed": body.allowed}, _address(request))
        log.info(kv(event="household_local_alert", id=household_id, allowed=body.allowed,
                    by=who.username))
        return body

    return router


class LocalAlertIn(BaseModel):
    allowed: bool = Field(description="false: the household refuses the local alert")
