"""The escalation chain's routes: an alarm's chain, live for the console; the policy (admins
change it, every change audited as `escalation.policy_put` / `escalation.policy_delete`);
the modem's state.

| method | path | least role |
| --- | --- | --- |
| GET | /api/alarms/{event_id}/escalation | operator |
| GET | /api/escalation/policy | operator |
| GET | /api/escalation/policy/effective?village=&household= | operator |
| PUT | /api/escalation/policy/township | admin |
| PUT, DELETE | /api/escalation/policy/villages/{village} | admin |
| PUT, DELETE | /api/escalation/policy/households/{household_id} | admin |
| GET | /api/modem | operator |
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from centre import audit
from centre import escalation_policy as ep
from centre.auth import Principal, current_principal
from centre.escalation import Escalation
from centre.escalation_view import view
from centre.store import fetch_all

Who = Annotated[Principal, Depends(current_principal)]
VillagePath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
HouseholdPath = Annotated[str, Path(pattern=r"^[^\x00-\x1f/]{1,64}$")]


class PolicyIn(BaseModel):
    """The fields this scope changes; a field left out (or null) is inherited."""

    enabled: bool | None = None
    t1_s: float | None = Field(default=None, description="seconds unacknowledged before the chain starts")
    t2_s: float | None = Field(default=None, description="seconds each step waits for a confirmation")
    order: list[str] | None = Field(
        default=None, description='groups of contact kinds, e.g. ["leader+grid", "family", "doctor"]'
    )
    rounds: int | None = Field(default=None, description=f"1..{ep.MAX_ROUNDS}")


class PolicyOut(BaseModel):
    enabled: bool
    t1_s: float
    t2_s: float
    order: list[str]
    rounds: int


class OverrideOut(BaseModel):
    scope: str = Field(description="township, village:<id> or household:<id>")
    settings: dict[str, Any]
    updated_at: int
    updated_by: str


class PolicyListOut(BaseModel):
    defaults: PolicyOut = Field(description="from the centre's configuration")
    overrides: list[OverrideOut]


class ModemOut(BaseModel):
    state: str = Field(
        description="ok, starting, no_network, sim_missing, gone (unplugged), absent (none "
        "configured)"
    )
    detail: str
    can_send: bool = Field(description="false: the escalation chain waits for the modem")
    alert: bool = Field(description="true: the modem is not there; staff must phone by hand")


def escalation_router(engine: Callable[[], Escalation], clock: Callable[[], int]) -> APIRouter:
    router = APIRouter(tags=["escalation"])

    @router.get(
        "/api/alarms/{event_id}/escalation",
        summary="An alarm's escalation chain: its steps, SMS, replies and who confirmed",
    )
    async def get_chain(event_id: Annotated[str, Path(max_length=100)]) -> dict[str, Any]:
        e = engine()
        async with e.store.transaction(write=False) as db:
            out = await view(db, event_id, e.defaults)
        if out is None:
            raise HTTPException(404, f"no event {event_id!r}")
        out["modem"] = e.sender.status().to_json()
        return out

    @router.get("/api/escalation/policy", summary="The township defaults and every override")
    async def get_policy() -> PolicyListOut:
        e = engine()
        async with e.store.transaction(write=False) as db:
            rows = await fetch_all(
                db, "SELECT scope, settings, updated_at, updated_by FROM escalation_policy "
                "ORDER BY scope", (),
            )
        return PolicyListOut(
            defaults=PolicyOut(**e.defaults.to_json()),
            overrides=[OverrideOut(scope=r[0], settings=json.loads(r[1]), updated_at=r[2],
                                   updated_by=r[3]) for r in rows],
        )

    @router.get("/api/escalation/policy/effective", summary="The policy one household gets")
    async def get_effective(
        village: Annotated[str, Query(max_length=32)] = "",
        household: Annotated[str, Query(max_length=64)] = "",
    ) -> PolicyOut:
        e = engine()
        async with e.store.transaction(write=False) as db:
            overrides = await ep.load_overrides(db)
        return PolicyOut(**ep.effective(e.defaults, overrides, village, household).to_json())

    async def put(scope: str, body: PolicyIn, who: Principal, request: Request) -> OverrideOut:
        try:
            settings = ep.check_override(body.model_dump(exclude_none=True))
        except ep.PolicyError as exc:
            raise HTTPException(422, str(exc)) from None
        e, now = engine(), clock()
        async with e.store.transaction() as db:
            await ep.put_override(db, scope, settings, now, who.username)
            await audit.record(db, now, who, "escalation.policy_put", scope, settings,
                               request.client.host if request.client else "")
        e.kick()
        return OverrideOut(scope=scope, settings=settings, updated_at=now, updated_by=who.username)

    async def delete(scope: str, who: Principal, request: Request) -> None:
        e, now = engine(), clock()
        async with e.store.transaction() as db:
            if not await ep.delete_override(db, scope):
                raise HTTPException(404, f"no policy override for {scope}")
            await audit.record(db, now, who, "escalation.policy_delete", scope, {},
                               request.client.host if request.client else "")
        e.kick()

    @router.put("/api/escalation/policy/township", summary="Set the township's policy")
    async def put_township(body: PolicyIn, who: Who, request: Request) -> OverrideOut:
        return await put(ep.township_scope(), body, who, request)

    @router.put("/api/escalation/policy/villages/{village}", summary="Set a village's override")
    async def put_village(
        village: VillagePath, body: PolicyIn, who: Who, request: Request
    ) -> OverrideOut:
        return await put(ep.village_scope(village), body, who, request)

    @router.delete(
        "/api/escalation/policy/villages/{village}", status_code=204,
        summary="Remove a village's override",
    )
    async def delete_village(village: VillagePath, who: Who, request: Request) -> None:
        await delete(ep.village_scope(village), who, request)

    @router.put(
        "/api/escalation/policy/households/{household_id}", summary="Set a household's override"
    )
    async def put_household(
        household_id: HouseholdPath, body: PolicyIn, who: Who, request: Request
    ) -> OverrideOut:
        return await put(ep.household_scope(household_id), body, who, request)

    @router.delete(
        "/api/escalation/policy/households/{household_id}", status_code=204,
        summary="Remove a household's override",
    )
    async def delete_household(household_id: HouseholdPath, who: Who, request: Request) -> None:
        await delete(ep.household_scope(household_id), who, request)

    @router.get("/api/modem", summary="The SMS modem's state (the console's alert)")
    async def get_modem() -> ModemOut:
        return ModemOut(**engine().sender.status().to_json())

    return router
