"""The gateway's registry as provisioning uses it: register, re-issue, refuse a takeover."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import registry
from gateway.errors import RegistryError
from gateway.registry import DeviceConflict, register_device


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = registry.open_admin(tmp_path / "gateway.db")
    try:
        yield c
    finally:
        c.close()


def reg(conn: sqlite3.Connection, **kw: object) -> registry.Registration:
    args: dict[str, object] = dict(role="button", village="v-1", household="h-1", hw_id="aa01")
    args.update(kw)
    return register_device(conn, "btn-1", **args)  # type: ignore[arg-type]


def test_a_new_board_is_registered_with_a_fresh_key(conn: sqlite3.Connection) -> None:
    r = reg(conn, groups=("north",))
    assert r.created and len(r.device.key) == 32 and r.counter_floor == 1
    rec = registry.get_device(conn, "btn-1")
    assert rec is not None and rec.hw_id == "aa01" and rec.groups == ("north",) and rec.enabled


def test_the_same_board_again_gets_a_new_key_not_an_error(conn: sqlite3.Connection) -> None:
    first = reg(conn)
    again = reg(conn)
    assert not again.created and again.device.key != first.device.key


def test_another_board_cannot_take_the_id_without_force(conn: sqlite3.Connection) -> None:
    reg(conn)
    with pytest.raises(DeviceConflict, match="belongs to another board") as info:
        reg(conn, hw_id="bb02")
    assert info.value.code == "other_board"
    assert reg(conn, hw_id="bb02", force=True).device.id == "btn-1"
    rec = registry.get_device(conn, "btn-1")
    assert rec is not None and rec.hw_id == "bb02"


def test_moving_to_another_household_needs_force(conn: sqlite3.Connection) -> None:
    reg(conn)
    with pytest.raises(DeviceConflict, match="bound to household h-1") as info:
        reg(conn, household="h-2")
    assert info.value.code == "other_household"
    reg(conn, household="h-2", force=True)


def test_a_revoked_id_comes_back_only_with_force(conn: sqlite3.Connection) -> None:
    reg(conn)
    registry.revoke_device(conn, "btn-1")
    with pytest.raises(DeviceConflict, match="revoked"):
        reg(conn)
    reg(conn, force=True)
    rec = registry.get_device(conn, "btn-1")
    assert rec is not None and rec.enabled


def test_a_pre_registered_id_is_claimed_by_the_first_board(conn: sqlite3.Connection) -> None:
    registry.add_device(conn, "btn-1", role="button", village="v-1", household="h-1")
    r = reg(conn, hw_id="cc03")
    assert not r.created
    rec = registry.get_device(conn, "btn-1")
    assert rec is not None and rec.hw_id == "cc03"


def test_counter_floor_is_above_everything_seen_from_the_id(conn: sqlite3.Connection) -> None:
    reg(conn)
    conn.execute(
        "INSERT INTO events(device, counter, kind, village, household, gw_ts, state, updated_at)"
        " VALUES ('btn-1', 41, 'test', 'v-1', 'h-1', 5, 'received', 5)"
    )
    conn.execute("UPDATE devices SET hb_counter=17 WHERE id='btn-1'")
    assert reg(conn, hw_id="dd04", force=True).counter_floor == 42
    rec = registry.get_device(conn, "btn-1")
    assert rec is not None and rec.last_test == (41, 5, "received")


def test_bad_ids_and_roles_are_refused(conn: sqlite3.Connection) -> None:
    with pytest.raises(RegistryError, match="device id"):
        register_device(conn, "Bad Id", role="button", village="v", household="h")
    with pytest.raises(RegistryError, match="role"):
        register_device(conn, "btn-2", role="siren", village="v", household="h")
    with pytest.raises(RegistryError, match="group"):
        register_device(conn, "btn-2", role="button", village="v", household="h", groups=["A B"])


def test_the_hw_id_column_is_added_to_an_older_database_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE devices (id TEXT PRIMARY KEY, key_hex TEXT NOT NULL, role TEXT NOT NULL,"
        " village TEXT NOT NULL, household TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1,"
        " created_at INTEGER NOT NULL, hb_counter INTEGER NOT NULL DEFAULT 0,"
        " event_floor INTEGER NOT NULL DEFAULT 0, last_seen INTEGER, status_json TEXT)"
    )
    old.commit()
    old.close()
    for _ in range(2):
        registry.open_admin(path).close()
    c = sqlite3.connect(path)
    cols = [r[1] for r in c.execute("PRAGMA table_info(devices)")]
    c.close()
    assert cols.count("hw_id") == 1
