"""State directories are 0700 and secret-bearing files 0600, whatever the umask (issue 7,
fault 8): the gateway database holds every device's HMAC key, the centre's its people's data.
Each test runs under umask 000 (nothing narrowed: what the code asks for is what it gets) and
under umask 022 (the usual one, which left gateway.db 0644 in a 0755 directory)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from centre.enrol import init_centre
from centre.store import Store as CentreStore
from gateway import registry
from gateway.admin import ensure_token
from gateway.brokerctl import BrokerControl
from gateway.store import Store as GatewayStore
from transport import pki
from transport.brokers import CentreBroker, VillageBroker
from transport.keys import generate_private_key, private_db, private_dir, private_file, write_secret


@pytest.fixture(params=[0o000, 0o022], ids=["umask000", "umask022"], autouse=True)
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(*paths: Path) -> None:
    for p in paths:
        assert p.exists(), f"{p} missing"
        want = 0o700 if p.is_dir() else 0o600
        assert mode(p) == want, f"{p} is {mode(p):o}, not {want:o}"


def sqlite_files(db: Path) -> list[Path]:
    sides = [db.with_name(db.name + s) for s in ("-wal", "-shm")]
    assert all(s.exists() for s in sides), "checked while the database is open in WAL mode"
    return [db, *sides]


async def test_gateway_store_is_private(tmp_path: Path) -> None:
    state = tmp_path / "var" / "gateway"
    store = GatewayStore(state / "gateway.db")
    await store.start()
    try:
        assert_private(tmp_path / "var", state, *sqlite_files(state / "gateway.db"))
    finally:
        await store.close()


async def test_gateway_store_narrows_an_existing_database_and_directory(tmp_path: Path) -> None:
    state = tmp_path / "gateway"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    db = state / "gateway.db"
    registry.open_admin(db).close()
    for p in (db, db.with_name("gateway.db-wal")):
        if p.exists():
            os.chmod(p, 0o644)
    os.chmod(state, 0o755)
    store = GatewayStore(db)
    await store.start()
    try:
        assert_private(state, *sqlite_files(db))
    finally:
        await store.close()


def test_registry_admin_creates_a_private_database(tmp_path: Path) -> None:
    db = tmp_path / "gateway" / "gateway.db"
    conn = registry.open_admin(db)
    try:
        registry.add_device(conn, "btn-0001", role="button", village="v-1", household="h-1")
        assert_private(db.parent, *sqlite_files(db))
    finally:
        conn.close()


async def test_centre_store_is_private(tmp_path: Path) -> None:
    db = tmp_path / "centre" / "centre.db"
    async with CentreStore(db):
        assert_private(db.parent, *sqlite_files(db))


def test_centre_init_makes_a_private_directory_and_key(tmp_path: Path) -> None:
    config, _pub = init_centre(tmp_path / "centre")
    assert_private(config.parent, config.parent / "centre.key")


def test_generated_keys_are_private(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "gateway.key"
    generate_private_key(key)
    write_secret(tmp_path / "keys" / "village-broker.pass", b"secret")
    assert_private(key.parent, key, key.parent / "village-broker.pass")


def test_write_secret_narrows_a_leftover_temporary_file(tmp_path: Path) -> None:
    leftover = tmp_path / "token.tmp"
    leftover.write_text("old")
    os.chmod(leftover, 0o666)
    write_secret(tmp_path / "token", b"new")
    assert_private(tmp_path / "token")


def test_tls_keys_are_private_and_certificates_public(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    ca = pki.create_ca(d)
    server = pki.issue_server(ca, d, "centre-broker")
    client = pki.issue_client(ca, d, "gw-1")
    assert_private(d, ca.key, server.key, client.key)
    for cert in (ca.cert, server.cert, client.cert):
        assert mode(cert) == 0o644


def test_broker_files_are_private(tmp_path: Path) -> None:
    village = VillageBroker(tmp_path / "village", 1883)
    village.add_user("btn-0001", "pw")
    village.write_acl()
    village.write_config()
    assert_private(village.dir, village.password_path)
    server = pki.issue_server(pki.create_ca(tmp_path / "pki"), tmp_path / "pki", "centre-broker")
    centre = CentreBroker(tmp_path / "centre", 8883, server)
    centre.write_acl()
    centre.write_config()
    assert_private(centre.dir)


async def test_gateway_broker_password_file_is_private(tmp_path: Path) -> None:
    passwd = tmp_path / "mosquitto" / "passwd"
    ctl = BrokerControl(passwd)
    await ctl.set_user("btn-0001", "pw")
    assert_private(passwd.parent, passwd)


def test_admin_token_is_private(tmp_path: Path) -> None:
    token = tmp_path / "gateway" / "admin.token"
    ensure_token(token)
    assert_private(token.parent, token)


def test_private_helpers_narrow_what_exists(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir()
    os.chmod(d, 0o755)
    private_dir(d)
    assert mode(d) == 0o755, "a directory that may be shared is left alone without tighten"
    private_dir(d, tighten=True)
    f = d / "x.db"
    f.write_text("")
    os.chmod(f, 0o644)
    wal = d / "x.db-wal"
    wal.write_text("")
    os.chmod(wal, 0o666)
    private_db(f)
    private_file(d / "new")
    assert_private(d, f, wal, d / "new")


async def test_gateway_keeps_a_group_readable_broker_password_file_but_not_world(
    tmp_path: Path,
) -> None:
    """Mosquitto running as its own user may read the file through its group (0640); no
    one else may."""
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    os.chmod(passwd, 0o644)
    await BrokerControl(passwd).set_user("btn-0001", "pw")
    assert mode(passwd) == 0o640
