"""Acting as a staff member in unit tests of route logic (the accounts' own tests log in for
real)."""

from __future__ import annotations

from fastapi import FastAPI

from centre.auth import Principal, Role, current_principal


def act_as(app: FastAPI, role: Role = Role.ADMIN, username: str = "test-admin") -> Principal:
    principal = Principal(1, username, username, role, "token")
    app.dependency_overrides[current_principal] = lambda: principal
    _also_optional(app, principal)
    return principal


def act_as_broadcaster(app: FastAPI, staff_id: int, username: str) -> Principal:
    """Another staff member (a second broadcaster approves what the first created)."""
    principal = Principal(staff_id, username, username, Role.BROADCASTER, "session")
    app.dependency_overrides[current_principal] = lambda: principal
    _also_optional(app, principal)
    return principal


def _also_optional(app: FastAPI, principal: Principal) -> None:
    # The broadcast routes also serve an app built without accounts (centre.bcapi.acting).
    from centre.bcapi import acting

    app.dependency_overrides[acting] = lambda: principal
