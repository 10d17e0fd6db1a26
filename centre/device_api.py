"""The device part of the centre's HTTP API (docs/centre.md, "Devices").

`device_router(store, clock)` returns the routes; `centre.api` includes them. All need an
operator (`centre.access`). Acknowledging an item writes its timeline step and audit line
(`device_event.ack`) in one transaction and is pushed on the live hub (topic `device`).

| method | path | what |
| --- | --- | --- |
| GET | /api/devices?village= | every supervised device: status, last seen, battery, firmware, profile |
| GET | /api/device-events?village=&open=&limit= | supervision events, newest first (`open`: not yet acked) |
| GET | /api/device-events/{id} | one event with its timeline |
| POST | /api/device-events/{id}/ack | staff acknowledge a raised item (lost, low battery, fault, tamper) |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from centre import devices
from centre.auth import Principal, current_principal
from centre.live import LiveHub
from centre.staffapi import address
from centre.store import NotFound, Store

Who = Annotated[Principal, Depends(current_principal)]
EventId = Annotated[str, PathParam(max_length=120)]
Village = Annotated[str | None, Query(max_length=32, pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]


class ErrorOut(BaseModel):
    detail: str


class DeviceOut(BaseModel):
    gw: str
    id: str
    village: str
    household: str
    role: str
    power: str = Field(description="mains or battery, chosen at provisioning")
    period_s: int = Field(description="its heartbeat (mains) or check-in (battery) period")
    lost_after_s: int = Field(description="the silence after which its gateway calls it lost")
    status: str = Field(description="ok, lost, tamper, fault or low_battery (most serious)")
    lost: bool
    low_battery: bool
    fault: str | None
    tamper: bool
    last_seen: int | None = Field(description="gateway ms when last heard, as last reported")
    bat: int | None
    fw: str | None
    updated_at: int


class DeviceEventOut(BaseModel):
    id: str
    gw: str
    seq: int
    device: str
    what: str
    village: str
    household: str
    gw_ts: int
    received_at: int
    sup: dict[str, Any]
    raised: bool = Field(description="an item for staff (lost, low_battery, fault, tamper)")
    cleared_at: int | None
    acked_by: str | None
    acked_note: str | None
    acked_at: int | None


class StepOut(BaseModel):
    at: int
    kind: str
    actor: str
    detail: dict[str, Any]


class DeviceEventDetailOut(DeviceEventOut):
    timeline: list[StepOut]


class AckIn(BaseModel):
    note: str = Field("", max_length=200)


def device_router(
    store: Callable[[], Store], clock: Callable[[], int], live: LiveHub
) -> APIRouter:
    router = APIRouter(tags=["devices"])
    missing: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}

    @router.get("/api/devices", response_model=list[DeviceOut], summary="Supervised devices")
    async def list_devices(village: Village = None) -> list[DeviceOut]:
        return [DeviceOut(**devices.device_data(d))
                for d in await devices.list_devices(store(), village)]

    @router.get(
        "/api/device-events", response_model=list[DeviceEventOut],
        summary="Supervision events, newest first",
    )
    async def list_events(
        village: Village = None,
        open: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[DeviceEventOut]:
        evs = await devices.list_events(store(), village=village, open_only=open, limit=limit)
        return [DeviceEventOut(**devices.event_data(e)) for e in evs]

    @router.get(
        "/api/device-events/{event_id}", response_model=DeviceEventDetailOut, responses=missing,
        summary="One supervision event with its timeline",
    )
    async def get_event(event_id: EventId) -> DeviceEventDetailOut:
        try:
            ev, steps = await devices.get_event(store(), event_id)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        return DeviceEventDetailOut(
            **devices.event_data(ev),
            timeline=[StepOut(at=s.at, kind=s.kind, actor=s.actor, detail=s.detail)
                      for s in steps],
        )

    @router.post(
        "/api/device-events/{event_id}/ack", response_model=DeviceEventOut,
        responses={**missing, 409: {"model": ErrorOut}},
        summary="Acknowledge a device item (lost, low battery, fault, tamper)",
    )
    async def ack_event(event_id: EventId, body: AckIn, who: Who, request: Request) -> DeviceEventOut:
        try:
            ev, changed = await devices.ack_event(
                store(), event_id, who, body.note, clock(), address(request)
            )
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except devices.NotRaised as exc:
            raise HTTPException(409, str(exc)) from None
        if changed:
            live.publish("device", {"event": devices.event_data(ev)})
        return DeviceEventOut(**devices.event_data(ev))

    return router
