"""The broadcast part of the centre's HTTP API (docs/centre.md, "Broadcasts").

`broadcast_router(runtime, centre_id, clock)` returns the routes; `centre.api` includes them.
A posted broadcast is checked (centre.broadcast), routed to the gateways that serve its
villages, signed once per gateway and stored with its copies in one transaction; the ingest
task publishes the copies that are due, the scheduler the others when their start comes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from centre import cap
from centre.bcstore import (
    BroadcastExists,
    BroadcastNotFound,
    BroadcastStore,
    CannotCancel,
    Copy,
    GatewayCopy,
    StoredBroadcast,
    Summary,
)
from centre.broadcast import (
    MAX_BY,
    Broadcast,
    BroadcastError,
    BroadcastIn,
    MsgType,
    build,
    make_id,
    make_sender,
    route,
    signed_copy,
)
from centre.ingest import Ingest, kv
from centre.scheduler import Scheduler
from centre.store import Store

log = logging.getLogger("onekey.centre.api")

BroadcastState = Literal["scheduled", "sending", "sent", "cancelled", "updated", "expired"]
CopyState = Literal["scheduled", "pending", "sent", "expired", "withheld"]
SpeakerStateName = Literal[
    "queued", "offline", "delivered", "preempted", "playing", "played", "failed", "expired",
    "cancelled",
]
CAP_TYPES = ("application/cap+xml", "application/xml", "text/xml")
MAX_NOTE = 200


class BroadcastRuntime(Protocol):
    store: Store
    broadcasts: BroadcastStore
    key: Ed25519PrivateKey
    ingest: Ingest
    scheduler: Scheduler


class AreaOut(BaseModel):
    village: str
    groups: list[str]
    speakers: list[str]


class ReferenceOut(BaseModel):
    id: str
    sender: str
    sent: int


class SummaryOut(BaseModel):
    gateways: dict[str, int] = Field(description="gateway copies by state")
    speakers: dict[str, int] = Field(description="speakers by their latest reported state")


class BroadcastOut(BaseModel):
    """A broadcast as stored. Times are Unix milliseconds (whole seconds, as in CAP)."""

    id: str
    sender: str
    sent: int
    status: str
    msgType: str
    references: list[str]
    reference_details: list[ReferenceOut] = Field(description="with CAP's sender and sent")
    urgency: str
    severity: str
    certainty: str
    priority: int = Field(description="§8.1.2: 0 interrupts, 1 plays next, 2 routine")
    start: int | None
    expires: int
    area: list[AreaOut]
    language: str
    text: str
    clip: str | None
    repeat: int
    category: str
    event: str
    by: str = Field(description="the staff member who sent or imported it")
    created_at: int
    source: Literal["api", "cap"]
    state: BroadcastState
    released_at: int | None = Field(description="when its copies went into the outbox")
    cancelled_at: int | None
    cancelled_by: str | None
    cancel_note: str | None
    replaced_by: str | None = Field(description="the Cancel or Update that stopped it")
    expired: bool = Field(description="its expires has passed")
    summary: SummaryOut


class GatewayCopyOut(BaseModel):
    gw: str
    villages: list[str] = Field(description="the villages this copy names")
    state: CopyState
    sent_at: int | None = Field(description="when the broker took it (PUBACK)")
    reports: int = Field(description="speaker reports received from this gateway")
    last_report: int | None


class SpeakerOut(BaseModel):
    device: str
    gw: str
    state: SpeakerStateName
    at: int = Field(description="when it happened, by the gateway's report")
    reported_at: int = Field(description="when the centre received that report")


class BroadcastDetail(BroadcastOut):
    gateways: list[GatewayCopyOut]
    speakers: list[SpeakerOut]


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_BY)]
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_NOTE)] = ""


class CancelOut(BaseModel):
    broadcast: BroadcastDetail = Field(description="the broadcast, now cancelled")
    cancel: BroadcastOut | None = Field(
        description="the Cancel sent to its gateways; null if it had not been sent yet"
    )


class ErrorOut(BaseModel):
    detail: str


def _out(s: StoredBroadcast, summary: Summary, now: int) -> BroadcastOut:
    fields = cap.cap_fields(s.bc)
    return BroadcastOut(
        **fields,
        priority=s.bc.priority,
        by=s.created_by,
        created_at=s.created_at,
        source="cap" if s.source == "cap" else "api",
        state=s.state,  # type: ignore[arg-type]  # the store's CHECK constraint
        released_at=s.released_at,
        cancelled_at=s.cancelled_at,
        cancelled_by=s.cancelled_by,
        cancel_note=s.cancel_note,
        replaced_by=s.replaced_by,
        expired=now >= s.bc.expires,
        summary=SummaryOut(gateways=summary.gateways, speakers=summary.speakers),
    )


def _cancel_of(orig: Broadcast, centre_id: str, by: str, now: int) -> Broadcast:
    """The Cancel that stops `orig`: same status, area and expiry; nothing to play."""
    return Broadcast(
        id=make_id(centre_id, now),
        sender=make_sender(centre_id, by),
        sent=now - now % 1000,
        status=orig.status,
        msg_type="Cancel",
        references=(orig.as_reference(),),
        urgency=orig.urgency,
        severity=orig.severity,
        certainty=orig.certainty,
        expires=orig.expires,
        area=orig.area,
        language=orig.language,
        text="",
        category=orig.category,
        event=orig.event,
    )


def broadcast_router(
    runtime: Callable[[], BroadcastRuntime], centre_id: str, clock: Callable[[], int]
) -> APIRouter:
    router = APIRouter(prefix="/api/broadcasts", tags=["broadcasts"])

    async def detail(r: BroadcastRuntime, s: StoredBroadcast) -> BroadcastDetail:
        summary = (await r.broadcasts.summaries([s.bc.id]))[s.bc.id]
        base = _out(s, summary, clock())
        return BroadcastDetail(
            **base.model_dump(),
            gateways=[_copy_out(c) for c in await r.broadcasts.copies(s.bc.id)],
            speakers=[
                SpeakerOut.model_validate(sp, from_attributes=True)
                for sp in await r.broadcasts.speakers(s.bc.id)
            ],
        )

    async def known(r: BroadcastRuntime, ids: list[str]) -> dict[str, Broadcast]:
        return {i: s.bc for i, s in (await r.broadcasts.get_many(ids)).items()}

    async def create(r: BroadcastRuntime, bc: Broadcast, by: str, source: str) -> StoredBroadcast:
        now = clock()
        served = {g.id: g.serves() for g in await r.store.list_gateways()}
        try:
            plan = route(bc.area, served)
            copies = [Copy(gw, area, *signed_copy(r.key, bc, gw, area)) for gw, area in plan.items()]
        except BroadcastError as exc:
            raise HTTPException(422, str(exc)) from None
        try:
            stored = await r.broadcasts.create(bc, copies, by=by, now=now, source=source)
        except BroadcastExists as exc:
            raise HTTPException(409, str(exc)) from None
        log.info(
            kv(event="broadcast_created", id=bc.id, msgType=bc.msg_type, state=stored.state,
               gateways=len(copies), by=by, source=source)
        )
        if stored.state == "sending":
            r.ingest.kick()
        return stored

    @router.post(
        "",
        status_code=201,
        response_model=BroadcastDetail,
        summary="Send a broadcast (now, or held until its start)",
        description=(
            "Checks the broadcast, sends one signed copy to each gateway that serves a "
            "targeted village (`ok/v1/gw/{gw}/down/bc`) now, or at `start`. An Update or a "
            "Cancel also stops the broadcasts it references. 422 names what to change."
        ),
        responses={409: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    )
    async def post_broadcast(body: BroadcastIn) -> BroadcastDetail:
        r = runtime()
        try:
            bc = build(
                body, centre_id=centre_id, now=clock(), known=await known(r, body.references)
            )
        except BroadcastError as exc:
            raise HTTPException(422, str(exc)) from None
        return await detail(r, await create(r, bc, body.by, "api"))

    @router.post(
        "/cap",
        status_code=201,
        response_model=BroadcastDetail,
        summary="Send a broadcast given as a CAP 1.2 alert",
        description=(
            "The body is one CAP 1.2 `<alert>` (Content-Type application/cap+xml or "
            "application/xml). It keeps its identifier, sender and sent; an onset in the past "
            "means now. `by` names the staff member who imports it."
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {t: {"schema": {"type": "string"}} for t in CAP_TYPES},
            }
        },
        responses={
            409: {"model": ErrorOut}, 413: {"model": ErrorOut}, 415: {"model": ErrorOut},
            422: {"model": ErrorOut},
        },
    )
    async def post_cap(
        request: Request,
        by: Annotated[str, Query(min_length=1, max_length=MAX_BY, description="staff member")],
        language: Annotated[
            str | None, Query(max_length=8, description="the <info> to use, if several")
        ] = None,
    ) -> BroadcastDetail:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in CAP_TYPES:
            raise HTTPException(415, f"send the alert as {CAP_TYPES[0]} (got {ctype or 'none'})")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > cap.MAX_XML:
                raise HTTPException(413, f"a CAP alert is at most {cap.MAX_XML} bytes")
        r = runtime()
        try:
            fields = cap.from_cap_xml(bytes(data), language=language)
            bc = cap.to_broadcast(
                fields, by=by.strip(), centre_id=centre_id, now=clock(),
                known=await known(r, list(fields["references"])),
            )
        except (cap.CapError, BroadcastError) as exc:
            raise HTTPException(422, str(exc)) from None
        for note in fields["notes"]:
            log.info(kv(event="cap_import_note", id=bc.id, note=note))
        return await detail(r, await create(r, bc, by.strip(), "cap"))

    @router.get("", response_model=list[BroadcastOut], summary="List broadcasts, newest first")
    async def list_broadcasts(
        state: Annotated[BroadcastState | None, Query()] = None,
        msgType: Annotated[MsgType | None, Query()] = None,
        village: Annotated[str | None, Query(max_length=32)] = None,
        since: Annotated[int | None, Query(ge=0, description="created at or after (Unix ms)")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[BroadcastOut]:
        r = runtime()
        found = await r.broadcasts.find(
            state=state, msg_type=msgType, village=village, since=since, limit=limit
        )
        summaries = await r.broadcasts.summaries(s.bc.id for s in found)
        now = clock()
        return [_out(s, summaries[s.bc.id], now) for s in found]

    @router.get(
        "/{bc_id}",
        response_model=BroadcastDetail,
        summary="One broadcast with its gateways and the latest state of each speaker",
        responses={404: {"model": ErrorOut}},
    )
    async def get_broadcast(bc_id: Annotated[str, Path(max_length=40)]) -> BroadcastDetail:
        r = runtime()
        s = await r.broadcasts.get(bc_id)
        if s is None:
            raise HTTPException(404, f"no broadcast {bc_id!r}")
        return await detail(r, s)

    @router.get(
        "/{bc_id}/cap",
        response_class=Response,
        summary="One broadcast as a CAP 1.2 alert",
        responses={200: {"content": {"application/cap+xml": {}}}, 404: {"model": ErrorOut}},
    )
    async def get_cap(bc_id: Annotated[str, Path(max_length=40)]) -> Response:
        s = await runtime().broadcasts.get(bc_id)
        if s is None:
            raise HTTPException(404, f"no broadcast {bc_id!r}")
        return Response(
            cap.to_cap_xml(cap.cap_fields(s.bc)),
            media_type="application/cap+xml",
            headers={"Content-Disposition": f'inline; filename="{bc_id}.xml"'},
        )

    @router.post(
        "/{bc_id}/cancel",
        response_model=CancelOut,
        summary="Cancel a broadcast",
        description=(
            "Sends a Cancel (msgType Cancel, references = [id]) to the gateways that had the "
            "broadcast; a broadcast still held for its start is simply not sent. Cancelling "
            "it again changes nothing. 409 for a Cancel, a replaced or an expired broadcast."
        ),
        responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    )
    async def cancel_broadcast(
        bc_id: Annotated[str, Path(max_length=40)], body: CancelIn
    ) -> CancelOut:
        r = runtime()
        now = clock()

        def make_cancel(
            orig: StoredBroadcast, due: list[GatewayCopy]
        ) -> tuple[Broadcast, list[Copy]]:
            c = _cancel_of(orig.bc, centre_id, body.by, now)
            return c, [Copy(g.gw, g.area, *signed_copy(r.key, c, g.gw, g.area)) for g in due]

        try:
            orig, cancel = await r.broadcasts.cancel(
                bc_id, by=body.by, note=body.note, now=now, make_cancel=make_cancel
            )
        except BroadcastNotFound:
            raise HTTPException(404, f"no broadcast {bc_id!r}") from None
        except CannotCancel as exc:
            raise HTTPException(409, str(exc)) from None
        if cancel is not None:
            log.info(kv(event="broadcast_cancelled", id=bc_id, cancel=cancel.bc.id, by=body.by))
            r.ingest.kick()
        else:
            log.info(kv(event="broadcast_cancelled", id=bc_id, cancel="-", by=body.by))
        cancel_out = None
        if cancel is not None:
            summary = (await r.broadcasts.summaries([cancel.bc.id]))[cancel.bc.id]
            cancel_out = _out(cancel, summary, clock())
        return CancelOut(broadcast=await detail(r, orig), cancel=cancel_out)

    return router


def _copy_out(c: GatewayCopy) -> GatewayCopyOut:
    return GatewayCopyOut(
        gw=c.gw,
        villages=[a.village for a in c.area],
        state=c.state,  # type: ignore[arg-type]  # the store's CHECK constraint
        sent_at=c.sent_at,
        reports=c.reports,
        last_report=c.last_report,
    )
