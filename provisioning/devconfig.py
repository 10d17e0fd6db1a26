"""The board's config.json (docs/firmware.md, "config.json") and the flash state that goes
with a new identity: the counter floor and an emptied outbox."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from device_fw import okproto
from provisioning.board import Board
from provisioning.errors import AlreadyProvisionedError, DeviceIdError
from provisioning.files import upload
from provisioning.gwadmin import Credentials

CONFIG = "config.json"
COUNTER = "ctr"
OUTBOX = "ob"
ROLE_PREFIX = {"button": "btn", "speaker": "spk"}

# What provisioning owns in config.json; anything else a board has (pin numbers of a board
# variant, tuned timings) is kept when it is provisioned again.
MANAGED = ("id", "role", "key", "hal", "sim_port", "wifi", "mqtt", "village", "household",
           "groups", "provisioned_at", "power")


@dataclass(frozen=True)
class Existing:
    """What the board's current config.json says about its identity (None: no config)."""

    device_id: str | None
    household: str | None
    village: str | None
    data: dict[str, Any]


def parse_existing(raw: bytes | None) -> Existing | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return Existing(None, None, None, {})  # damaged: bound to nobody, replaced
    if not isinstance(data, dict):
        return Existing(None, None, None, {})

    def text(name: str) -> str | None:
        v = data.get(name)
        return v if isinstance(v, str) and v else None

    return Existing(text("id"), text("household"), text("village"), data)


def check_device_id(device_id: str) -> str:
    """`device_id` if a device may have it (§1.1), else DeviceIdError saying why."""
    if not okproto.valid_id(device_id):
        raise DeviceIdError(
            f"device id {device_id!r} must be 1-32 characters of a-z, 0-9 and '-', not starting "
            "with '-' (e.g. btn-0001)"
        )
    if okproto.reserved_id(device_id):
        raise DeviceIdError(
            f"device id {device_id!r} is reserved for a service login on the brokers "
            f"({', '.join(okproto.RESERVED_IDS)}, {okproto.SERVICE_PREFIX}...): a board given it "
            "would get that service's password and rights. Choose another --device-id, or leave "
            "it out for btn-/spk- and the board's unique id"
        )
    return device_id


def default_device_id(role: str, uid: str) -> str:
    """`btn-` or `spk-` and the last 8 hex digits of the board's unique id."""
    return f"{ROLE_PREFIX[role]}-{uid[-8:]}"


def check_binding(existing: Existing | None, household: str, force: bool, port: str) -> None:
    """A board already bound to another household moves only with --force."""
    if existing is None or existing.household is None or existing.household == household:
        return
    if force:
        return
    where = f" in village {existing.village}" if existing.village else ""
    raise AlreadyProvisionedError(
        f"the board on {port} is provisioned as {existing.device_id or '?'} for household "
        f"{existing.household}{where}. To move it to household {household}, run the same command "
        f"with --force; to move a household to a new board, use `onekey provision replace`"
    )


def build_config(
    creds: Credentials,
    *,
    virtual: bool,
    sim_port: int | None,
    wifi: dict[str, str],
    broker_host: str,
    broker_port: int,
    existing: Existing | None,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if existing is not None:
        cfg.update({k: v for k, v in existing.data.items() if k not in MANAGED})
    cfg.update(
        id=creds.id,
        role=creds.role,
        key=creds.key_hex,
        hal="sim" if virtual else "esp32",
        wifi=wifi,
        mqtt={"host": broker_host, "port": broker_port, "user": creds.mqtt_user,
              "password": creds.mqtt_password},
        village=creds.village,
        household=creds.household,
        groups=list(creds.groups),
        provisioned_at=int(time.time()),
        # The power profile and the period the gateway supervises the board by.
        power=creds.power,
    )
    if creds.period_s:
        cfg["checkin_s" if creds.power == "battery" else "hb_interval_s"] = creds.period_s
    if virtual:
        cfg["sim_port"] = sim_port
    return cfg


def write_identity(board: Board, cfg: dict[str, Any], counter_floor: int) -> tuple[int, int]:
    """Writes config.json (write, check, rename), raises the counter to `counter_floor` and
    empties the outbox. Returns (config bytes written, outbox entries dropped)."""
    data = (json.dumps(cfg, indent=1, sort_keys=True) + "\n").encode()
    upload(board, CONFIG, data, skip_same=False)
    # The counter: never below what the gateway has seen from this id (a board taking over
    # an id, or a re-flashed one, would otherwise send counters the gateway takes as replays).
    raw = board.read_file(COUNTER)
    try:
        have = int(raw or b"0")
    except ValueError:
        have = 0
    if have < counter_floor:
        upload(board, COUNTER, f"{counter_floor}\n".encode(), skip_same=False)
    # Messages still in the outbox were signed with the previous key (or id): the gateway
    # would refuse them as bad_mac, and they would sit there re-sent for ever.
    dropped = 0
    if OUTBOX in board.listdir():
        names = board.listdir(OUTBOX)
        for name in names:
            board.remove(f"{OUTBOX}/{name}")
        dropped = len([n for n in names if not n.endswith(".tmp")])
    return len(data), dropped
