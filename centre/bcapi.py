"""The broadcast part of the centre's HTTP API (docs/centre.md, "Broadcasts").

`broadcast_router(runtime, centre_id, clock)` returns the routes; `centre.api` includes them.
A posted broadcast is checked (centre.broadcast), routed to the gateways that serve its
villages, signed once per gateway and stored with its copies in one transaction; the ingest
task publishes the copies that are due, the scheduler the others when their start comes.

Before that: severity Extreme to a whole village needs `confirm_extreme` (409); a `Test` is
recorded and never sent; an `Exercise` goes only to drill villages; and with the setting
`approval` a broadcast waits, `awaiting_approval`, until a different broadcaster approves it.
`settings_router` serves those settings (admin). Every create, approve and cancel is audited
in its own transaction and announced on the live hub.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from centre import cap
from centre.auth import Principal
from centre.bcstore import (
    BroadcastExists,
    BroadcastNotFound,
    BroadcastStore,
    CannotApprove,
    CannotCancel,
    Copy,
    GatewayCopy,
    SameBroadcaster,
    Settings,
    StoredBroadcast,
    Summary,
)
from centre.broadcast import (
    MAX_AHEAD_MS,
    MAX_BY,
    Broadcast,
    BroadcastError,
    BroadcastIn,
    LocalId,
    MsgType,
    build,
    make_id,
    make_sender,
    route,
    signed_copy,
)
from centre.ingest import Ingest, kv
from centre.live import LiveHub
from centre.scheduler import Scheduler
from centre.store import Store
from protocol.broadcast import MAX_TEXT

log = logging.getLogger("onekey.centre.api")

BroadcastState = Literal[
    "awaiting_approval", "recorded", "scheduled", "sending", "sent", "cancelled", "updated",
    "expired",
]
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
    live: LiveHub


def acting(request: Request) -> Principal | None:
    """Who acts: the principal the app's `Authorize` found (every broadcast route is listed in
    `centre.access`, BROADCASTER or more). No principal: 401, whatever `by` the body names."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(401, "log in first")
    return principal


Who = Annotated[Principal | None, Depends(acting)]


def _name(who: Principal | None, by: str | None) -> str:
    if who is not None:
        return who.username
    if not by:
        raise HTTPException(422, "by: name the staff member (or log in)")
    return by.strip()


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


class AreaOut(BaseModel):
    village: str
    groups: list[str]
    speakers: list[str]


class ReferenceOut(BaseModel):
    id: str
    sender: str
    sent: int


class CapReferenceOut(BaseModel):
    identifier: str
    sender: str
    sent: int


class CapSourceOut(BaseModel):
    identifier: str
    sender: str
    sent: int
    msgType: str
    references: list[CapReferenceOut]


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
    cap_source: CapSourceOut | None = Field(
        description="a CAP import's identifier, sender, sent, msgType and references, as its "
        "source gave them (kept at the centre; gateways get this centre's ids)"
    )
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
    hold_reason: str | None = Field(description="why it is awaiting approval or not sent")
    approved_by: str | None = Field(description="the second broadcaster who released it")
    approved_at: int | None
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


class CountsOut(BaseModel):
    targeted: int = Field(description="speakers their gateways reported on")
    played: int


class VillageCoverageOut(CountsOut):
    village: str = Field(description="several joined by '+' when one gateway copy serves them")
    gateways: list[str]
    states: dict[str, int]


class CoverageOut(BaseModel):
    overall: CountsOut
    villages: list[VillageCoverageOut]


class BroadcastDetail(BroadcastOut):
    gateways: list[GatewayCopyOut]
    speakers: list[SpeakerOut]
    coverage: CoverageOut = Field(description="speakers targeted and played, per village")


class PartOut(BaseModel):
    part: str = Field(description="e.g. info[1]/description")
    length: int = Field(description="characters")


class CapCheckOut(BaseModel):
    """What an import of this alert would do, without sending anything."""

    acceptable: bool
    refusal: str | None = Field(description="why an import as asked would be refused")
    identifier: str
    sender: str
    msgType: str
    status: str
    info: bool = Field(description="false for a Cancel without <info>")
    joined: list[int] = Field(description="the <info> blocks joined into one text")
    parts: list[PartOut]
    text_length: int
    text_limit: int
    expires_missing: bool = Field(description="true: give valid_for_s to import it")
    villages: list[str]
    notes: list[str]


class SettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    approval: Literal["none", "extreme", "all"] = Field(
        description="which broadcasts wait for a second broadcaster's approval: none, "
        "extreme (severity Extreme to a whole village) or all"
    )
    drill_villages: list[LocalId] = Field(
        max_length=1000, description="villages where an Exercise plays (announced as 演练)"
    )


class SettingsOut(BaseModel):
    approval: str
    drill_villages: list[str]


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_BY)
    ] | None = None
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
        hold_reason=s.hold_reason,
        approved_by=s.approved_by,
        approved_at=s.approved_at,
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
        villages = [
            VillageCoverageOut(
                village=v.village, gateways=list(v.gateways), targeted=v.targeted,
                played=v.played, states=v.states,
            )
            for v in await r.broadcasts.coverage(s.bc.id)
        ]
        return BroadcastDetail(
            **base.model_dump(),
            gateways=[_copy_out(c) for c in await r.broadcasts.copies(s.bc.id)],
            speakers=[
                SpeakerOut.model_validate(sp, from_attributes=True)
                for sp in await r.broadcasts.speakers(s.bc.id)
            ],
            coverage=CoverageOut(
                overall=CountsOut(
                    targeted=sum(v.targeted for v in villages),
                    played=sum(v.played for v in villages),
                ),
                villages=villages,
            ),
        )

    async def known(r: BroadcastRuntime, ids: list[str]) -> dict[str, Broadcast]:
        return {i: s.bc for i, s in (await r.broadcasts.get_many(ids)).items()}

    async def create(
        r: BroadcastRuntime,
        bc: Broadcast,
        *,
        who: Principal | None,
        by: str,
        source: str,
        address: str,
        confirm_extreme: bool,
        extra: dict[str, object] | None = None,
    ) -> StoredBroadcast:
        now = clock()
        if bc.needs_extreme_confirmation() and not confirm_extreme:
            whole = ", ".join(a.village for a in bc.area if a.whole_village())
            raise HTTPException(
                409,
                f"severity Extreme to the whole of village {whole}: confirm it, then send it "
                'again with "confirm_extreme": true (特别严重级别的全村广播需要确认)',
            )
        settings = await r.broadcasts.settings()
        detail = dict(extra or {})
        hold: str | None = None
        reason: str | None = None
        if bc.status == "Test":
            hold = "recorded"
            reason = "status Test: CAP says every recipient disregards it; recorded, never played"
        elif bc.status == "Exercise":
            drills = set(settings.drill_villages)
            kept = tuple(a for a in bc.area if a.village in drills)
            left = [a.village for a in bc.area if a.village not in drills]
            if not kept:
                hold = "recorded"
                reason = (
                    "status Exercise: no village of its area has drills enabled; an admin "
                    "enables them in PUT /api/settings/broadcasts (drill_villages)"
                )
            elif left:
                bc = replace(bc, area=kept)
                reason = f"status Exercise: not sent to {', '.join(left)} (drills not enabled)"
                detail["no_drills"] = left
        if hold is None and settings.needs_approval(bc):
            hold = "awaiting_approval"
            reason = f"a second broadcaster must approve it (setting approval={settings.approval})"
        copies: list[Copy] = []
        if hold != "recorded":
            served = {g.id: g.serves() for g in await r.store.list_gateways()}
            try:
                plan = route(bc.area, served)
                copies = [
                    Copy(gw, area, *signed_copy(r.key, bc, gw, area)) for gw, area in plan.items()
                ]
            except BroadcastError as exc:
                raise HTTPException(422, str(exc)) from None
        try:
            stored = await r.broadcasts.create(
                bc, copies, by=by, now=now, source=source, hold=hold, hold_reason=reason,
                actor=who if who is not None else by, address=address, detail=detail,
            )
        except BroadcastExists as exc:
            raise HTTPException(409, str(exc)) from None
        log.info(
            kv(event="broadcast_created", id=bc.id, msgType=bc.msg_type, status=bc.status,
               state=stored.state, gateways=len(copies), by=by, source=source)
        )
        if stored.state == "sending":
            r.ingest.kick()
        r.live.publish("broadcast", {"id": bc.id})
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
    async def post_broadcast(body: BroadcastIn, request: Request, who: Who) -> BroadcastDetail:
        r = runtime()
        by = _name(who, body.by)
        try:
            bc = build(
                body.model_copy(update={"by": by}), centre_id=centre_id, now=clock(),
                known=await known(r, body.references),
            )
        except BroadcastError as exc:
            raise HTTPException(422, str(exc)) from None
        return await detail(r, await create(
            r, bc, who=who, by=by, source="api", address=_address(request),
            confirm_extreme=body.confirm_extreme,
        ))

    @router.post(
        "/cap",
        status_code=201,
        response_model=BroadcastDetail,
        summary="Send a broadcast given as a CAP 1.2 alert",
        description=(
            "The body is one CAP 1.2 `<alert>` (Content-Type application/cap+xml or "
            "application/xml). It gets this centre's own id; its identifier, sender, sent and "
            "references are kept as given (`cap_source`). An onset in the past means now. "
            "Several <info> blocks in the chosen language are joined. An alert without "
            "expires needs `valid_for_s`; a text over 500 characters needs `text` (what "
            "speakers say instead). status Test is recorded, never played; Exercise plays "
            "only in villages with drills enabled, announced as 演练."
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
        who: Who,
        by: Annotated[
            str | None,
            Query(min_length=1, max_length=MAX_BY, description="staff member, without accounts"),
        ] = None,
        language: Annotated[
            str | None, Query(max_length=8, description="the <info> language, if several")
        ] = None,
        valid_for_s: Annotated[
            int | None,
            Query(ge=1, le=MAX_AHEAD_MS // 1000, description="for an alert without expires"),
        ] = None,
        text: Annotated[
            str | None,
            Query(min_length=1, max_length=500,
                  description="what speakers say instead of the alert's text"),
        ] = None,
        confirm_extreme: Annotated[bool, Query()] = False,
    ) -> BroadcastDetail:
        data = await read_cap(request)
        r = runtime()
        name = _name(who, by)
        try:
            fields = cap.from_cap_xml(bytes(data), language=language)
            found = await r.broadcasts.find_by_cap(cap.reference_keys(fields))
            bc = cap.to_broadcast(
                fields, by=name, centre_id=centre_id, now=clock(), known=found,
                live=await r.broadcasts.live_ids(b.id for b in found.values()),
                valid_for_s=valid_for_s, text=text,
            )
        except (cap.CapError, BroadcastError) as exc:
            raise HTTPException(422, str(exc)) from None
        for note in fields["notes"]:
            log.info(kv(event="cap_import_note", id=bc.id, note=note))
        return await detail(r, await create(
            r, bc, who=who, by=name, source="cap", address=_address(request),
            confirm_extreme=confirm_extreme,
            extra={"cap_identifier": fields["id"], "cap_sender": fields["sender"],
                   "joined": fields["joined"], "notes": fields["notes"][:20]},
        ))

    @router.post(
        "/cap/check",
        response_model=CapCheckOut,
        summary="What an import of a CAP 1.2 alert would do, sending nothing",
        description=(
            "Reads the alert as `POST /api/broadcasts/cap` would, with the same query, and "
            "says whether it would be taken: which <info> blocks are joined, the text's parts "
            "and length against the speakers' limit, whether expires is missing (give "
            "`valid_for_s`), what is left out, and the refusal if any. 422 for a document "
            "that is not a CAP 1.2 alert the centre can read."
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {t: {"schema": {"type": "string"}} for t in CAP_TYPES},
            }
        },
        responses={413: {"model": ErrorOut}, 415: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    )
    async def check_cap(
        request: Request,
        language: Annotated[str | None, Query(max_length=8)] = None,
        valid_for_s: Annotated[int | None, Query(ge=1, le=MAX_AHEAD_MS // 1000)] = None,
        text: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    ) -> CapCheckOut:
        data = await read_cap(request)
        r = runtime()
        try:
            fields = cap.from_cap_xml(bytes(data), language=language)
        except cap.CapError as exc:
            raise HTTPException(422, str(exc)) from None
        refusal = None
        villages = [str(a["village"]) for a in fields.get("area") or []]
        try:
            found = await r.broadcasts.find_by_cap(cap.reference_keys(fields))
            bc = cap.to_broadcast(
                fields, by="check", centre_id=centre_id, now=clock(), known=found,
                live=await r.broadcasts.live_ids(b.id for b in found.values()),
                valid_for_s=valid_for_s, text=text,
            )
            villages = [a.village for a in bc.area]
        except (cap.CapError, BroadcastError) as exc:
            refusal = str(exc)
        spoken = text if text is not None else str(fields.get("text") or "")
        return CapCheckOut(
            acceptable=refusal is None, refusal=refusal, identifier=fields["id"],
            sender=fields["sender"], msgType=fields["msgType"], status=fields["status"],
            info=bool(fields["info"]), joined=fields["joined"],
            parts=[PartOut(**p) for p in fields["parts"]], text_length=len(spoken),
            text_limit=MAX_TEXT, expires_missing=bool(fields["info"]) and fields["expires"] is None,
            villages=villages, notes=fields["notes"],
        )

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
        bc_id: Annotated[str, Path(max_length=40)], body: CancelIn, request: Request, who: Who
    ) -> CancelOut:
        r = runtime()
        now = clock()
        by = _name(who, body.by)

        def make_cancel(
            orig: StoredBroadcast, due: list[GatewayCopy]
        ) -> tuple[Broadcast, list[Copy]]:
            c = _cancel_of(orig.bc, centre_id, by, now)
            return c, [Copy(g.gw, g.area, *signed_copy(r.key, c, g.gw, g.area)) for g in due]

        try:
            orig, cancel = await r.broadcasts.cancel(
                bc_id, by=by, note=body.note, now=now, make_cancel=make_cancel,
                actor=who if who is not None else by, address=_address(request),
            )
        except BroadcastNotFound:
            raise HTTPException(404, f"no broadcast {bc_id!r}") from None
        except CannotCancel as exc:
            raise HTTPException(409, str(exc)) from None
        if cancel is not None:
            log.info(kv(event="broadcast_cancelled", id=bc_id, cancel=cancel.bc.id, by=by))
            r.ingest.kick()
            r.live.publish("broadcast", {"id": cancel.bc.id})
        else:
            log.info(kv(event="broadcast_cancelled", id=bc_id, cancel="-", by=by))
        r.live.publish("broadcast", {"id": bc_id})
        cancel_out = None
        if cancel is not None:
            summary = (await r.broadcasts.summaries([cancel.bc.id]))[cancel.bc.id]
            cancel_out = _out(cancel, summary, clock())
        return CancelOut(broadcast=await detail(r, orig), cancel=cancel_out)

    @router.post(
        "/{bc_id}/approve",
        response_model=BroadcastDetail,
        summary="Release a broadcast awaiting a second broadcaster's approval",
        description=(
            "When the setting `approval` asks for it, a broadcast waits in state "
            "`awaiting_approval` until a different broadcaster approves it here (403 for the "
            "one who created it); it is then sent now, or at its start. To refuse it, cancel "
            "it. 409 if it is not awaiting approval or has expired."
        ),
        responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    )
    async def approve_broadcast(
        bc_id: Annotated[str, Path(max_length=40)], request: Request, who: Who
    ) -> BroadcastDetail:
        if who is None:
            raise HTTPException(403, "approval needs a logged-in broadcaster (请登录后批准)")
        r = runtime()
        try:
            stored = await r.broadcasts.approve(
                bc_id, who=who, now=clock(), address=_address(request)
            )
        except BroadcastNotFound:
            raise HTTPException(404, f"no broadcast {bc_id!r}") from None
        except SameBroadcaster as exc:
            raise HTTPException(403, str(exc)) from None
        except CannotApprove as exc:
            raise HTTPException(409, str(exc)) from None
        log.info(kv(event="broadcast_approved", id=bc_id, by=who.username, state=stored.state))
        if stored.state == "sending":
            r.ingest.kick()
        r.live.publish("broadcast", {"id": bc_id})
        return await detail(r, stored)

    return router


def settings_router(runtime: Callable[[], BroadcastRuntime], clock: Callable[[], int]) -> APIRouter:
    """GET/PUT /api/settings/broadcasts (admin): second approval, drill villages."""
    router = APIRouter(prefix="/api/settings", tags=["settings"])

    @router.get("/broadcasts", response_model=SettingsOut, summary="Broadcast settings")
    async def get_settings() -> SettingsOut:
        return SettingsOut(**(await runtime().broadcasts.settings()).as_json())

    @router.put(
        "/broadcasts",
        response_model=SettingsOut,
        summary="Change the broadcast settings (audited)",
        description=(
            "`approval`: none, extreme (severity Extreme to a whole village waits for a "
            "second broadcaster) or all. `drill_villages`: where an Exercise plays."
        ),
    )
    async def put_settings(body: SettingsIn, request: Request, who: Who) -> SettingsOut:
        new = Settings(body.approval, tuple(dict.fromkeys(body.drill_villages)))
        saved = await runtime().broadcasts.put_settings(
            new, actor=who if who is not None else "unauthenticated", now=clock(),
            address=_address(request),
        )
        log.info(kv(event="broadcast_settings", approval=saved.approval,
                    drill_villages=",".join(saved.drill_villages)))
        return SettingsOut(**saved.as_json())

    return router


async def read_cap(request: Request) -> bytes:
    """The request's body as a CAP document: 415 for another type, 413 over the limit."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in CAP_TYPES:
        raise HTTPException(415, f"send the alert as {CAP_TYPES[0]} (got {ctype or 'none'})")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > cap.MAX_XML:
            raise HTTPException(413, f"a CAP alert is at most {cap.MAX_XML} bytes")
    return bytes(data)


def _copy_out(c: GatewayCopy) -> GatewayCopyOut:
    return GatewayCopyOut(
        gw=c.gw,
        villages=[a.village for a in c.area],
        state=c.state,  # type: ignore[arg-type]  # the store's CHECK constraint
        sent_at=c.sent_at,
        reports=c.reports,
        last_report=c.last_report,
    )
