"""Acting as a staff member in unit tests of route logic (the accounts' own tests log in for
real: tests/unit/test_centre_accounts.py).

`act_as` sets FastAPI's override of `current_principal`; the app-level check
(`centre.auth.Authorize`) takes that principal instead of a cookie or token and still checks
its role against `centre.access.ACCESS`, so `act_as(app, Role.OPERATOR)` gets 403 from an admin
route. The principal counts as a token holder: no CSRF header is needed.
"""

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
