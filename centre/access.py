"""The least role each route of the centre's app needs: one table, checked by `authorize` on
every request and by a test that enumerates the app's routes (a route missing here is refused
to everyone, so a new route cannot be open by mistake)."""

from __future__ import annotations

from typing import Final

from centre.auth import Role

PUBLIC: Final = None

# (method, path template as FastAPI declares it) -> least role, or PUBLIC.
ACCESS: dict[tuple[str, str], Role | None] = {
    # The console's shell holds no data: it asks for a login before it shows anything.
    ("GET", "/"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/openapi.json"): Role.OPERATOR,
    # Staff: log in (public: the credentials are the check), who am I, log out.
    ("POST", "/api/session"): PUBLIC,
    ("GET", "/api/session"): Role.OPERATOR,
    ("DELETE", "/api/session"): Role.OPERATOR,
    ("GET", "/api/users"): Role.ADMIN,
    ("POST", "/api/users"): Role.ADMIN,
    ("POST", "/api/users/{staff_id}/disable"): Role.ADMIN,
    ("POST", "/api/users/{staff_id}/enable"): Role.ADMIN,
    ("PUT", "/api/users/{staff_id}/password"): Role.ADMIN,
    ("PUT", "/api/users/{staff_id}/role"): Role.ADMIN,
    ("GET", "/api/users/{staff_id}/tokens"): Role.ADMIN,
    ("POST", "/api/users/{staff_id}/tokens"): Role.ADMIN,
    ("DELETE", "/api/users/{staff_id}/tokens/{token_id}"): Role.ADMIN,
    ("GET", "/api/audit"): Role.ADMIN,
    ("GET", "/api/alarms"): Role.OPERATOR,
    ("GET", "/api/alarms/{event_id}"): Role.OPERATOR,
    ("POST", "/api/alarms/{event_id}/ack"): Role.OPERATOR,
    ("POST", "/api/alarms/{event_id}/dispatch"): Role.OPERATOR,
    ("POST", "/api/alarms/{event_id}/resolve"): Role.OPERATOR,
    ("GET", "/api/alarms/{event_id}/timeline"): Role.OPERATOR,
    ("GET", "/api/alarm-outcomes"): Role.OPERATOR,
    ("GET", "/api/gateways"): Role.OPERATOR,
    ("GET", "/api/metrics"): Role.OPERATOR,
    ("GET", "/api/households"): Role.OPERATOR,
    ("GET", "/api/households/{household_id}"): Role.OPERATOR,
    ("PUT", "/api/households/{household_id}"): Role.ADMIN,
    ("DELETE", "/api/households/{household_id}"): Role.ADMIN,
    # Every card's personal data at once: admins only, like the import.
    ("GET", "/api/households/export"): Role.ADMIN,
    ("POST", "/api/households/import"): Role.ADMIN,
    ("GET", "/api/broadcasts"): Role.OPERATOR,
    ("GET", "/api/broadcasts/{bc_id}"): Role.OPERATOR,
    ("GET", "/api/broadcasts/{bc_id}/cap"): Role.OPERATOR,
    ("POST", "/api/broadcasts"): Role.BROADCASTER,
    ("POST", "/api/broadcasts/cap"): Role.BROADCASTER,
    ("POST", "/api/broadcasts/cap/check"): Role.BROADCASTER,
    ("POST", "/api/broadcasts/{bc_id}/cancel"): Role.BROADCASTER,
    ("POST", "/api/broadcasts/{bc_id}/approve"): Role.BROADCASTER,
    ("GET", "/api/settings/broadcasts"): Role.ADMIN,
    ("PUT", "/api/settings/broadcasts"): Role.ADMIN,
}
