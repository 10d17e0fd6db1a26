"""Acting as a staff member in unit tests of route logic (the accounts' own tests log in for
real)."""

from __future__ import annotations

from fastapi import FastAPI

from centre.auth import Principal, Role, current_principal


def act_as(app: FastAPI, role: Role = Role.ADMIN, username: str = "test-admin") -> Principal:
    principal = Principal(1, username, username, role, "token")
    app.dependency_overrides[current_principal] = lambda: principal
    return principal
