"""The gateway's admin API (gateway/admin.py): authentication, registration with broker
credentials, conflicts, revocation; with a stand-in for the broker's password file."""

from __future__ import annotations

import os
import subprocess
import sys
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


async def test_a_malformed_registration_is_422_naming_each_field(
    api: tuple[httpx.AsyncClient, AdminContext],
) -> None:
    client, ctx = api
    bad = {"id": "Bad_Id", "role": "siren", "groups": ["ok", "No!"], "hw_id": "xyz",
           "power": "solar", "period_s": 86401, "force": "maybe"}
    r = await client.post("/admin/devices", json=bad)
    assert r.status_code == 422, r.text
    locs = [tuple(e["loc"]) for e in r.json()["detail"]]
    assert set(locs) == {
        ("body", "household"), ("body", "id"), ("body", "role"), ("body", "groups", 1),
        ("body", "hw_id"), ("body", "force"), ("body", "power"), ("body", "period_s"),
    }
    assert (await client.post("/admin/devices", json={**BODY, "household": "h\n1"})).status_code == 422
    too_many = {**BODY, "groups": [f"g{i}" for i in range(17)]}
    assert (await client.post("/admin/devices", json=too_many)).status_code == 422
    r = await client.post("/admin/devices", content=b"{not json")
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    assert (await client.post("/admin/devices", json=[BODY])).status_code == 422
    assert ctx.broker.users == {}  # type: ignore[attr-defined]


async def test_a_registration_takes_a_chinese_household_and_answers_it_unchanged(
    api: tuple[httpx.AsyncClient, AdminContext],
) -> None:
    client, _ = api
    r = await client.post("/admin/devices", json={**BODY, "household": "三组-张家", "force": True})
    assert r.status_code == 200 and r.json()["household"] == "三组-张家"
    listed = (await client.get("/admin/devices")).json()
    assert [d["household"] for d in listed] == ["三组-张家"]


async def test_a_bad_token_is_refused_before_the_body_is_read(
    api: tuple[httpx.AsyncClient, AdminContext],
) -> None:
    client, _ = api
    r = await client.post("/admin/devices", json={"id": "?"}, headers={"Authorization": "x"})
    assert r.status_code == 401 and "admin.token" in r.json()["detail"]
    r = await client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


async def test_metrics_is_prometheus_text_with_the_token(
    api: tuple[httpx.AsyncClient, AdminContext],
) -> None:
    client, _ = api
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE" in r.text


async def test_an_unknown_route_or_method_answers_json(
    api: tuple[httpx.AsyncClient, AdminContext],
) -> None:
    client, _ = api
    r = await client.get("/admin/nothing")
    assert (r.status_code, r.json()) == (404, {"detail": "Not Found"})
    r = await client.put("/admin/devices/btn-1")
    assert (r.status_code, r.json()) == (405, {"detail": "Method Not Allowed"})
    assert "DELETE" in r.headers["allow"]


def test_the_admin_api_loads_neither_fastapi_nor_pydantic() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, gateway.admin; "
         "print(sorted(m for m in ('fastapi', 'pydantic', 'pydantic_core') if m in sys.modules))"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
