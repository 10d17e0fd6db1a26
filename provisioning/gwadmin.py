"""Client of the gateway's admin API (gateway/admin.py), over plain HTTP with a bearer token.

The API listens on the gateway's loopback by default: provisioning runs on the gateway Pi, or
reaches it through an SSH tunnel (`ssh -L 8081:127.0.0.1:8081 pi@gateway`).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.errors import (
    DeviceIdError,
    DeviceIdTakenError,
    GatewayAdminError,
    GatewayUnreachableError,
)

DEFAULT_URL = "http://127.0.0.1:8081"
DEFAULT_TOKEN_FILE = "/var/lib/onekey/gateway/admin.token"


class NotRegistered(GatewayAdminError):
    """The gateway has no such device."""


@dataclass(frozen=True)
class Credentials:
    """What the gateway issued for one device."""

    id: str
    role: str
    village: str
    household: str
    groups: tuple[str, ...]
    created: bool
    key_hex: str
    mqtt_user: str
    mqtt_password: str
    broker_host: str
    broker_port: int
    counter_floor: int
    power: str = "mains"
    period_s: int = 0  # the heartbeat or check-in period the board is to use; 0: its default


def load_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise GatewayAdminError(
            f"cannot read the gateway admin token {path} ({exc.strerror}); it is admin.token in "
            "the gateway's state directory, created when the gateway first starts (give it with "
            "--admin-token-file)"
        ) from None
    if not token:
        raise GatewayAdminError(f"the gateway admin token file {path} is empty")
    return token


def default_token_file() -> Path:
    return Path(os.environ.get("ONEKEY_ADMIN_TOKEN_FILE", DEFAULT_TOKEN_FILE))


class GatewayAdmin:
    def __init__(self, url: str, token: str, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            self._refused(exc)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GatewayUnreachableError(
                f"the gateway admin API at {self.url} does not answer ({reason}). Is the gateway "
                "running (`systemctl status onekey-gateway`), and is this its [admin] address? "
                "Then run the same command again: nothing on the board depends on this step"
            ) from None

    def _refused(self, exc: urllib.error.HTTPError) -> None:
        try:
            payload = json.loads(exc.read() or b"{}")
        except ValueError:
            payload = {}
        detail = payload.get("detail") if isinstance(payload, dict) else None
        if not isinstance(detail, str):
            detail = json.dumps(detail) if detail else exc.reason
        if exc.code == 401:
            raise GatewayAdminError(
                f"the gateway refused the admin token ({detail}); use the token file of this "
                "gateway (--admin-token-file)"
            ) from None
        if exc.code == 409:
            raise DeviceIdTakenError(detail, str(payload.get("code", ""))) from None
        if exc.code == 400 and isinstance(payload, dict) and payload.get("code") == "reserved":
            raise DeviceIdError(detail) from None
        if exc.code == 404:
            raise NotRegistered(detail) from None
        raise GatewayAdminError(f"the gateway refused the request ({exc.code}): {detail}") from None

    def health(self) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", "/admin/health")
        return data

    def device(self, device_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = self._call("GET", f"/admin/devices/{device_id}")
        except NotRegistered:
            return None
        return data

    def devices(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._call("GET", "/admin/devices")
        return data

    def register(
        self,
        device_id: str,
        *,
        role: str,
        household: str,
        village: str | None,
        groups: Sequence[str],
        hw_id: str,
        force: bool,
        power: str = "mains",
        period_s: int = 0,
    ) -> Credentials:
        body = {"id": device_id, "role": role, "household": household, "village": village,
                "groups": list(groups), "hw_id": hw_id, "force": force, "power": power,
                "period_s": period_s}
        d = self._call("POST", "/admin/devices", body)
        return Credentials(
            id=d["id"], role=d["role"], village=d["village"], household=d["household"],
            groups=tuple(d["groups"]), created=bool(d["created"]), key_hex=d["key_hex"],
            mqtt_user=d["mqtt_user"], mqtt_password=d["mqtt_password"],
            broker_host=d["broker_host"], broker_port=int(d["broker_port"]),
            counter_floor=int(d["counter_floor"]),
            # A gateway from before power profiles answers without them: mains, its defaults.
            power=str(d.get("power", "mains")), period_s=int(d.get("period_s", 0)),
        )

    def revoke(self, device_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._call("DELETE", f"/admin/devices/{device_id}")
        return data
