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
from dataclasses import dataclass
from pathlib import Path

from device_fw import okproto
from gateway.errors import RegistryError
from gateway.store import SCHEMA, Store

ROLES = ("button", "speaker")


@dataclass(frozen=True)
class Device:
    id: str
    key: bytes
    role: str
    village: str
    household: str
    enabled: bool


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
            )
            # Never move a replay watermark backwards on reload.
            self.hb_counter[r["id"]] = max(self.hb_counter.get(r["id"], 0), int(r["hb_counter"]))
            self.event_floor[r["id"]] = int(r["event_floor"])
        self.devices = devices
        self.version = version
        return True


# -- administration (synchronous; safe while the gateway runs: WAL + busy timeout)


def open_admin(db_path: Path) -> sqlite3.Connection:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO meta(name, value) VALUES ('registry_version', ?)"
        " ON CONFLICT(name) DO UPDATE SET value=excluded.value",
        (f"{time.time_ns()}",),
    )


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
) -> Device:
    if not okproto.valid_id(device_id):
        raise RegistryError(f"device id {device_id!r} must be 1-32 characters of a-z, 0-9, '-'")
    if role not in ROLES:
        raise RegistryError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
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
            "INSERT INTO devices(id, key_hex, role, village, household, enabled, created_at)"
            " VALUES (?,?,?,?,?,1,?)",
            (device_id, key.hex(), role, village, household, time.time_ns() // 1_000_000),
        )
        _bump(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return Device(device_id, key, role, village, household, True)


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
