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
    # The page's scripts and styles: code, no data (the login form needs them).
    ("GET", "/static/{name}"): PUBLIC,
    ("GET", "/api/stream"): Role.OPERATOR,
    # The API's reference, for staff only: it names every route.
    ("GET", "/docs"): Role.OPERATOR,
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
    # Prometheus scrapes with an operator's API token (docs/centre.md, "Metrics").
    ("GET", "/metrics"): Role.OPERATOR,
    ("GET", "/api/households"): Role.OPERATOR,
    ("GET", "/api/households/{household_id}"): Role.OPERATOR,
    ("PUT", "/api/households/{household_id}"): Role.ADMIN,
    ("DELETE", "/api/households/{household_id}"): Role.ADMIN,
    ("GET", "/api/households/{household_id}/local_alert"): Role.OPERATOR,
    ("PUT", "/api/households/{household_id}/local_alert"): Role.ADMIN,
    # Every card's personal data at once: admins only, like the import.
    ("GET", "/api/households/export"): Role.ADMIN,
    ("POST", "/api/households/import"): Role.ADMIN,
    ("GET", "/api/devices"): Role.OPERATOR,
    ("GET", "/api/device-events"): Role.OPERATOR,
    ("GET", "/api/device-events/{event_id}"): Role.OPERATOR,
    ("POST", "/api/device-events/{event_id}/ack"): Role.OPERATOR,
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
    ("GET", "/api/alarms/{event_id}/escalation"): Role.OPERATOR,
    ("GET", "/api/escalation/policy"): Role.OPERATOR,
    ("GET", "/api/escalation/policy/effective"): Role.OPERATOR,
    ("PUT", "/api/escalation/policy/township"): Role.ADMIN,
    ("PUT", "/api/escalation/policy/villages/{village}"): Role.ADMIN,
    ("DELETE", "/api/escalation/policy/villages/{village}"): Role.ADMIN,
    ("PUT", "/api/escalation/policy/households/{household_id}"): Role.ADMIN,
    ("DELETE", "/api/escalation/policy/households/{household_id}"): Role.ADMIN,
    ("GET", "/api/modem"): Role.OPERATOR,
}
