"""The gateway's admin API: what `onekey provision` talks to.

A small HTTP API (Starlette on uvicorn; not FastAPI and pydantic, whose imports alone took
about 20 MB of the gateway's memory: docs/performance.md) served inside the gateway's own event loop, on
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

Errors answer JSON `{"detail": ...}`, with a `code` where provisioning acts on it (409
`other_board`, `revoked` or `other_household`; 400 `reserved`; 502 `broker`); a registration
body that does not hold what the route takes is a 422 whose `detail` lists each field's fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import secrets
import socket
import sqlite3
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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

# What a registration may carry (POST /admin/devices), checked by hand: the gateway process
# does not load a validation library for one request body (docs/performance.md, "Gateway
# memory"). A refused body is a 422 whose `detail` lists each field's fault, as
# {"type", "loc": ["body", field], "msg", "input"}.
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_HOUSEHOLD = re.compile(r"[^\x00-\x1f]{1,64}")
_HW_ID = re.compile(r"[0-9a-fA-F]{0,64}")
_MAX_GROUPS = 16
_MAX_PERIOD_S = 86400
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


@dataclass(frozen=True)
class DeviceIn:
    id: str
    role: str  # button or speaker
    household: str
    village: str | None = None  # must be this gateway's village if given
    groups: list[str] = field(default_factory=list)
    hw_id: str = ""  # hex of the board's machine.unique_id()
    force: bool = False  # take the id from another board or household
    power: str = "mains"  # the power profile the gateway supervises it by
    # Its heartbeat (mains) or check-in (battery) period; 0: this gateway's default for the
    # profile ([supervision] in gateway.toml).
    period_s: int = 0


class BodyInvalid(Exception):
    """A request body that does not hold what the route takes; `errors` go out as a 422."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


def _fault(errors: list[dict[str, Any]], name: str, kind: str, msg: str, value: Any) -> None:
    errors.append({"type": kind, "loc": ["body", name], "msg": msg, "input": value})


def _string(
    errors: list[dict[str, Any]], name: str, value: Any, pattern: re.Pattern[str], what: str
) -> str:
    if not isinstance(value, str):
        _fault(errors, name, "string_type", "Input should be a valid string", value)
        return ""
    if pattern.fullmatch(value) is None:
        _fault(errors, name, "string_pattern_mismatch", f"String should be {what}", value)
    return value


def _choice(errors: list[dict[str, Any]], name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        _fault(errors, name, "literal_error",
               "Input should be " + " or ".join(repr(a) for a in allowed), value)
        return allowed[0]
    return str(value)


def _boolean(errors: list[dict[str, Any]], name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    _fault(errors, name, "bool_parsing", "Input should be a valid boolean", value)
    return False


def _integer(errors: list[dict[str, Any]], name: str, value: Any, lo: int, hi: int) -> int:
    n: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        n = int(value.strip())
    if n is None:
        _fault(errors, name, "int_parsing", "Input should be a valid integer", value)
        return lo
    if not lo <= n <= hi:
        _fault(errors, name, "out_of_range",
               f"Input should be between {lo} and {hi}", value)
    return n


def parse_device_in(body: Any) -> DeviceIn:
    """The registration in `body` (decoded JSON); BodyInvalid lists every fault at once."""
    errors: list[dict[str, Any]] = []
    if not isinstance(body, dict):
        _fault(errors, "", "model_attributes_type", "Input should be a JSON object", body)
        errors[0]["loc"] = ["body"]
        raise BodyInvalid(errors)
    for name in ("id", "role", "household"):
        if name not in body:
            _fault(errors, name, "missing", "Field required", None)
    id_pattern = "1 to 32 of a-z, 0-9 and '-', starting with a letter or digit"
    device_id = _string(errors, "id", body.get("id", ""), _ID, id_pattern)
    role = _choice(errors, "role", body.get("role", "button"), ("button", "speaker"))
    village = body.get("village")
    if village is not None:
        village = _string(errors, "village", village, _ID, id_pattern)
    household = _string(errors, "household", body.get("household", "x"), _HOUSEHOLD,
                        "1 to 64 characters, none of them a control character")
    groups_in = body.get("groups", [])
    groups: list[str] = []
    if not isinstance(groups_in, list):
        _fault(errors, "groups", "list_type", "Input should be a valid list", groups_in)
    elif len(groups_in) > _MAX_GROUPS:
        _fault(errors, "groups", "too_long",
               f"List should have at most {_MAX_GROUPS} items", groups_in)
    else:
        for i, g in enumerate(groups_in):
            errs: list[dict[str, Any]] = []
            groups.append(_string(errs, "groups", g, _ID, id_pattern))
            for e in errs:
                e["loc"] = ["body", "groups", i]
            errors.extend(errs)
    hw_id = _string(errors, "hw_id", body.get("hw_id", ""), _HW_ID, "at most 64 hex digits")
    force = _boolean(errors, "force", body.get("force", False))
    power = _choice(errors, "power", body.get("power", "mains"), ("mains", "battery"))
    period_s = _integer(errors, "period_s", body.get("period_s", 0), 0, _MAX_PERIOD_S)
    if errors:
        raise BodyInvalid(errors)
    return DeviceIn(
        id=device_id, role=role, household=household, village=village, groups=groups,
        hw_id=hw_id, force=force, power=power, period_s=period_s,
    )


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


def _device_out(rec: DeviceRecord) -> dict[str, Any]:
    """A registry entry as GET /admin/devices answers it (docs/provisioning.md)."""
    status: dict[str, Any] | None = None
    if rec.status_json:
        with contextlib.suppress(ValueError):
            loaded = json.loads(rec.status_json)
            status = loaded if isinstance(loaded, dict) else None
    test = rec.last_test
    return {
        "id": rec.id, "role": rec.role, "village": rec.village, "household": rec.household,
        "groups": list(rec.groups), "enabled": rec.enabled, "hw_id": rec.hw_id,
        "created_at": rec.created_at, "last_seen": rec.last_seen,
        "status": status,  # the device's last heartbeat
        "counter_floor": rec.counter_floor,
        "last_test": {"counter": test[0], "gw_ts": test[1], "state": test[2]} if test else None,
        "power": rec.power,  # mains or battery
        "period_s": rec.period_s,  # heartbeat or check-in period; 0: the profile's default
    }


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


def create_app(ctx: AdminContext) -> Starlette:
    """The admin API as an ASGI app (Starlette): served by uvicorn in `serve`, by httpx's ASGI
    transport in the tests. Errors answer {"detail": ...} (and a `code` where the client acts
    on it)."""

    def authorise(request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), ctx.token.encode()):
            raise HTTPException(401, f"wrong or missing admin token; it is in {ctx.admin.token_file}")

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    async def invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, BodyInvalid)
        return JSONResponse({"detail": exc.errors}, 422)

    async def conflict(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, DeviceConflict)
        return JSONResponse({"detail": str(exc), "code": exc.code}, 409)

    async def reserved(_: Request, exc: Exception) -> Response:
        log.warning("event=admin_refused reason=reserved_id detail=%r", str(exc))
        return JSONResponse({"detail": str(exc), "code": "reserved"}, 400)

    async def broker_failed(_: Request, exc: Exception) -> Response:
        log.error("event=admin_broker_failed error=%r", str(exc))
        return JSONResponse({"detail": str(exc), "code": "broker"}, 502)

    async def metrics(request: Request) -> Response:
        # The same token as the rest of this API: the listener is loopback by default, and a
        # scraper there reads the token file (docs/gateway.md, "Metrics").
        authorise(request)
        store = ctx.store
        health = store.health
        ctx.metrics.observe_store(
            await store.event_counts(), store.outbox_count, health.ok, health.full,
            health.failed, store.free_bytes(), len(ctx.registry.devices),
        )
        return Response(prom.render(ctx.metrics.registry), media_type=prom.CONTENT_TYPE)

    async def health(request: Request) -> Response:
        authorise(request)
        return JSONResponse({"gateway": ctx.cfg.gateway_id, "village": ctx.cfg.village})

    async def register(request: Request) -> Response:
        authorise(request)
        raw = await request.body()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError as exc:
            raise BodyInvalid([{"type": "json_invalid", "loc": ["body"],
                                "msg": f"JSON decode error: {exc}", "input": {}}]) from None
        if decoded is None:
            raise BodyInvalid([{"type": "missing", "loc": ["body"], "msg": "Field required",
                                "input": None}])
        body = parse_device_in(decoded)
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
        return JSONResponse({
            "id": dev.id, "role": dev.role, "village": dev.village, "household": dev.household,
            "groups": list(dev.groups),
            "created": reg.created,  # false: an existing entry was given a new key
            "key_hex": dev.key.hex(),  # the device key (§3.2); only here and on the board
            "mqtt_user": dev.id, "mqtt_password": password,
            "broker_host": ctx.admin.device_broker_host,
            "broker_port": ctx.admin.device_broker_port,
            "counter_floor": reg.counter_floor,  # the board must count its messages from here
            "power": dev.power,
            "period_s": dev.period_s,  # the heartbeat or check-in period the board must use
        })

    async def list_all(request: Request) -> Response:
        authorise(request)
        recs = await asyncio.to_thread(_db, ctx, registry.device_records)
        return JSONResponse([_device_out(r) for r in recs])

    async def get_one(request: Request) -> Response:
        authorise(request)
        device_id: str = request.path_params["device_id"]
        rec = await asyncio.to_thread(_db, ctx, lambda c: registry.get_device(c, device_id))
        if rec is None:
            raise HTTPException(404, f"device {device_id} is not registered at this gateway")
        return JSONResponse(_device_out(rec))

    async def revoke(request: Request) -> Response:
        authorise(request)
        device_id: str = request.path_params["device_id"]
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
        return JSONResponse({"id": device_id, "revoked": True, "broker_user_removed": removed})

    async def devices(request: Request) -> Response:
        return await (register if request.method == "POST" else list_all)(request)

    async def device(request: Request) -> Response:
        return await (revoke if request.method == "DELETE" else get_one)(request)

    return Starlette(
        routes=[
            Route("/metrics", metrics, methods=["GET"]),
            Route("/admin/health", health, methods=["GET"]),
            # One route a path, so that a 405 names every method the path takes (Allow).
            Route("/admin/devices", devices, methods=["GET", "POST"]),
            Route("/admin/devices/{device_id}", device, methods=["GET", "DELETE"]),
        ],
        exception_handlers={
            HTTPException: http_error,
            BodyInvalid: invalid,
            DeviceConflict: conflict,
            ReservedIdError: reserved,
            BrokerControlError: broker_failed,
        },
    )


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
