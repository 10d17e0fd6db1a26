"""The centre's HTTP API and staff web page (FastAPI).

`create_app(config)` builds the app; its lifespan opens the store, loads the centre's signing
key and runs the ingest task, the gateway watch, the broadcast scheduler and the escalation
chain (with the SMS modem when one is configured), and stops them on shutdown. Nothing happens
at construction. The broadcast routes are in `centre.bcapi`, the escalation routes in
`centre.escalation_api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints

from centre import frames, lifecycle, smsin, timeline
from centre.access import ACCESS
from centre.accounts import Accounts
from centre.auth import Authorize, Principal, current_principal
from centre.bcapi import broadcast_router, settings_router
from centre.bcstore import BroadcastStore
from centre.config import CentreConfig
from centre.console import HEARTBEAT_S, console_routes
from centre.contactpush import ContactPush
from centre.device_api import device_router
from centre.escalation import Escalation
from centre.escalation_api import escalation_router
from centre.escalation_wiring import CardContacts, ModemSender, modem_events
from centre.household_api import households_router
from centre.ingest import ClientFactory, Ingest, Metrics, broker_client, kv
from centre.live import LiveHub
from centre.scheduler import Scheduler
from centre.staffapi import staff_router
from centre.store import Event, Gateway, NotFound, Store, StoreError, event_data, now_ms
from modem import Modem
from transport import prom, servicelock
from transport.keys import load_private_key, public_hex
from transport.supervisor import supervise

log = logging.getLogger("onekey.centre.api")

StateName = Literal["open", "acked", "dispatched", "resolved", "cancelled", "test", "cancel"]
KindName = Literal["alarm", "cancel", "test"]
# The staff member acting (authenticated by the app's `authorize`; see centre.auth).
Who = Annotated[Principal, Depends(current_principal)]
EventId = Annotated[str, Path(max_length=100)]


class EventOut(BaseModel):
    """An alarm, cancel or test as the centre stored it. Times are Unix milliseconds, except
    `dev_ts` (the device's clock, Unix seconds)."""

    id: str = Field(description="{gateway}:{device}:{counter}, unique system-wide")
    gw: str
    seq: int = Field(description="the gateway's outbox sequence number")
    kind: KindName
    device: str
    counter: int
    ref: str | None = Field(description="for a cancel: the id of the alarm it cancels")
    village: str
    household: str
    gw_ts: int = Field(description="when the gateway received it")
    dev_ts: int | None
    dev_up: int | None
    received_at: int = Field(description="when the centre committed it")
    state: StateName = Field(
        description="alarm: open, acked, dispatched, resolved, or cancelled (by its device "
        "while still open); a test press: test; a cancel event: cancel"
    )
    acked_by: str | None
    acked_note: str | None
    acked_at: int | None
    cancelled_at: int | None = Field(
        description="when its device cancelled it; an alarm staff had taken charge of keeps "
        "its state"
    )
    dispatched_to: str | None = Field(description="the responder sent (the last one)")
    dispatched_note: str | None
    dispatched_at: int | None
    dispatched_by: str | None
    resolved_at: int | None
    resolved_by: str | None
    outcome: str | None = Field(description="an id of GET /api/alarm-outcomes")
    resolved_note: str | None


class AckIn(BaseModel):
    by: Annotated[
        str | None, StringConstraints(strip_whitespace=True, max_length=frames.MAX_BY)
    ] = Field(
        default=None,
        description="accepted from older clients and ignored: the logged-in staff member's "
        "display name is what is stored and sent to the button",
    )
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=frames.MAX_NOTE)] = (
        Field(default="", description="what is being done, e.g. 'village doctor on the way'")
    )


_Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=lifecycle.MAX_NOTE)]


class DispatchIn(BaseModel):
    responder: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=lifecycle.MAX_RESPONDER),
    ] = Field(description="who is sent, e.g. 'village doctor Zhang'")
    note: _Note = Field(default="", description="e.g. 'by car, 10 minutes'")


class ResolveIn(BaseModel):
    outcome: str = Field(description="an id of GET /api/alarm-outcomes")
    note: _Note = Field(default="", description="what happened (required with outcome `other`)")


class OutcomeOut(BaseModel):
    id: str
    zh: str
    en: str


class StepOut(BaseModel):
    at: int = Field(description="Unix ms, the centre's clock")
    kind: str = Field(
        description="received, acked, dispatched, resolved, cancelled, or an escalation step"
    )
    actor: str = Field(description="a staff member's display name, `device` or `system`")
    detail: dict[str, Any]


class StoreStateOut(BaseModel):
    """A gateway's §6.5 `store`: ok false (and full true on a full disk) means it is storing
    nothing: devices keep their alarms and send them again until space is freed there."""

    ok: bool
    full: bool = Field(description="the last write failed because its disk is full")
    failed: int = Field(description="writes that failed since the last one that committed")
    free_bytes: int = Field(description="free space on its store's disk (-1: unknown)")


class GatewayOut(BaseModel):
    id: str
    name: str
    public_key: str
    enrolled_at: int
    last_seen: int | None = Field(description="centre time of the last good heartbeat")
    outbox: int | None = Field(description="events the gateway has not yet had received (-1: unknown)")
    devices: int | None
    online: bool = Field(description="a heartbeat arrived within gateway_timeout_s")
    villages: list[str] = Field(description="villages given at enrolment")
    reported_villages: list[str] | None = Field(
        description="villages its last heartbeat listed (null: its heartbeats list none)"
    )
    store: StoreStateOut | None = Field(
        default=None,
        description="whether it can write its store, as its last heartbeat said (null: its "
        "heartbeats do not say)",
    )


class MetricsOut(BaseModel):
    connected: bool = Field(description="the centre is connected to the centre broker")
    counts: dict[str, int]
    rejected: dict[str, int] = Field(description="refused messages by reason")
    pending_downlinks: int = Field(
        description="staff acks and broadcast copies not yet confirmed by their gateway (§6.6)"
    )
    gateways_offline: int = Field(description="enrolled gateways silent beyond the timeout")


class HealthOut(BaseModel):
    status: Literal["ok"]
    broker: bool


class ErrorOut(BaseModel):
    detail: str


@dataclass
class _Runtime:
    store: Store
    broadcasts: BroadcastStore
    key: Ed25519PrivateKey
    ingest: Ingest
    scheduler: Scheduler
    accounts: Accounts
    live: LiveHub
    escalation: Escalation


def _event_out(ev: Event) -> EventOut:
    return EventOut.model_validate(event_data(ev))


def create_app(
    config: CentreConfig,
    *,
    client_factory: ClientFactory = broker_client,
    clock: Callable[[], int] = now_ms,
    scheduler_period_s: float = 1.0,
    stream_heartbeat_s: float = HEARTBEAT_S,
) -> FastAPI:
    metrics = Metrics()
    # What changed, for the consoles' server push: publishers call it after their commit.
    live = LiveHub()
    rt: _Runtime | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal rt
        key = load_private_key(config.key_path)
        # Held while the store is open, so that `onekey centre restore` refuses to run.
        lock = servicelock.ServiceLock(config.db_path)
        try:
            lock.acquire()
        except servicelock.ServiceLockedError as exc:
            raise StoreError(f"{exc}; is another centre running on this database? stop it first") from None
        try:
            store = Store(config.db_path)
            await store.open()
        except BaseException:
            lock.release()
            raise
        ingest = Ingest(
            config, store, key, metrics, client_factory=client_factory, clock=clock, live=live
        )
        scheduler = Scheduler(
            ingest.broadcasts, ingest.kick, clock, metrics, period_s=scheduler_period_s
        )
        # Alarms by SMS (§10): the centre's modem task hands each incoming SMS to
        # `smsin.handle_incoming` first. The contact lists gateways keep (§11).
        smsin.attach(smsin.SmsIngest(store, metrics, live, clock))
        contact_push = ContactPush(store, key, ingest.kick, clock)
        # The modem keeps itself usable (it re-opens an unplugged port); without one configured
        # the chain still runs, shows the alert and waits (docs/centre.md, Escalation).
        device = (
            Modem(config.modem_port, config.modem_baudrate,
                  on_state=lambda ch: metrics.set_modem_state(ch.state))  # `/metrics` modem state
            if config.modem_port else None
        )
        escalation = Escalation(
            store, CardContacts(), ModemSender(device), timeline.add, live, config.escalation,
            clock, period_s=config.escalation_period_s,
            send_timeout_s=config.escalation_send_timeout_s,
            max_start_age_s=config.escalation_max_start_age_s,
        )
        if device is not None:
            await device.start(timeout=0)  # not waiting: the centre serves alarms meanwhile

        def crashed(task: str) -> None:
            metrics.inc("task_crashes")
            metrics.inc(f"task_crashes_{task}")

        runs: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("ingest", ingest.run),
            ("watch-gateways", ingest.watch_gateways),
            ("broadcast-scheduler", scheduler.run),
            ("contacts", contact_push.run),
            ("escalation", escalation.run),
        ]
        if device is not None:
            modem = device
            runs.append(("escalation-modem", lambda: escalation.consume(modem_events(modem))))
        # Each under supervision: one that fails is logged and restarted, the others go on.
        tasks = [
            asyncio.create_task(supervise(name, run, log=log, on_crash=crashed), name=f"centre-{name}")
            for name, run in runs
        ]
        accounts = Accounts(store, config.auth, clock)
        rt = _Runtime(store, ingest.broadcasts, key, ingest, scheduler, accounts, live, escalation)
        log.info(kv(event="centre_started", public_key=public_hex(key), db=config.db_path))
        try:
            yield
        finally:
            rt = None
            smsin.attach(None)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if device is not None:
                await device.close()
            await store.close()
            lock.release()
            log.info(kv(event="centre_stopped"))

    def runtime() -> _Runtime:
        if rt is None:
            raise HTTPException(503, "the centre is starting or stopping")
        return rt

    app = FastAPI(
        title="onekey township centre",
        version="1",
        description=(
            "Alarms from village gateways, staff acknowledgement, gateway supervision, "
            "village broadcasts (JSON and CAP 1.2)."
        ),
        lifespan=lifespan,
        # The API description is served below to logged-in staff only.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics = metrics
    # Every request passes here first: login, role and CSRF (centre.auth, centre.access).
    app.add_middleware(
        Authorize, access=ACCESS, accounts=lambda: None if rt is None else rt.accounts
    )
    app.state.live = live

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError) -> JSONResponse:
        log.error(kv(event="store_failed", path=request.url.path, error=str(exc)))
        return JSONResponse({"detail": "the centre's database failed; see its log"}, 503)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    console_routes(app, live, heartbeat_s=stream_heartbeat_s)

    @app.get("/healthz", response_model=HealthOut, responses={503: {"model": ErrorOut}})
    async def healthz() -> HealthOut:
        r = runtime()
        try:
            await r.store.count_downlinks()
        except StoreError as exc:
            raise HTTPException(503, f"database: {exc}") from None
        return HealthOut(status="ok", broker=metrics.connected)

    @app.get(
        "/api/alarms",
        response_model=list[EventOut],
        summary="List events, newest first",
        description=(
            "Every alarm, cancel and test press by default (the history). The console's work "
            "list is `active=true`: the real alarms staff still have to handle (open, acked, "
            "dispatched), never a test press; test presses are listed apart with `kind=test`."
        ),
    )
    async def list_alarms(
        state: Annotated[StateName | None, Query(description="filter by state")] = None,
        village: Annotated[str | None, Query(max_length=frames.MAX_TEXT)] = None,
        kind: Annotated[KindName | None, Query()] = None,
        gw: Annotated[str | None, Query(max_length=32)] = None,
        since: Annotated[
            int | None, Query(ge=0, description="received_at at or after (Unix ms)")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        active: Annotated[
            bool, Query(description="only alarms still to handle: open, acked, dispatched")
        ] = False,
    ) -> list[EventOut]:
        events = await runtime().store.list_events(
            state=state, village=village, kind=kind, gw=gw, since=since, limit=limit,
            active=active,
        )
        return [_event_out(ev) for ev in events]

    @app.get("/api/alarm-outcomes", response_model=list[OutcomeOut])
    async def alarm_outcomes() -> list[OutcomeOut]:
        """How an alarm can end (`outcome` of POST /api/alarms/{id}/resolve), zh-CN and English."""
        return [OutcomeOut(id=o.id, zh=o.zh, en=o.en) for o in lifecycle.OUTCOMES]

    @app.get(
        "/api/alarms/{event_id}", response_model=EventOut, responses={404: {"model": ErrorOut}}
    )
    async def get_alarm(event_id: Annotated[str, Path(max_length=100)]) -> EventOut:
        ev = await runtime().store.get_event(event_id)
        if ev is None:
            raise HTTPException(404, f"no event {event_id!r}")
        return _event_out(ev)

    @app.get(
        "/api/alarms/{event_id}/timeline",
        response_model=list[StepOut],
        summary="The alarm's steps, oldest first",
        responses={404: {"model": ErrorOut}},
    )
    async def alarm_timeline(event_id: Annotated[str, Path(max_length=100)]) -> list[StepOut]:
        try:
            steps = await runtime().store.timeline(event_id)
        except NotFound:
            raise HTTPException(404, f"no event {event_id!r}") from None
        return [StepOut(at=s.at, kind=s.kind, actor=s.actor, detail=s.detail) for s in steps]

    async def step(
        request: Request,
        event_id: str,
        verb: str,
        run: Callable[[lifecycle.MakeDownlink, str], Awaitable[lifecycle.StepResult]],
        who: Principal,
    ) -> EventOut:
        """One lifecycle step: the store's transaction, then the gateway's ack and the live
        push once it committed."""
        r = runtime()

        def downlink(ev: Event) -> tuple[str, bytes]:
            return frames.signed_ack(r.key, ev.gw, frames.ack_body(ev))

        address = request.client.host if request.client else ""
        try:
            result = await run(downlink, address)
        except NotFound:
            raise HTTPException(404, f"no event {event_id!r}") from None
        except lifecycle.Refused as exc:
            raise HTTPException(409, str(exc)) from None
        except lifecycle.BadOutcome as exc:
            raise HTTPException(422, str(exc)) from None
        if result.downlink is not None:
            log.info(kv(event="staff_ack", id=event_id, by=result.event.acked_by or "-"))
            r.ingest.kick()
        if result.changed:
            log.info(kv(event=f"staff_{verb}", id=event_id, by=who.username,
                        state=result.event.state))
            live.publish("alarm", event_data(result.event))
            r.escalation.kick()  # a chain of this alarm stops now, not at its next look
        return _event_out(result.event)

    app.include_router(staff_router(lambda: runtime().accounts))
    app.include_router(escalation_router(lambda: runtime().escalation, clock))
    refusals: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorOut}, 409: {"model": ErrorOut}
    }

    @app.post(
        "/api/alarms/{event_id}/ack",
        response_model=EventOut,
        summary="Acknowledge an open alarm",
        description=(
            "The logged-in staff member takes charge: the alarm is acked and a signed `acked` "
            "ack (with their display name and the note) goes to its gateway, which relays it "
            "to the button. `by` in the body is accepted from older clients and ignored. "
            "Acknowledging an alarm already acknowledged changes nothing and returns it. A "
            "test press, a cancel event, an alarm its device cancelled while open, or a "
            "resolved alarm cannot be acknowledged (409)."
        ),
        responses=refusals,
    )
    async def ack_alarm(event_id: EventId, body: AckIn, who: Who, request: Request) -> EventOut:
        at = clock()
        return await step(
            request, event_id, "ack",
            lambda dl, addr: lifecycle.acknowledge(
                runtime().store, event_id, who, body.note, at, dl, addr
            ),
            who,
        )

    @app.post(
        "/api/alarms/{event_id}/dispatch",
        response_model=EventOut,
        summary="Send a responder to an alarm",
        description=(
            "From acked: dispatched to the named responder. From open: acknowledged first (the "
            "button shows it), then dispatched, in one step. From dispatched: another responder "
            "is sent instead (both stay on the timeline). Refused (409) for a test press, a "
            "cancel event, an alarm its device cancelled while open, or a resolved alarm."
        ),
        responses=refusals,
    )
    async def dispatch_alarm(
        event_id: EventId, body: DispatchIn, who: Who, request: Request
    ) -> EventOut:
        at = clock()
        return await step(
            request, event_id, "dispatch",
            lambda dl, addr: lifecycle.dispatch(
                runtime().store, event_id, who, body.responder, body.note, at, dl, addr
            ),
            who,
        )

    @app.post(
        "/api/alarms/{event_id}/resolve",
        response_model=EventOut,
        summary="Close an alarm with an outcome",
        description=(
            "From acked or dispatched (from open: acknowledged first). `outcome` is an id of "
            "GET /api/alarm-outcomes (422 otherwise; `other` needs a note). Refused (409) for "
            "a test press, a cancel event, an alarm its device cancelled while open, or one "
            "already resolved."
        ),
        responses={**refusals, 422: {"model": ErrorOut}},
    )
    async def resolve_alarm(
        event_id: EventId, body: ResolveIn, who: Who, request: Request
    ) -> EventOut:
        at = clock()
        return await step(
            request, event_id, "resolve",
            lambda dl, addr: lifecycle.resolve(
                runtime().store, event_id, who, body.outcome, body.note, at, dl, addr
            ),
            who,
        )

    app.include_router(broadcast_router(runtime, config.client_id, clock))
    app.include_router(settings_router(runtime, clock))
    # Personal data (names, phones, addresses) lives here only; gateways know household ids.
    app.include_router(households_router(lambda: runtime().store, clock))
    # Device supervision: the device list and the items staff acknowledge (docs/centre.md).
    app.include_router(device_router(lambda: runtime().store, clock, live))

    @app.get("/api/gateways", response_model=list[GatewayOut])
    async def list_gateways() -> list[GatewayOut]:
        now = clock()
        timeout_ms = int(config.gateway_timeout_s * 1000)
        return [_gateway_out(g, now, timeout_ms) for g in await runtime().store.list_gateways()]

    @app.get("/api/metrics", response_model=MetricsOut)
    async def get_metrics() -> MetricsOut:
        pending = await runtime().store.count_downlinks()
        return MetricsOut(
            connected=metrics.connected,
            counts=dict(metrics.counts),
            rejected=dict(metrics.rejected),
            pending_downlinks=pending,
            gateways_offline=metrics.gateways_offline,
        )

    @app.get("/metrics", response_class=Response, include_in_schema=False)
    async def prometheus() -> Response:
        # Prometheus text format (docs/centre.md, "Metrics"); a staff API token authorises it.
        body = await metrics.prom.scrape(
            runtime().store, clock(), int(config.gateway_timeout_s * 1000)
        )
        return Response(body, media_type=prom.CONTENT_TYPE)

    return app


def _gateway_out(g: Gateway, now: int, timeout_ms: int) -> GatewayOut:
    online = g.last_seen is not None and now - g.last_seen <= timeout_ms
    return GatewayOut(
        id=g.id,
        name=g.name,
        public_key=g.public_key,
        enrolled_at=g.enrolled_at,
        last_seen=g.last_seen,
        outbox=g.outbox,
        devices=g.devices,
        online=online,
        villages=list(g.villages),
        reported_villages=None if g.reported_villages is None else list(g.reported_villages),
        store=None if g.store is None else StoreStateOut(**dataclasses.asdict(g.store)),
    )
