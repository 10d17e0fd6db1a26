"""Who is asking: staff roles and the principal of a request.

Every route of the centre's app is listed in `centre.access.ACCESS` with the least role that may
call it (or `PUBLIC`). One app-level dependency, `authorize`, authenticates the request (a
session cookie or an API token), checks the route's role and CSRF, and leaves the principal in
`request.state.principal`; handlers that need to know who acts take
`who: Annotated[Principal, Depends(current_principal)]`.

`Authorize` is a pure ASGI middleware rather than a FastAPI dependency: FastAPI reads and
validates a request's body before it runs dependencies, so a dependency would answer an
anonymous client's malformed body with 422 (and parse it at all); the middleware refuses it
with 401 before anything reads the body. It also covers every kind of route the router holds
(API routes, plain routes, mounts, websockets), including routes added later.

Unit tests of route logic act as a staff member with FastAPI's own override mechanism
(`app.dependency_overrides[current_principal]`, see tests/auth_support.py): `Authorize` uses
that principal instead of a cookie or token, and still checks its role.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fastapi import HTTPException, Request
from fastapi.routing import RouteContext, iter_route_contexts
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.routing import Match, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from centre.store import StoreError

log = logging.getLogger("onekey.centre.auth")

COOKIE = "onekey_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(enum.IntEnum):
    """Each role can do what the ones below it can."""

    OPERATOR = 1  # alarms (see, acknowledge, dispatch, resolve); households read
    BROADCASTER = 2  # operator + broadcasts
    ADMIN = 3  # everything: accounts, households, contacts, gateways, settings, audit

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown role {text!r}; one of: {', '.join(r.label for r in cls)}"
            ) from None


@dataclass(frozen=True)
class Principal:
    """A logged-in staff member, or a script holding one of their API tokens."""

    staff_id: int
    username: str
    display_name: str
    role: Role
    via: Literal["session", "token"]

    def can(self, role: Role) -> bool:
        return self.role >= role


def current_principal(request: Request) -> Principal:
    """The principal `authorize` found (401 if the route is public and nobody logged in)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(401, "log in first")
    return principal


def csrf_for(session_secret: str) -> str:
    """The CSRF token of a session: an HMAC of the cookie's secret, so it is bound to that
    session, changes with it, and cannot be derived from what the database stores."""
    return hmac.new(session_secret.encode(), b"onekey-csrf-v1", hashlib.sha256).hexdigest()


class Authenticator(Protocol):
    """What `Authorize` needs from the accounts (centre.accounts.Accounts)."""

    async def session(self, secret: str) -> Principal | None: ...

    async def token(self, secret: str) -> Principal | None: ...


def app_routes(app: Any) -> list[RouteContext]:
    """Every route of the app with its full path, routers included flattened, in the order the
    router tries them."""
    return list(iter_route_contexts(app.routes))


def route_template(route: RouteContext) -> str | None:
    """The path template `ACCESS` lists a route under; None for a kind of route it cannot."""
    original = route.original_route
    path = route.path
    if not isinstance(path, str):
        return None
    if isinstance(original, Mount):
        return path.rstrip("/") + "/{path:path}"
    if isinstance(original, Route | WebSocketRoute):
        return path
    return None


def route_methods(route: RouteContext) -> set[str]:
    """The methods `ACCESS` lists a route under (HEAD goes with GET)."""
    original = route.original_route
    if isinstance(original, WebSocketRoute):
        return {"WEBSOCKET"}
    if isinstance(original, Route):
        return set(route.methods or ()) - {"HEAD"} or {"GET"}
    return {"GET"}  # a mount serves files


class Authorize:
    """ASGI middleware: authenticate, check the route's least role and CSRF, before the app
    reads anything of the request.

    - The route is the router's first full match (as the router itself picks it). A request no
      route fully matches runs no handler (404, 405 or a slash redirect) and passes through.
    - A matched route not in `access` is refused to everyone (403): default-deny.
    - `PUBLIC` routes run for anyone; a valid session or token still sets the principal.
    - Otherwise: `Authorization: Bearer <token>` or the `onekey_session` cookie; none valid ->
      401; a role below the route's -> 403; a cookie request that changes state (not GET, HEAD,
      OPTIONS) without the session's `X-CSRF-Token` -> 403. Tokens need no CSRF token: a browser
      never sends them by itself.
    """

    def __init__(
        self,
        app: ASGIApp,
        access: Mapping[tuple[str, str], Role | None],
        accounts: Callable[[], Authenticator | None],
    ) -> None:
        self.app = app
        self.access = access
        self.accounts = accounts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = await self._check(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail = refusal
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
            return
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        await JSONResponse({"detail": detail}, status, headers=headers)(scope, receive, send)

    async def _check(self, scope: Scope) -> tuple[int, str] | None:
        app = scope["app"]
        method = "WEBSOCKET" if scope["type"] == "websocket" else scope["method"]
        method = "GET" if method == "HEAD" else method
        route = next((r for r in app_routes(app) if r.matches(dict(scope))[0] == Match.FULL), None)
        if route is None:
            return None
        template = route_template(route)
        key = (method, template or "")
        if template is None or key not in self.access:
            log.error(f"event=route_not_in_access_table method={method} path={template!r}")
            return 403, "this route is not in the centre's access table"
        need = self.access[key]
        try:
            principal, cookie = await self._authenticate(scope, app)
        except (_Unavailable, StoreError) as exc:
            if need is None:
                return None
            if isinstance(exc, StoreError):
                log.error(f"event=store_failed path={template} error={str(exc)!r}")
                return 503, "the centre's database failed; see its log"
            return 503, "the centre is starting or stopping"
        if principal is not None:
            scope.setdefault("state", {})["principal"] = principal
        if need is None:
            return None
        if principal is None:
            return 401, "log in first (a session cookie or an API token)"
        if not principal.can(need):
            log.info(f"event=forbidden user={principal.username} role={principal.role.label} "
                     f"method={method} path={template} needs={need.label}")
            return 403, f"this needs the {need.label} role; you are {principal.role.label}"
        if principal.via == "session" and method not in SAFE_METHODS and cookie is not None:
            sent = _header(scope, CSRF_HEADER)
            if sent is None or not hmac.compare_digest(sent.encode(), csrf_for(cookie).encode()):
                log.info(f"event=csrf_refused user={principal.username} method={method} "
                         f"path={template}")
                return 403, "missing or wrong X-CSRF-Token header; reload the page"
        return None

    async def _authenticate(self, scope: Scope, app: Any) -> tuple[Principal | None, str | None]:
        override = getattr(app, "dependency_overrides", {}).get(current_principal)
        if override is not None:
            principal = override()
            return (principal if isinstance(principal, Principal) else None), None
        authz = _header(scope, "authorization")
        cookies = cookie_parser(_header(scope, "cookie") or "")
        cookie = cookies.get(COOKIE)
        if authz is None and not cookie:
            return None, None
        accounts = self.accounts()
        if accounts is None:
            raise _Unavailable
        if authz is not None:
            scheme, _, secret = authz.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                return None, None
            return await accounts.token(secret.strip()), None
        assert cookie
        return await accounts.session(cookie), cookie


class _Unavailable(Exception):
    pass


def _header(scope: Scope, name: str) -> str | None:
    want = name.encode()
    for key, value in scope.get("headers", ()):
        if key.lower() == want:
            return bytes(value).decode("latin-1")
    return None
