"""Who is asking: staff roles and the principal of a request.

Every route of the centre's app is listed in `centre.access.ACCESS` with the least role that may
call it (or `PUBLIC`). One app-level dependency, `authorize`, authenticates the request (a
session cookie or an API token), checks the route's role and CSRF, and leaves the principal in
`request.state.principal`; handlers that need to know who acts take
`who: Annotated[Principal, Depends(current_principal)]`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, Request


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
