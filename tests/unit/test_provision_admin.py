"""The gateway's admin API (gateway/admin.py): authentication, registration with broker
credentials, conflicts, revocation; with a stand-in for the broker's password file."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.admin import AdminContext, create_app, ensure_token
from gateway.brokerctl import BrokerControl
from gateway.config import load_config, render_config
from gateway.errors import ConfigError
from gateway.registry import Registry
from gateway.store import Store

TOKEN = "t" * 32


class FakeBroker(BrokerControl):
    def __init__(self) -> None:
        super().__init__(None, "none")
        self.users: dict[str, str] = {}

    async def set_user(self, name: str, password: str) -> None:
        self.users[name] = password

    async def remove_user(self, name: str) -> bool:
        return self.users.pop(name, None) is not None


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AdminContext]]:
    (tmp_path / "village-broker.pass").write_text("pw\n")
    text = render_config(
        gateway_id="gw-1", village="v-1", state_dir=tmp_path, centre_public_key="00" * 32,
        village_host="127.0.0.1", village_port=1883, centre_host="127.0.0.1", centre_port=8883,
        device_broker_host="192.168.4.1",
    )
    (tmp_path / "gateway.toml").write_text(text)
    cfg = load_config(tmp_path / "gateway.toml")
    assert cfg.admin is not None
    store = Store(cfg.db_path)
    await store.start()
    ctx = AdminContext(cfg, cfg.admin, store, Registry(), FakeBroker(), TOKEN)
    transport = httpx.ASGITransport(app=create_app(ctx))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=headers) as c:
            yield c, ctx
    finally:
        await store.close()


BODY = {"id": "btn-1", "role": "button", "household": "h-1", "hw_id": "a0b1c2d3e4f5"}


async def test_a_request_without_the_token_is_refused(
    api: tuple[httpx.AsyncClient, AdminContext],
) -> None:
    client, _ = api
    r = await client.get("/admin/health", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "admin.token" in r.json()["detail"]
    assert (await client.get("/admin/health")).json() == {"gateway": "gw-1", "village": "v-1"}


async def test_registration_issues_key_and_broker_login_and_the_gateway_knows_it_at_once(
    api: tuple[httpx.AsyncClient, AdminContext],
) -> None:
    client, ctx = api
    r = await client.post("/admin/devices", json={**BODY, "groups": ["north"]})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["created"] and d["mqtt_user"] == "btn-1" and len(d["key_hex"]) == 64
    assert (d["broker_host"], d["broker_port"]) == ("192.168.4.1", 1883)
    assert ctx.broker.users == {"btn-1": d["mqtt_password"]}  # type: ignore[attr-defined]
    assert ctx.registry.key_for("btn-1") == bytes.fromhex(d["key_hex"])
    got = (await client.get("/admin/devices/btn-1")).json()
    assert got["groups"] == ["north"] and got["hw_id"] == "a0b1c2d3e4f5" and got["last_test"] is None


async def test_registration_records_the_power_profile_with_the_gateway_default_period(
    api: tuple[httpx.AsyncClient, AdminContext],
) -> None:
    client, ctx = api
    r = await client.post("/admin/devices", json={**BODY, "power": "battery"})
    assert r.status_code == 200, r.text
    assert (r.json()["power"], r.json()["period_s"]) == ("battery", 3600)
    dev = ctx.registry.devices["btn-1"]
    assert (dev.power, dev.period_s) == ("battery", 3600)
    got = (await client.get("/admin/devices/btn-1")).json()
    assert (got["power"], got["period_s"]) == ("battery", 3600)
    r = await client.post("/admin/devices", json={**BODY, "id": "btn-2", "period_s": 30})
    assert (r.json()["power"], r.json()["period_s"]) == ("mains", 30)
    r = await client.post(
        "/admin/devices", json={**BODY, "id": "spk-1", "role": "speaker", "power": "battery"}
    )
    assert r.status_code == 400 and "runs on mains" in r.json()["detail"]


async def test_another_board_with_the_same_id_gets_409_with_the_reason(
    api: tuple[httpx.AsyncClient, AdminContext],
) -> None:
    client, _ = api
    await client.post("/admin/devices", json=BODY)
    r = await client.post("/admin/devices", json={**BODY, "hw_id": "ffffffffffff"})
    assert r.status_code == 409 and r.json()["code"] == "other_board"


async def test_a_wrong_village_is_refused(api: tuple[httpx.AsyncClient, AdminContext]) -> None:
    client, _ = api
    r = await client.post("/admin/devices", json={**BODY, "village": "v-2"})
    assert r.status_code == 400 and "serves village v-1" in r.json()["detail"]


async def test_revoke_disables_at_once_and_removes_the_login(
    api: tuple[httpx.AsyncClient, AdminContext],
) -> None:
    client, ctx = api
    await client.post("/admin/devices", json=BODY)
    r = await client.delete("/admin/devices/btn-1")
    assert r.status_code == 200 and r.json()["broker_user_removed"]
    assert ctx.registry.key_for("btn-1") is None
    assert (await client.get("/admin/devices/btn-1")).json()["enabled"] is False
    assert (await client.delete("/admin/devices/btn-9")).status_code == 404


def test_the_token_file_is_created_private_and_a_wider_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    token = ensure_token(path)
    assert len(token) >= 32 and (path.stat().st_mode & 0o777) == 0o600
    assert ensure_token(path) == token
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ensure_token(path)


def _config(tmp_path: Path, admin: str) -> Path:
    (tmp_path / "village-broker.pass").write_text("pw\n")
    text = render_config(
        gateway_id="gw-1", village="v-1", state_dir=tmp_path, centre_public_key="00" * 32,
        village_host="10.0.0.1", village_port=1884, centre_host="c", centre_port=8883,
    )
    text = text.split("[admin]")[0] + admin
    (tmp_path / "gateway.toml").write_text(text)
    return tmp_path / "gateway.toml"


def test_admin_defaults_follow_the_village_broker(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, ""))
    a = cfg.admin
    assert a is not None and a.enabled and (a.listen, a.port) == ("127.0.0.1", 8081)
    assert a.token_file == tmp_path / "admin.token" and a.broker_passwd is None
    assert (a.device_broker_host, a.device_broker_port) == ("10.0.0.1", 1884)


def test_admin_settings_are_read(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, (
        '[admin]\nport = 9000\nbroker_passwd = "/etc/mosquitto/passwd"\n'
        'broker_reload = "command:systemctl reload mosquitto"\n'
    )))
    a = cfg.admin
    assert a is not None and a.port == 9000 and a.broker_passwd == Path("/etc/mosquitto/passwd")
    assert a.broker_reload == "command:systemctl reload mosquitto"


@pytest.mark.parametrize("spec", ["sighup", "pid-file:", "command:", "pidfile:/run/x"])
def test_a_reload_setting_that_cannot_work_is_refused(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ConfigError, match="broker_reload"):
        load_config(_config(tmp_path, f'[admin]\nbroker_reload = "{spec}"\n'))
