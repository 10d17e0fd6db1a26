"""The device registry: which devices exist, their keys, village and household.

The gateway keeps an in-memory view (`Registry`) for the hot path and reloads it when the
registry version in SQLite changes. Administration (adding and revoking devices) goes through
the plain-sqlite3 functions below, used by the CLI, provisioning and the demo; each bumps the
version so a running gateway picks the change up within a couple of seconds.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_fw import okproto
from gateway.errors import RegistryError
from gateway.store import COLUMN_MIGRATIONS, SCHEMA, Store
from transport.keys import private_db, private_dir

ROLES = ("button", "speaker")
# Power profiles (docs/gateway.md, Supervision): mains devices heartbeat often, battery buttons
# sleep and check in; the gateway's supervision judges each by its own profile.
POWERS = ("mains", "battery")


@dataclass(frozen=True)
class Device:
    id: str
    key: bytes
    role: str
    village: str
    household: str
    enabled: bool
    groups: tuple[str, ...] = ()
    power: str = "mains"
    period_s: int = 0  # heartbeat (mains) or check-in (battery) period; 0: the profile default


class Registry:
    """In-memory view of the devices table plus the replay state the gateway checks."""

    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}
        self.hb_counter: dict[str, int] = {}
        self.event_floor: dict[str, int] = {}
        self.version = ""

    def key_for(self, device_id: str) -> bytes | None:
        dev = self.devices.get(device_id)
        if dev is None or not dev.enabled:
            return None
        return dev.key

    async def reload(self, store: Store) -> bool:
        """Reload when the registry version moved. Returns True if it did."""
        version = await store.registry_version()
        if version == self.version and self.devices:
            return False
        rows = await store.fetch_devices()
        devices: dict[str, Device] = {}
        for r in rows:
            devices[r["id"]] = Device(
                id=r["id"],
                key=bytes.fromhex(r["key_hex"]),
                role=r["role"],
                village=r["village"],
                household=r["household"],
                enabled=bool(r["enabled"]),
                groups=tuple(g for g in str(r["groups"]).split(",") if g),
                power=str(r["power"]),
                period_s=int(r["period_s"]),
            )
            # Never move a replay watermark backwards on reload.
            self.hb_counter[r["id"]] = max(self.hb_counter.get(r["id"], 0), int(r["hb_counter"]))
            self.event_floor[r["id"]] = int(r["event_floor"])
        self.devices = devices
        self.version = version
        return True


# -- administration (synchronous; safe while the gateway runs: WAL + busy timeout)

# Columns only administration reads and writes (the hot path never needs them), so they are
# added here, once, to older databases. hw_id: the board's machine.unique_id() in hex, which
# tells a re-provisioned board from a different board that was given the same device id.
ADMIN_COLUMNS = ("ALTER TABLE devices ADD COLUMN hw_id TEXT NOT NULL DEFAULT ''",)


def open_admin(db_path: Path) -> sqlite3.Connection:
    # The database holds the device keys: 0600 before sqlite creates it (gateway/store.py).
    private_dir(db_path.parent, tighten=True)
    private_db(db_path)
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    for sql in (*COLUMN_MIGRATIONS, *ADMIN_COLUMNS):
        try:
            conn.execute(sql)
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise
    return conn


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO meta(name, value) VALUES ('registry_version', ?)"
        " ON CONFLICT(name) DO UPDATE SET value=excluded.value",
        (f"{time.time_ns()}",),
    )


class ReservedIdError(RegistryError):
    """The id is a service login's name on the brokers (protocol §1.1)."""


def _check_entry(
    device_id: str, role: str, groups: Sequence[str], power: str = "mains", period_s: int = 0
) -> None:
    """The rules every registry entry follows, however it is made."""
    if power not in POWERS:
        raise RegistryError(f"power must be one of {', '.join(POWERS)}, not {power!r}")
    if power == "battery" and role != "button":
        raise RegistryError(f"a {role} runs on mains: power must be 'mains'")
    if period_s < 0:
        raise RegistryError(f"period_s must be 0 (the profile's default) or more, not {period_s}")
    if not okproto.valid_id(device_id):
        raise RegistryError(f"device id {device_id!r} must be 1-32 characters of a-z, 0-9, '-'")
    if okproto.reserved_id(device_id):
        raise ReservedIdError(
            f"device id {device_id!r} is reserved: it names a service login on the brokers "
            f"({', '.join(okproto.RESERVED_IDS)} and {okproto.SERVICE_PREFIX}...), whose password "
            "and rights a device must never get (protocol §1.1); choose another id"
        )
    if role not in ROLES:
        raise RegistryError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    for g in groups:
        if not okproto.valid_id(g):
            raise RegistryError(f"group {g!r} must be 1-32 characters of a-z, 0-9, '-'")


def new_device_key() -> bytes:
    return os.urandom(32)


def add_device(
    conn: sqlite3.Connection,
    device_id: str,
    *,
    role: str,
    village: str,
    household: str,
    key: bytes | None = None,
    groups: Sequence[str] = (),
    power: str = "mains",
    period_s: int = 0,
) -> Device:
    _check_entry(device_id, role, groups, power, period_s)
    key = key if key is not None else new_device_key()
    if len(key) != 32:
        raise RegistryError("a device key is 32 bytes")
    conn.execute("BEGIN IMMEDIATE")
    try:
        exists = conn.execute("SELECT 1 FROM devices WHERE id=?", (device_id,)).fetchone()
        if exists:
            raise RegistryError(
                f"device {device_id} is already registered; revoke it first or choose another id"
            )
        conn.execute(
            "INSERT INTO devices(id, key_hex, role, village, household, enabled, created_at, groups,"
            " power, period_s) VALUES (?,?,?,?,?,1,?,?,?,?)",
            (
                device_id, key.hex(), role, village, household, time.time_ns() // 1_000_000,
                ",".join(groups), power, period_s,
            ),
        )
        _bump(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return Device(device_id, key, role, village, household, True, tuple(groups), power, period_s)


def revoke_device(conn: sqlite3.Connection, device_id: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute("UPDATE devices SET enabled=0 WHERE id=?", (device_id,))
        if cur.rowcount == 0:
            raise RegistryError(f"device {device_id} is not registered at this gateway")
        _bump(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def list_devices(conn: sqlite3.Connection) -> list[tuple[str, str, str, str, bool, int | None]]:
    rows = conn.execute(
        "SELECT id, role, village, household, enabled, last_seen FROM devices ORDER BY id"
    ).fetchall()
    return [(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows]


# -- provisioning (the gateway's admin API): register a board, re-issue, look up


class DeviceConflict(RegistryError):
    """The device id is taken in a way only an explicit --force may override. `code` names
    the case: other_board, other_household, other_role, revoked."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Registration:
    device: Device
    hw_id: str
    # True: a new registry entry; False: an existing one got a new key (re-provisioning).
    created: bool
    # One above the highest counter this gateway has seen from the id: a board that takes
    # over the id must count from here, or its first messages would look like replays.
    counter_floor: int


@dataclass(frozen=True)
class DeviceRecord:
    """A registry row as administration shows it (no key)."""

    id: str
    role: str
    village: str
    household: str
    groups: tuple[str, ...]
    enabled: bool
    hw_id: str
    created_at: int
    last_seen: int | None
    status_json: str | None
    counter_floor: int
    # The newest test event from the device: (counter, gateway receive time ms, state).
    last_test: tuple[int, int, str] | None
    power: str = "mains"
    period_s: int = 0


def _groups(text: str | None) -> tuple[str, ...]:
    return tuple(g for g in str(text or "").split(",") if g)


def _counter_floor(conn: sqlite3.Connection, device_id: str) -> int:
    row = conn.execute(
        "SELECT MAX(COALESCE((SELECT MAX(counter) FROM events WHERE device=?), 0),"
        " hb_counter, event_floor) FROM devices WHERE id=?",
        (device_id, device_id),
    ).fetchone()
    top = row[0] if row and row[0] is not None else 0
    return int(top) + 1


def register_device(
    conn: sqlite3.Connection,
    device_id: str,
    *,
    role: str,
    village: str,
    household: str,
    groups: Sequence[str] = (),
    hw_id: str = "",
    force: bool = False,
    power: str = "mains",
    period_s: int = 0,
) -> Registration:
    """Register `device_id` for the board `hw_id`, or give it a new key if it is registered
    already (re-provisioning the same board is safe to repeat). Taking an id from another
    board, another household or role, or bringing back a revoked id needs `force`."""
    _check_entry(device_id, role, groups, power, period_s)
    hw_id = hw_id.lower()
    key = new_device_key()
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT role, household, enabled, hw_id FROM devices WHERE id=?", (device_id,)
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO devices(id, key_hex, role, village, household, enabled, created_at,"
                " groups, hw_id, power, period_s) VALUES (?,?,?,?,?,1,?,?,?,?,?)",
                (device_id, key.hex(), role, village, household, time.time_ns() // 1_000_000,
                 ",".join(groups), hw_id, power, period_s),
            )
            created = True
        else:
            if not force:
                _check_takeover(device_id, row, role=role, household=household, hw_id=hw_id)
            conn.execute(
                "UPDATE devices SET key_hex=?, role=?, village=?, household=?, groups=?,"
                " hw_id=?, enabled=1, power=?, period_s=? WHERE id=?",
                (key.hex(), role, village, household, ",".join(groups), hw_id or row[3],
                 power, period_s, device_id),
            )
            created = False
        floor = _counter_floor(conn, device_id)
        _bump(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    dev = Device(device_id, key, role, village, household, True, tuple(groups), power, period_s)
    return Registration(dev, hw_id, created, floor)


def _check_takeover(
    device_id: str, row: tuple[str, str, int, str], *, role: str, household: str, hw_id: str
) -> None:
    old_role, old_household, enabled, old_hw = row
    if old_hw and hw_id and old_hw != hw_id:
        raise DeviceConflict(
            "other_board",
            f"device id {device_id} belongs to another board (hardware id {old_hw}); choose "
            f"another --device-id, or move the id to this board with `onekey provision replace "
            f"--old {device_id}` or --force",
        )
    if not enabled:
        raise DeviceConflict(
            "revoked",
            f"device {device_id} was revoked at this gateway; use --force to bring it back, "
            f"or give this board a new --device-id",
        )
    if old_household != household:
        raise DeviceConflict(
            "other_household",
            f"device {device_id} is bound to household {old_household}, not {household}; "
            f"use --force to move it",
        )
    if old_role != role:
        raise DeviceConflict(
            "other_role",
            f"device {device_id} is registered as a {old_role}, not a {role}; use --force "
            f"to change it",
        )


_RECORD_SQL = (
    "SELECT id, role, village, household, groups, enabled, hw_id, created_at, last_seen,"
    " status_json, power, period_s FROM devices"
)


def _record(conn: sqlite3.Connection, r: Any) -> DeviceRecord:
    dev_id = str(r[0])
    test = conn.execute(
        "SELECT counter, gw_ts, state FROM events WHERE device=? AND kind='test'"
        " ORDER BY seq DESC LIMIT 1",
        (dev_id,),
    ).fetchone()
    return DeviceRecord(
        id=dev_id,
        role=str(r[1]),
        village=str(r[2]),
        household=str(r[3]),
        groups=_groups(r[4]),
        enabled=bool(r[5]),
        hw_id=str(r[6] or ""),
        created_at=int(r[7]),
        last_seen=int(r[8]) if r[8] is not None else None,
        status_json=str(r[9]) if r[9] is not None else None,
        counter_floor=_counter_floor(conn, dev_id),
        last_test=(int(test[0]), int(test[1]), str(test[2])) if test else None,
        power=str(r[10]),
        period_s=int(r[11]),
    )


def get_device(conn: sqlite3.Connection, device_id: str) -> DeviceRecord | None:
    row = conn.execute(_RECORD_SQL + " WHERE id=?", (device_id,)).fetchone()
    return _record(conn, row) if row else None


def device_records(conn: sqlite3.Connection) -> list[DeviceRecord]:
    rows = conn.execute(_RECORD_SQL + " ORDER BY id").fetchall()
    return [_record(conn, r) for r in rows]
