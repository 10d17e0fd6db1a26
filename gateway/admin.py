"""The gateway's admin API: what `onekey provision` talks to.

A small HTTP API (FastAPI on uvicorn) served inside the gateway's own event loop, on
`[admin] listen:port` (default 127.0.0.1:8081). Every request needs `Authorization: Bearer
<token>`, the token being the contents of `[admin] token_file` (mode 0600, created at the
first start). Because it runs in the gateway process, a change is in the gateway's in-memory
registry before the answer leaves: a board provisioned a moment ago is accepted at once, and
a revoked one is refused at once.

| method | path | what |
| --- | --- | --- |
| GET | /admin/health | the gateway's id and village (checks the token) |
| POST | /admin/devices | register a board, or give an existing entry a new key; broker credentials |
| GET | /admin/devices | every registry entry |
| GET | /admin/devices/{id} | one entry, with last_seen, its status and the last test seen |
| DELETE | /admin/devices/{id} | revoke: the registry refuses it, its broker user is removed |
| GET | /metrics | Prometheus text format (docs/gateway.md, "Metrics"); the same bearer token |
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import socket
import sqlite3
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints

from device_fw import okproto
from gateway import registry
from gateway.brokerctl import BrokerControl, BrokerControlError
from gateway.config import AdminConfig, GatewayConfig
from gateway.errors import ConfigError, RegistryError
from gateway.metrics import Metrics
from gateway.registry import DeviceConflict, DeviceRecord, Registry, ReservedIdError
from gateway.store import Store
from transport import prom
from transport.keys import write_secret

log = logging.getLogger("onekey.gateway.admin")

T = TypeVar("T")

Id = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
HouseholdId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]


class DeviceIn(BaseModel):
    id: Id
    role: Literal["button", "speaker"]
    village: Id | None = Field(default=None, description="must be this gateway's village if given")
    household: HouseholdId
    groups: list[Id] = Field(default_factory=list, max_length=16)
    hw_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{0,64}$")] = Field(
        default="", description="hex of the board's machine.unique_id()"
    )
    force: bool = Field(default=False, description="take the id from another board or household")
    power: Literal["mains", "battery"] = Field(
        default="mains", description="the power profile the gateway supervises it by"
    )
    period_s: int = Field(
        default=0, ge=0, le=86400,
        description="its heartbeat (mains) or check-in (battery) period; 0: this gateway's "
        "default for the profile ([supervision] in gateway.toml)",
    )


class CredentialsOut(BaseModel):
    id: str
    role: str
    village: str
    household: str
    groups: list[str]
    created: bool = Field(description="false: an existing entry was given a new key")
    key_hex: str = Field(description="the device key (§3.2); it exists only here and on the board")
    mqtt_user: str
    mqtt_password: str
    broker_host: str
    broker_port: int
    counter_floor: int = Field(description="the board must count its messages from here")
    power: str = Field(description="mains or battery")
    period_s: int = Field(description="the heartbeat or check-in period the board must use")


class TestOut(BaseModel):
    counter: int
    gw_ts: int
    state: str


class DeviceOut(BaseModel):
    id: str
    role: str
    village: str
    household: str
    groups: list[str]
    enabled: bool
    hw_id: str
    created_at: int
    last_seen: int | None
    status: dict[str, Any] | None = Field(description="the device's last heartbeat")
    counter_floor: int
    last_test: TestOut | None
    power: str = Field(description="mains or battery")
    period_s: int = Field(description="heartbeat or check-in period; 0: the profile's default")


class RevokedOut(BaseModel):
    id: str
    revoked: Literal[True]
    broker_user_removed: bool


class HealthOut(BaseModel):
    gateway: str
    village: str


def ensure_token(path: Path) -> str:
    """The bearer token; created (0600) if the file does not exist yet."""
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(32).encode() + b"\n")
        log.info("event=admin_token_created file=%s", path)
    st = path.stat()
    if st.st_mode & 0o077:
        raise ConfigError(f"admin token {path} is readable by others; run: chmod 600 {path}")
    token = path.read_text().strip()
    if len(token) < 16:
        raise ConfigError(f"admin token {path} is shorter than 16 characters; delete it to renew")
    return token


@dataclass
class AdminContext:
    cfg: GatewayConfig
    admin: AdminConfig
    store: Store
    registry: Registry
    broker: BrokerControl
    token: str
    metrics: Metrics = field(default_factory=Metrics)


def _db(ctx: AdminContext, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn = registry.open_admin(ctx.cfg.db_path)
    try:
        return fn(conn)
    finally:
        conn.close()


def _device_out(rec: DeviceRecord) -> DeviceOut:
    status: dict[str, Any] | None = None
    if rec.status_json:
        with contextlib.suppress(ValueError):
            loaded = json.loads(rec.status_json)
            status = loaded if isinstance(loaded, dict) else None
    test = rec.last_test
    return DeviceOut(
        id=rec.id, role=rec.role, village=rec.village, household=rec.household,
        groups=list(rec.groups), enabled=rec.enabled, hw_id=rec.hw_id,
        created_at=rec.created_at, last_seen=rec.last_seen, status=status,
        counter_floor=rec.counter_floor,
        last_test=TestOut(counter=test[0], gw_ts=test[1], state=test[2]) if test else None,
        power=rec.power, period_s=rec.period_s,
    )


def _refuse_service_login(ctx: AdminContext, device_id: str) -> None:
    """A device id is never a service login's name (§1.1): neither a reserved one nor the user
    this gateway itself logs in to the village broker with, whatever its configuration says."""
    own = ctx.cfg.village_broker.user
    if okproto.reserved_id(device_id) or device_id == own:
        raise ReservedIdError(
            f"device id {device_id!r} is reserved: it names a service login on the brokers "
            f"({', '.join(okproto.RESERVED_IDS)}, {okproto.SERVICE_PREFIX}..., and this gateway's "
            f"own village login {own!r}), whose password and rights a device must never get "
            "(protocol §1.1); choose another id"
        )


def create_app(ctx: AdminContext) -> FastAPI:
    app = FastAPI(title="onekey gateway admin", version="1", docs_url=None, redoc_url=None)

    def authorised(authorization: Annotated[str, Header()] = "") -> None:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), ctx.token.encode()):
            raise HTTPException(401, f"wrong or missing admin token; it is in {ctx.admin.token_file}")

    auth = [Depends(authorised)]

    @app.exception_handler(DeviceConflict)
    async def conflict(_: Any, exc: DeviceConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "code": exc.code}, 409)

    @app.exception_handler(ReservedIdError)
    async def reserved(_: Any, exc: ReservedIdError) -> JSONResponse:
        log.warning("event=admin_refused reason=reserved_id detail=%r", str(exc))
        return JSONResponse({"detail": str(exc), "code": "reserved"}, 400)

    @app.exception_handler(BrokerControlError)
    async def broker_failed(_: Any, exc: BrokerControlError) -> JSONResponse:
        log.error("event=admin_broker_failed error=%r", str(exc))
        return JSONResponse({"detail": str(exc), "code": "broker"}, 502)

    @app.get("/metrics", dependencies=auth, response_class=Response)
    async def metrics() -> Response:
        # The same token as the rest of this API: the listener is loopback by default, and a
        # scraper there reads the token file (docs/gateway.md, "Metrics").
        store = ctx.store
        health = store.health
        ctx.metrics.observe_store(
            await store.event_counts(), store.outbox_count, health.ok, health.full,
            health.failed, store.free_bytes(), len(ctx.registry.devices),
        )
        return Response(prom.render(ctx.metrics.registry), media_type=prom.CONTENT_TYPE)

    @app.get("/admin/health", dependencies=auth)
    async def health() -> HealthOut:
        return HealthOut(gateway=ctx.cfg.gateway_id, village=ctx.cfg.village)

    @app.post("/admin/devices", dependencies=auth)
    async def register(body: DeviceIn) -> CredentialsOut:
        if body.village is not None and body.village != ctx.cfg.village:
            raise HTTPException(
                400, f"this gateway serves village {ctx.cfg.village}, not {body.village}"
            )
        _refuse_service_login(ctx, body.id)

        # The period is recorded as the board will use it: this gateway's default for the
        # profile unless given, so that board and gateway agree (docs/gateway.md, Supervision).
        sup = ctx.cfg.supervision
        period_s = body.period_s or (
            sup.battery_period_s if body.power == "battery" else sup.mains_period_s
        )

        def write(conn: sqlite3.Connection) -> registry.Registration:
            return registry.register_device(
                conn, body.id, role=body.role, village=ctx.cfg.village, household=body.household,
                groups=body.groups, hw_id=body.hw_id, force=body.force, power=body.power,
                period_s=period_s,
            )

        try:
            reg = await asyncio.to_thread(_db, ctx, write)
        except (DeviceConflict, ReservedIdError):
            raise
        except RegistryError as exc:
            raise HTTPException(400, str(exc)) from None
        password = secrets.token_urlsafe(18)
        await ctx.broker.set_user(body.id, password)
        await ctx.registry.reload(ctx.store)
        log.info(
            "event=device_registered device=%s role=%s household=%s created=%s hw_id=%s"
            " power=%s period_s=%d",
            body.id, body.role, body.household, reg.created, body.hw_id or "-", body.power,
            period_s,
        )
        dev = reg.device
        return CredentialsOut(
            id=dev.id, role=dev.role, village=dev.village, household=dev.household,
            groups=list(dev.groups), created=reg.created, key_hex=dev.key.hex(),
            mqtt_user=dev.id, mqtt_password=password,
            broker_host=ctx.admin.device_broker_host, broker_port=ctx.admin.device_broker_port,
            counter_floor=reg.counter_floor, power=dev.power, period_s=dev.period_s,
        )

    @app.get("/admin/devices", dependencies=auth)
    async def list_all() -> list[DeviceOut]:
        recs = await asyncio.to_thread(_db, ctx, registry.device_records)
        return [_device_out(r) for r in recs]

    @app.get("/admin/devices/{device_id}", dependencies=auth)
    async def get_one(device_id: str) -> DeviceOut:
        rec = await asyncio.to_thread(_db, ctx, lambda c: registry.get_device(c, device_id))
        if rec is None:
            raise HTTPException(404, f"device {device_id} is not registered at this gateway")
        return _device_out(rec)

    @app.delete("/admin/devices/{device_id}", dependencies=auth)
    async def revoke(device_id: str) -> RevokedOut:
        # Never a service login: revoking would remove the gateway's own broker password.
        _refuse_service_login(ctx, device_id)
        # The registry first: from this moment the gateway refuses the device, whatever
        # happens to the broker step.
        try:
            await asyncio.to_thread(_db, ctx, lambda c: registry.revoke_device(c, device_id))
        except RegistryError as exc:
            raise HTTPException(404, str(exc)) from None
        await ctx.registry.reload(ctx.store)
        removed = await ctx.broker.remove_user(device_id)
        log.info("event=device_revoked device=%s broker_user_removed=%s", device_id, removed)
        return RevokedOut(id=device_id, revoked=True, broker_user_removed=removed)

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The gateway owns SIGTERM and SIGINT (gateway/cli.py); uvicorn must not take them.
        yield


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"admin API cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def serve(
    cfg: GatewayConfig, store: Store, reg: Registry, metrics: Metrics | None = None
) -> None:
    """Runs the admin API until cancelled. The socket is bound here, so that a port in use
    is an ordinary error for the supervisor, never a process exit."""
    admin = cfg.admin
    if admin is None or not admin.enabled:
        return
    token = await asyncio.to_thread(ensure_token, admin.token_file)
    broker = BrokerControl(
        admin.broker_passwd, admin.broker_reload, service_users=(cfg.village_broker.user,)
    )
    ctx = AdminContext(cfg, admin, store, reg, broker, token, metrics or Metrics())
    sock = _listen(admin.listen, admin.port)
    server = _Server(
        uvicorn.Config(
            create_app(ctx), log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=2,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]), name="gateway-admin-http")
    log.info("event=admin_listening addr=%s:%d", admin.listen, admin.port)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        raise
    except SystemExit:
        # uvicorn exits the process on a start-up failure; here that must stay an error.
        raise ConfigError("admin API failed to start; see the log above") from None
    finally:
        sock.close()
