"""Staff routes: log in and out, accounts and their API tokens (admins), the audit log (admins).

| method | path | least role |
| --- | --- | --- |
| POST | /api/session {"username","password"} | public |
| GET, DELETE | /api/session | operator |
| GET, POST | /api/users | admin |
| POST | /api/users/{staff_id}/disable, /api/users/{staff_id}/enable | admin |
| PUT | /api/users/{staff_id}/password, /api/users/{staff_id}/role | admin |
| GET, POST | /api/users/{staff_id}/tokens | admin |
| DELETE | /api/users/{staff_id}/tokens/{token_id} | admin |
| GET | /api/audit?limit=&before=&target=&actor= | admin |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from centre.accounts import (
    MAX_AUDIT,
    AccountConflict,
    AccountError,
    Accounts,
    BadCredentials,
    InvalidAccount,
    LockedOut,
    Staff,
    TokenInfo,
    UnknownAccount,
)
from centre.auth import COOKIE, Principal, Role, csrf_for, current_principal

RoleName = Literal["operator", "broadcaster", "admin"]
Who = Annotated[Principal, Depends(current_principal)]


class LoginIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    role: RoleName


class SessionOut(BaseModel):
    user: UserOut
    csrf: str = Field(description="send it as header X-CSRF-Token with every change")


class StaffOut(UserOut):
    disabled: bool
    locked_until: int = Field(description="Unix ms; 0 or past: not locked")
    created_at: int


class UserIn(BaseModel):
    username: str = Field(max_length=64)
    display_name: str = Field(max_length=64)
    role: RoleName
    password: str = Field(max_length=1024)


class PasswordIn(BaseModel):
    password: str = Field(max_length=1024)


class RoleIn(BaseModel):
    role: RoleName


class TokenIn(BaseModel):
    name: str = Field(max_length=64)
    role: RoleName | None = Field(default=None, description="default: the owner's role")
    expires_at: int | None = Field(default=None, description="Unix ms; null: never")


class TokenOut(BaseModel):
    id: int
    staff_id: int
    name: str
    role: RoleName
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    last_used: int | None


class NewTokenOut(TokenOut):
    secret: str = Field(description="shown this once; send as Authorization: Bearer <secret>")


class AuditOut(BaseModel):
    id: int
    at: int
    actor: str
    actor_id: int | None
    address: str
    action: str
    target: str
    detail: dict[str, Any]


def _user(st: Staff) -> UserOut:
    return UserOut.model_validate(st.public())


def _staff(st: Staff) -> StaffOut:
    return StaffOut(**st.public(), disabled=st.disabled, locked_until=st.locked_until,
                    created_at=st.created_at)


def _token(t: TokenInfo) -> dict[str, Any]:
    return {"id": t.id, "staff_id": t.staff_id, "name": t.name, "role": t.role.label,
            "created_at": t.created_at, "expires_at": t.expires_at, "revoked_at": t.revoked_at,
            "last_used": t.last_used}


def address(request: Request) -> str:
    return request.client.host if request.client else ""


def _refused(exc: AccountError) -> HTTPException:
    if isinstance(exc, UnknownAccount):
        return HTTPException(404, str(exc))
    if isinstance(exc, AccountConflict):
        return HTTPException(409, str(exc))
    if isinstance(exc, InvalidAccount):
        return HTTPException(422, str(exc))
    if isinstance(exc, LockedOut):
        return HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, BadCredentials):
        return HTTPException(401, str(exc))
    return HTTPException(400, str(exc))


def staff_router(accounts: Callable[[], Accounts]) -> APIRouter:
    router = APIRouter(tags=["staff"])

    @router.post("/api/session", response_model=SessionOut, summary="Log in")
    async def login(body: LoginIn, request: Request, response: Response) -> SessionOut:
        try:
            done = await accounts().login(body.username, body.password, address(request))
        except AccountError as exc:
            raise _refused(exc) from None
        response.set_cookie(
            COOKIE, done.secret, httponly=True, samesite="strict", path="/",
            secure=request.url.scheme == "https",
        )
        return SessionOut(user=_user(done.staff), csrf=done.csrf)

    @router.get("/api/session", response_model=SessionOut, summary="Who is logged in")
    async def whoami(request: Request, who: Who) -> SessionOut:
        st = await accounts().get(who.staff_id)
        cookie = request.cookies.get(COOKIE, "")
        # A token has no CSRF token (it needs none); a session's is derived from its cookie.
        csrf = csrf_for(cookie) if who.via == "session" and cookie else ""
        return SessionOut(user=_user(st), csrf=csrf)

    @router.delete("/api/session", status_code=204, summary="Log out")
    async def logout(request: Request, response: Response, who: Who) -> None:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            await accounts().logout(cookie, who, address(request))
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")

    @router.get("/api/users", response_model=list[StaffOut], summary="Staff accounts")
    async def list_users() -> list[StaffOut]:
        return [_staff(s) for s in await accounts().list_staff()]

    @router.post("/api/users", response_model=StaffOut, status_code=201,
                 summary="Add a staff account")
    async def add_user(body: UserIn, request: Request, who: Who) -> StaffOut:
        try:
            st = await accounts().add(who, body.username, body.display_name,
                                      Role.parse(body.role), body.password, address(request))
        except AccountError as exc:
            raise _refused(exc) from None
        return _staff(st)

    async def _disabled(staff_id: int, disabled: bool, request: Request, who: Principal) -> StaffOut:
        try:
            st = await accounts().set_disabled(who, staff_id, disabled, address(request))
        except AccountError as exc:
            raise _refused(exc) from None
        return _staff(st)

    @router.post("/api/users/{staff_id}/disable", response_model=StaffOut,
                 summary="Disable an account: its sessions and tokens stop working at once")
    async def disable_user(staff_id: int, request: Request, who: Who) -> StaffOut:
        return await _disabled(staff_id, True, request, who)

    @router.post("/api/users/{staff_id}/enable", response_model=StaffOut,
                 summary="Enable an account (and lift a lockout)")
    async def enable_user(staff_id: int, request: Request, who: Who) -> StaffOut:
        return await _disabled(staff_id, False, request, who)

    @router.put("/api/users/{staff_id}/password", response_model=StaffOut,
                summary="Set a new password (ends the account's sessions)")
    async def set_password(staff_id: int, body: PasswordIn, request: Request, who: Who) -> StaffOut:
        try:
            st = await accounts().set_password(who, staff_id, body.password, address(request))
        except AccountError as exc:
            raise _refused(exc) from None
        return _staff(st)

    @router.put("/api/users/{staff_id}/role", response_model=StaffOut, summary="Change a role")
    async def set_role(staff_id: int, body: RoleIn, request: Request, who: Who) -> StaffOut:
        try:
            st = await accounts().set_role(who, staff_id, Role.parse(body.role), address(request))
        except AccountError as exc:
            raise _refused(exc) from None
        return _staff(st)

    @router.get("/api/users/{staff_id}/tokens", response_model=list[TokenOut],
                summary="An account's API tokens (never their secrets)")
    async def list_tokens(staff_id: int) -> list[TokenOut]:
        try:
            return [TokenOut(**_token(t)) for t in await accounts().tokens(staff_id)]
        except AccountError as exc:
            raise _refused(exc) from None

    @router.post("/api/users/{staff_id}/tokens", response_model=NewTokenOut, status_code=201,
                 summary="Create an API token; its secret is in this answer only")
    async def create_token(staff_id: int, body: TokenIn, request: Request, who: Who) -> NewTokenOut:
        role = Role.parse(body.role) if body.role else None
        try:
            new = await accounts().create_token(who, staff_id, body.name, role, body.expires_at,
                                                address(request))
        except AccountError as exc:
            raise _refused(exc) from None
        return NewTokenOut(**_token(new.info), secret=new.secret)

    @router.delete("/api/users/{staff_id}/tokens/{token_id}", response_model=TokenOut,
                   summary="Revoke an API token (at once)")
    async def revoke_token(staff_id: int, token_id: int, request: Request, who: Who) -> TokenOut:
        try:
            t = await accounts().revoke_token(who, staff_id, token_id, address(request))
        except AccountError as exc:
            raise _refused(exc) from None
        return TokenOut(**_token(t))

    @router.get("/api/audit", response_model=list[AuditOut], summary="The audit log, newest first")
    async def audit_log(
        limit: Annotated[int, Query(ge=1, le=MAX_AUDIT)] = 100,
        before: Annotated[int | None, Query(ge=1, description="entries with id below")] = None,
        target: Annotated[str | None, Query(max_length=200)] = None,
        actor: Annotated[str | None, Query(max_length=100)] = None,
    ) -> list[AuditOut]:
        rows = await accounts().audit_log(limit, before, target, actor)
        return [AuditOut(id=e.id, at=e.at, actor=e.actor, actor_id=e.actor_id, address=e.address,
                         action=e.action, target=e.target, detail=e.detail) for e in rows]

    return router
