"""Setting up a centre and enrolling gateways; used by `onekey centre ...` and the demo."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from centre.accounts import Accounts
from centre.auth import Role
from centre.config import CentreConfig, load_config, render_config
from centre.frames import MAX_VILLAGES, valid_id
from centre.store import Gateway, Store, now_ms
from device_fw import okproto
from transport.keys import (
    generate_private_key,
    load_private_key,
    load_public_hex,
    private_dir,
    public_hex,
)

CONFIG_NAME = "centre.toml"
KEY_NAME = "centre.key"


class EnrolError(Exception):
    """A gateway id or public key is not acceptable, or a centre already exists there."""


def _config(config: CentreConfig | Path) -> CentreConfig:
    return config if isinstance(config, CentreConfig) else load_config(config)


def init_centre(
    directory: Path,
    *,
    http_host: str = "127.0.0.1",
    http_port: int = 8080,
    broker_host: str = "127.0.0.1",
    broker_port: int = 8883,
    ca: str | Path = "ca.pem",
    cert: str | Path = "centre-cert.pem",
    tls_key: str | Path = "centre-key.pem",
    client_id: str = "centre",
    gateway_timeout_s: float = 90.0,
) -> tuple[Path, str]:
    """Create `directory/centre.key` (Ed25519, mode 0600) and `directory/centre.toml`.

    Returns (config path, the centre's public key as hex): the key every gateway pins.
    TLS file paths may be relative to `directory`. Refuses to overwrite an existing centre.
    """
    config_path = directory / CONFIG_NAME
    key_path = directory / KEY_NAME
    for p in (config_path, key_path):
        if p.exists():
            raise EnrolError(f"{p} already exists; this directory already holds a centre")
    private_dir(directory)  # 0700 when new: it holds the centre's key and database
    key = generate_private_key(key_path)
    text = render_config(
        db="centre.db",
        key=KEY_NAME,
        http_host=http_host,
        http_port=http_port,
        broker_host=broker_host,
        broker_port=broker_port,
        ca=ca,
        cert=cert,
        tls_key=tls_key,
        client_id=client_id,
        gateway_timeout_s=gateway_timeout_s,
    )
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, config_path)
    load_config(config_path)  # what we wrote must read back
    return config_path, public_hex(key)


def centre_public_key(config: CentreConfig | Path) -> str:
    """The centre's public key (hex), which gateways pin to check the centre's acks."""
    return public_hex(load_private_key(_config(config).key_path))


def check_gateway(gateway_id: str, public_key_hex: str) -> str:
    if not valid_id(gateway_id):
        raise EnrolError(f"gateway id {gateway_id!r} must be 1-32 of a-z, 0-9, '-'")
    if okproto.reserved_id(gateway_id):  # its certificate's CN would carry a service's rights
        raise EnrolError(
            f"gateway id {gateway_id!r} is reserved for a service login on the brokers "
            f"({', '.join(okproto.RESERVED_IDS)}, {okproto.SERVICE_PREFIX}..., §1.1); choose another"
        )
    text = public_key_hex.strip().lower()
    if len(text) != 64:
        raise EnrolError("public key must be 64 hex digits (32 bytes of Ed25519)")
    try:
        load_public_hex(text)
    except Exception as exc:  # KeyFileError or cryptography's own errors
        raise EnrolError(f"public key is not a valid Ed25519 key: {exc}") from None
    return text


def check_villages(villages: Sequence[str] | None) -> list[str] | None:
    if villages is None:
        return None
    if isinstance(villages, str):  # a lone id would otherwise be read letter by letter
        villages = [villages]
    for v in villages:
        if not valid_id(v):
            raise EnrolError(f"village id {v!r} must be 1-32 of a-z, 0-9, '-'")
    if len(set(villages)) > MAX_VILLAGES:
        raise EnrolError(f"a gateway serves at most {MAX_VILLAGES} villages")
    return sorted(set(villages))


async def enrol_gateway_async(
    config: CentreConfig | Path,
    gateway_id: str,
    public_key_hex: str,
    name: str | None = None,
    villages: Sequence[str] | None = None,
) -> Gateway:
    """Enrol a gateway, or replace its public key (key rotation). Safe while the centre runs:
    the next message from that gateway is checked against the new key.

    `villages`: the village ids it serves (broadcasts to them go through it); None keeps the
    villages enrolled before, a list replaces them."""
    cfg = _config(config)
    key_hex = check_gateway(gateway_id, public_key_hex)
    vs = check_villages(villages)
    async with Store(cfg.db_path) as store:
        return await store.upsert_gateway(gateway_id, key_hex, now_ms(), name=name, villages=vs)


def enrol_gateway(
    config: CentreConfig | Path,
    gateway_id: str,
    public_key_hex: str,
    name: str | None = None,
    villages: Sequence[str] | None = None,
) -> Gateway:
    """Synchronous `enrol_gateway_async` (not from inside a running event loop)."""
    return asyncio.run(enrol_gateway_async(config, gateway_id, public_key_hex, name, villages))


async def add_staff_async(
    config: CentreConfig | Path,
    username: str,
    display_name: str,
    role: Role,
    password: str,
    token_name: str | None = None,
    actor: str = "setup",
) -> str | None:
    """Add a staff account (for set-up scripts, the demo and the local stack); with
    `token_name`, also an API token of the account's role, whose secret is returned."""
    cfg = _config(config)
    async with Store(cfg.db_path) as store:
        accounts = Accounts(store, cfg.auth)
        staff = await accounts.add(actor, username, display_name, role, password)
        if token_name is None:
            return None
        return (await accounts.create_token(actor, staff.id, token_name)).secret


def add_staff(
    config: CentreConfig | Path,
    username: str,
    display_name: str,
    role: Role,
    password: str,
    token_name: str | None = None,
    actor: str = "setup",
) -> str | None:
    """Synchronous `add_staff_async` (not from inside a running event loop)."""
    return asyncio.run(
        add_staff_async(config, username, display_name, role, password, token_name, actor)
    )
