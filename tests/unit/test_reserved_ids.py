"""Names that carry service rights on the brokers are never a device's (issue 7, fault 9;
docs/protocol.md §1.1): `gateway`, `centre` and every `svc-...` name are refused, with a clear
error, at every place a device id (or a gateway id) enters. Registering a device as `gateway`
would give it the gateway's broker password and its ACL rights over every device's topics."""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from centre.enrol import EnrolError, enrol_gateway, init_centre
from device_fw import okproto
from gateway import registry
from gateway.admin import AdminContext, create_app
from gateway.brokerctl import BrokerControl, BrokerControlError
from gateway.config import load_config, render_config
from gateway.registry import Registry, ReservedIdError
from gateway.store import Store
from provisioning import cli as provision_cli
from provisioning.devconfig import check_device_id
from provisioning.enrol import enrol
from provisioning.errors import DeviceIdError, EnrolmentError
from provisioning.flow import Options, provision
from provisioning.gwadmin import GatewayAdmin
from transport import pki
from transport.brokers import BrokerError, CentreBroker, VillageBroker, centre_acl, village_acl
from transport.keys import generate_private_key, public_hex

RESERVED = ["gateway", "centre", "svc-monitor"]
TOKEN = "t" * 32


def test_the_codec_names_the_reserved_ids() -> None:
    assert all(okproto.reserved_id(x) for x in RESERVED)
    assert not any(okproto.reserved_id(x) for x in ("btn-0001", "gateway-2", "svc", "gw-demo", None))


# -- the gateway's registry: one funnel for add and register


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = registry.open_admin(tmp_path / "gateway.db")
    try:
        yield c
    finally:
        c.close()


@pytest.mark.parametrize("name", RESERVED)
def test_registry_refuses_a_reserved_id_on_add_and_register(
    conn: sqlite3.Connection, name: str
) -> None:
    with pytest.raises(ReservedIdError, match=r"reserved.*service login.*choose another id"):
        registry.add_device(conn, name, role="button", village="v-1", household="h-1")
    with pytest.raises(ReservedIdError, match="reserved"):
        registry.register_device(conn, name, role="speaker", village="v-1", household="h-1")
    assert registry.list_devices(conn) == []


def test_registry_takes_a_name_that_only_looks_like_a_service(conn: sqlite3.Connection) -> None:
    registry.add_device(conn, "gateway-2", role="button", village="v-1", household="h-1")
    assert [d[0] for d in registry.list_devices(conn)] == ["gateway-2"]


# -- the admin API (what provisioning talks to)


class FakeBroker(BrokerControl):
    def __init__(self, service_users: tuple[str, ...]) -> None:
        super().__init__(None, "none", service_users=service_users)
        self.calls: list[tuple[str, str]] = []

    async def set_user(self, name: str, password: str) -> None:
        self.calls.append(("set", name))

    async def remove_user(self, name: str) -> bool:
        self.calls.append(("remove", name))
        return True


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeBroker]]:
    """A gateway whose own village login is `gw-login` (not a reserved name: configured by
    hand), so that its admin API must refuse that name too."""
    (tmp_path / "village-broker.pass").write_text("pw\n")
    text = render_config(
        gateway_id="gw-1", village="v-1", state_dir=tmp_path, centre_public_key="00" * 32,
        village_host="127.0.0.1", village_port=1883, centre_host="127.0.0.1", centre_port=8883,
        user="gw-login",
    )
    (tmp_path / "gateway.toml").write_text(text)
    cfg = load_config(tmp_path / "gateway.toml")
    assert cfg.admin is not None
    store = Store(cfg.db_path)
    await store.start()
    broker = FakeBroker((cfg.village_broker.user,))
    ctx = AdminContext(cfg, cfg.admin, store, Registry(), broker, TOKEN)
    transport = httpx.ASGITransport(app=create_app(ctx))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=headers) as c:
            yield c, broker
    finally:
        await store.close()


@pytest.mark.parametrize("name", [*RESERVED, "gw-login"])
async def test_admin_api_refuses_to_register_a_service_login(
    api: tuple[httpx.AsyncClient, FakeBroker], name: str
) -> None:
    client, broker = api
    r = await client.post("/admin/devices", json={"id": name, "role": "button", "household": "h-1"})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "reserved" and "service login" in r.json()["detail"]
    assert broker.calls == []
    assert (await client.get(f"/admin/devices/{name}")).status_code == 404


@pytest.mark.parametrize("name", ["gateway", "gw-login"])
async def test_admin_api_refuses_to_revoke_a_service_login(
    api: tuple[httpx.AsyncClient, FakeBroker], name: str
) -> None:
    client, broker = api
    r = await client.delete(f"/admin/devices/{name}")
    assert r.status_code == 400 and r.json()["code"] == "reserved", r.text
    assert broker.calls == []


@pytest.mark.parametrize("name", ["gateway", "svc-monitor", "gw-login"])
async def test_broker_control_never_touches_a_service_login(tmp_path: Path, name: str) -> None:
    ctl = BrokerControl(tmp_path / "passwd", service_users=("gw-login",))
    with pytest.raises(BrokerControlError, match="service login"):
        await ctl.set_user(name, "pw")
    with pytest.raises(BrokerControlError, match="service login"):
        await ctl.remove_user(name)
    assert not (tmp_path / "passwd").exists()


def test_provisioning_client_reports_a_reserved_id_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"detail": "device id 'gateway' is reserved", "code": "reserved"}).encode()

    def urlopen(*_a: object, **_k: object) -> object:
        raise urllib.error.HTTPError("http://gw/admin", 400, "error", {}, io.BytesIO(body))  # type: ignore[arg-type]

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(DeviceIdError, match="reserved"):
        GatewayAdmin("http://gw", "tok").register(
            "gateway", role="button", household="h", village=None, groups=(), hw_id="", force=False
        )


# -- provisioning: the command line and the flow


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onekey")
    provision_cli.add_commands(p.add_subparsers(dest="cmd"))
    return p


@pytest.mark.parametrize(
    "argv",
    [
        ["provision", "device", "--role", "button", "--household", "h-1", "--port", "/dev/x",
         "--device-id", "gateway"],
        ["provision", "replace", "--old", "centre", "--port", "/dev/x"],
        ["provision", "revoke", "svc-monitor"],
    ],
    ids=["device", "replace", "revoke"],
)
def test_provision_command_line_refuses_a_reserved_id(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    assert "is reserved for a service login" in capsys.readouterr().err


def test_provision_flow_refuses_a_reserved_id_before_touching_board_or_gateway() -> None:
    class NoGateway(GatewayAdmin):
        def _call(self, *a: object, **k: object) -> object:
            raise AssertionError("the gateway was asked")

    opts = Options(port="/nonexistent/tty", role="button", household="h-1",
                   admin=NoGateway("http://gw", TOKEN), device_id="gateway")
    with pytest.raises(DeviceIdError, match="reserved"):
        provision(opts)


def test_an_id_the_board_brings_is_checked_like_a_given_one() -> None:
    with pytest.raises(DeviceIdError, match="reserved"):
        check_device_id("svc-old")
    with pytest.raises(DeviceIdError, match="1-32 characters"):
        check_device_id("Btn 1")
    assert check_device_id("btn-0001") == "btn-0001"


# -- gateway ids: a gateway's certificate CN is its id


@pytest.fixture
def centre_dir(tmp_path: Path) -> Path:
    d = tmp_path / "centre"
    ca = pki.create_ca(d / "pki")
    tls = pki.issue_client(ca, d / "pki", "centre")
    init_centre(d, ca=tls.ca, cert=tls.cert, tls_key=tls.key)
    return d


@pytest.mark.parametrize("name", RESERVED)
def test_gateway_enrolment_refuses_a_reserved_gateway_id(
    tmp_path: Path, centre_dir: Path, name: str
) -> None:
    issued = set((centre_dir / "pki").iterdir())
    with pytest.raises(EnrolmentError, match="reserved"):
        enrol(gateway_id=name, village="v-1", centre_dir=centre_dir, state_dir=tmp_path / "gw")
    assert set((centre_dir / "pki").iterdir()) == issued, "no certificate was issued"
    pub = public_hex(generate_private_key(tmp_path / f"{name}.key"))
    with pytest.raises(EnrolError, match="reserved"):
        enrol_gateway(centre_dir / "centre.toml", name, pub)


# -- the brokers give service rights to reserved names only


def test_brokers_refuse_service_rights_for_a_name_a_device_could_have(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="not a reserved name"):
        VillageBroker(tmp_path / "v", 1883, service_users=["gateway", "monitor"])
    with pytest.raises(BrokerError, match="not a reserved name"):
        village_acl(["btn-0001"])
    with pytest.raises(BrokerError, match="not a reserved name"):
        centre_acl(["centre", "gw-1"])
    server = pki.issue_server(pki.create_ca(tmp_path / "pki"), tmp_path / "pki", "centre-broker")
    broker = CentreBroker(tmp_path / "c", 8883, server)
    with pytest.raises(BrokerError, match="not a reserved name"):
        broker.write_acl(["centre", "monitor"])
    assert "user svc-monitor\n" in village_acl(["gateway", "svc-monitor"])
