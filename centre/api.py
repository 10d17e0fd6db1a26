"""The centre's HTTP API and staff web page (FastAPI).

`create_app(config)` builds the app; its lifespan opens the store, loads the centre's signing
key and runs the ingest task, the gateway watch and the broadcast scheduler, and stops them on
shutdown. Nothing happens at construction. The broadcast routes are in `centre.bcapi`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from centre import frames
from centre.bcapi import broadcast_router
from centre.bcstore import BroadcastStore
from centre.config import CentreConfig
from centre.console import HEARTBEAT_S, console_routes
from centre.households import households_router
from centre.ingest import ClientFactory, Ingest, Metrics, broker_client, kv
from centre.live import LiveHub
from centre.scheduler import Scheduler
from centre.store import Event, Gateway, NotFound, NotOpen, Store, StoreError, now_ms
from transport import servicelock
from transport.keys import load_private_key, public_hex
from transport.supervisor import supervise

log = logging.getLogger("onekey.centre.api")

StateName = Literal["open", "acked", "cancelled", "test", "cancel"]
KindName = Literal["alarm", "cancel", "test"]


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
        description="alarm: open, acked or cancelled; a test: test; a cancel event: cancel"
    )
    acked_by: str | None
    acked_note: str | None
    acked_at: int | None
    cancelled_at: int | None


class AckIn(BaseModel):
    by: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=frames.MAX_BY)
    ] = Field(description="name of the staff member who takes charge")
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=frames.MAX_NOTE)] = (
        Field(default="", description="what is being done, e.g. 'village doctor on the way'")
    )


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


def _event_out(ev: Event) -> EventOut:
    return EventOut.model_validate(asdict(ev))


def create_app(
    config: CentreConfig,
    *,
    client_factory: ClientFactory = broker_client,
    clock: Callable[[], int] = now_ms,
    scheduler_period_s: float = 1.0,
    stream_heartbeat_s: float = HEARTBEAT_S,
) -> FastAPI:
    metrics = Metrics()
    rt: _Runtime | None = None
    # What changed, for the consoles' server push: publishers call it after their commit.
    live = LiveHub()

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
        def crashed(task: str) -> None:
            metrics.inc("task_crashes")
            metrics.inc(f"task_crashes_{task}")

        # Each under supervision: one that fails is logged and restarted, the others go on.
        tasks = [
            asyncio.create_task(supervise(name, run, log=log, on_crash=crashed), name=f"centre-{name}")
            for name, run in (
                ("ingest", ingest.run),
                ("watch-gateways", ingest.watch_gateways),
                ("broadcast-scheduler", scheduler.run),
            )
        ]
        rt = _Runtime(store, ingest.broadcasts, key, ingest, scheduler)
        log.info(kv(event="centre_started", public_key=public_hex(key), db=config.db_path))
        try:
            yield
        finally:
            rt = None
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
        # FastAPI's own docs pages load Swagger UI from a CDN; the console serves its own.
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics = metrics
    app.state.live = live

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError) -> JSONResponse:
        log.error(kv(event="store_failed", path=request.url.path, error=str(exc)))
        return JSONResponse({"detail": "the centre's database failed; see its log"}, 503)

    console_routes(app, live, heartbeat_s=stream_heartbeat_s)

    @app.get("/healthz", response_model=HealthOut, responses={503: {"model": ErrorOut}})
    async def healthz() -> HealthOut:
        r = runtime()
        try:
            await r.store.count_downlinks()
        except StoreError as exc:
            raise HTTPException(503, f"database: {exc}") from None
        return HealthOut(status="ok", broker=metrics.connected)

    @app.get("/api/alarms", response_model=list[EventOut], summary="List events, newest first")
    async def list_alarms(
        state: Annotated[StateName | None, Query(description="filter by state")] = None,
        village: Annotated[str | None, Query(max_length=frames.MAX_TEXT)] = None,
        kind: Annotated[KindName | None, Query()] = None,
        gw: Annotated[str | None, Query(max_length=32)] = None,
        since: Annotated[
            int | None, Query(ge=0, description="received_at at or after (Unix ms)")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[EventOut]:
        events = await runtime().store.list_events(
            state=state, village=village, kind=kind, gw=gw, since=since, limit=limit
        )
        return [_event_out(ev) for ev in events]

    @app.get(
        "/api/alarms/{event_id}", response_model=EventOut, responses={404: {"model": ErrorOut}}
    )
    async def get_alarm(event_id: Annotated[str, Path(max_length=100)]) -> EventOut:
        ev = await runtime().store.get_event(event_id)
        if ev is None:
            raise HTTPException(404, f"no event {event_id!r}")
        return _event_out(ev)

    @app.post(
        "/api/alarms/{event_id}/ack",
        response_model=EventOut,
        summary="Acknowledge an open alarm",
        description=(
            "Marks the alarm acked and sends a signed `acked` ack (with by and note) to its "
            "gateway, which relays it to the button. Acknowledging an alarm that is already "
            "acked changes nothing and returns it. A test, a cancel or a cancelled alarm "
            "cannot be acknowledged (409)."
        ),
        responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    )
    async def ack_alarm(
        event_id: Annotated[str, Path(max_length=100)], body: AckIn
    ) -> EventOut:
        r = runtime()

        def downlink(ev: Event) -> tuple[str, bytes]:
            return frames.signed_ack(r.key, ev.gw, frames.ack_body(ev))

        try:
            result = await r.store.ack_event(event_id, body.by, body.note, clock(), downlink)
        except NotFound:
            raise HTTPException(404, f"no event {event_id!r}") from None
        except NotOpen as exc:
            raise HTTPException(409, str(exc)) from None
        if result.changed:
            log.info(kv(event="staff_ack", id=event_id, by=body.by))
            r.ingest.kick()
            live.publish("alarm", asdict(result.event))
        return _event_out(result.event)

    app.include_router(broadcast_router(runtime, config.client_id, clock))
    # Personal data (names, phones, addresses) lives here only; gateways know household ids.
    app.include_router(households_router(config.db_path))

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
    )
