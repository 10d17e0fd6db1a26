"""`onekey enrol`: makes a gateway known to its township centre, and the centre to it.

    onekey enrol --gateway-id gw-xiaocun --village v-xiaocun \\
        --centre-dir /var/lib/onekey/centre --state-dir /var/lib/onekey/gateway

1. the gateway's Ed25519 key (`gateway.key`, 0600), created once and kept;
2. its TLS client certificate for the centre broker (CN = gateway id), issued by the centre's
   CA (`--pki-dir`, default CENTRE_DIR/pki, holding ca.crt and ca.key), copied into the state
   directory as centre-ca.pem, gateway-cert.pem, gateway-key.pem (0600);
3. its public key enrolled at the centre, for the village it serves;
4. the centre's public key and CA pinned in the gateway's configuration (`gateway.toml` is
   written if it does not exist; an existing one gets the centre key it must pin);
5. the gateway's village broker password (`village-broker.pass`, 0600) and admin token.

The centre has no enrolment API: this runs where the centre's directory is reachable (the
centre machine, a mounted share, or a copy carried to it). Every step keeps what exists, so
running it again changes nothing; to rotate the gateway's key, delete gateway.key first.
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from centre.config import load_config as load_centre_config
from centre.enrol import EnrolError, centre_public_key, enrol_gateway
from device_fw import okproto
from gateway.config import render_config
from provisioning.errors import EnrolmentError
from transport import pki
from transport.keys import (
    KeyFileError,
    PrivatePathError,
    generate_private_key,
    load_private_key,
    private_dir,
    public_hex,
    write_secret,
)


@dataclass(frozen=True)
class Enrolment:
    gateway_id: str
    public_key: str
    centre_key: str
    config: Path
    config_written: bool
    files: tuple[Path, ...]


def _copy(src: Path, dst: Path, secret: bool = False) -> None:
    if secret:
        write_secret(dst, src.read_bytes())
    else:
        private_dir(dst.parent)
        shutil.copyfile(src, dst)
        dst.chmod(0o644)


def _check_owner(config: Path, gateway_id: str) -> None:
    """An existing configuration (and the key beside it) must be this gateway's."""
    if not config.exists():
        return
    m = re.search(r'(?m)^id\s*=\s*"([^"]*)"', config.read_text())
    if m and m.group(1) != gateway_id:
        raise EnrolmentError(
            f"{config} is the configuration of gateway {m.group(1)}, not {gateway_id}; "
            "give this gateway its own --state-dir"
        )


def _pin_centre_key(config: Path, gateway_id: str, centre_key: str) -> None:
    text = config.read_text()
    new, n = re.subn(r'(?m)^centre_public_key\s*=\s*"[0-9a-fA-F]*"',
                     f'centre_public_key = "{centre_key}"', text)
    if n != 1:
        raise EnrolmentError(f"{config} has no centre_public_key line to update")
    if new != text:
        tmp = config.with_name(config.name + ".tmp")
        tmp.write_text(new)
        tmp.replace(config)


def enrol(
    *,
    gateway_id: str,
    village: str,
    centre_dir: Path,
    state_dir: Path,
    pki_dir: Path | None = None,
    config: Path | None = None,
    centre_host: str | None = None,
    centre_port: int | None = None,
    village_host: str = "127.0.0.1",
    village_port: int = 1883,
    name: str | None = None,
    broker_passwd: Path | None = None,
    broker_reload: str = "none",
) -> Enrolment:
    for what, value in (("gateway id", gateway_id), ("village", village)):
        if not okproto.valid_id(value):
            raise EnrolmentError(f"{what} {value!r} must be 1-32 characters of a-z, 0-9, '-'")
    if okproto.reserved_id(gateway_id):
        # The gateway's certificate CN is its id: a reserved one (`centre`, ...) would carry
        # that service's rights on the centre broker (§1.1, §6).
        raise EnrolmentError(
            f"gateway id {gateway_id!r} is reserved for a service login on the brokers "
            f"({', '.join(okproto.RESERVED_IDS)}, {okproto.SERVICE_PREFIX}...); choose another id"
        )
    centre_config = centre_dir / "centre.toml"
    ccfg = load_centre_config(centre_config)
    state_dir = state_dir.resolve()
    private_dir(state_dir, tighten=True)  # keys, the broker password and the admin token
    config = config or state_dir / "gateway.toml"
    _check_owner(config, gateway_id)

    # 1. the gateway's signing key
    key_path = state_dir / "gateway.key"
    key = load_private_key(key_path) if key_path.exists() else generate_private_key(key_path)
    pub = public_hex(key)

    # 2. its certificate for the centre broker
    pki_dir = pki_dir or centre_dir / "pki"
    ca = pki.CaFiles(cert=pki_dir / "ca.crt", key=pki_dir / "ca.key")
    if not (ca.cert.exists() and ca.key.exists()):
        raise EnrolmentError(
            f"no CA in {pki_dir} (ca.crt and ca.key); give the centre's with --pki-dir"
        )
    tls = pki.issue_client(ca, pki_dir, gateway_id)
    files = (state_dir / "centre-ca.pem", state_dir / "gateway-cert.pem", state_dir / "gateway-key.pem")
    _copy(tls.ca, files[0])
    _copy(tls.cert, files[1])
    _copy(tls.key, files[2], secret=True)

    # 3. its public key at the centre
    enrol_gateway(centre_config, gateway_id, pub, name=name or village, villages=[village])

    # 4. the centre's key, pinned
    centre_key = centre_public_key(ccfg)
    pw = state_dir / "village-broker.pass"
    if not pw.exists():
        write_secret(pw, secrets.token_urlsafe(24).encode() + b"\n")
    token = state_dir / "admin.token"
    if not token.exists():
        write_secret(token, secrets.token_urlsafe(32).encode() + b"\n")
    written = not config.exists()
    if written:
        text = render_config(
            gateway_id=gateway_id, village=village, state_dir=state_dir,
            centre_public_key=centre_key, village_host=village_host, village_port=village_port,
            centre_host=centre_host or ccfg.broker_host, centre_port=centre_port or ccfg.broker_port,
            broker_passwd=broker_passwd, broker_reload=broker_reload,
        )
        config.write_text(text)
    else:
        _pin_centre_key(config, gateway_id, centre_key)
    return Enrolment(gateway_id, pub, centre_key, config, written, (key_path, *files, pw, token))


def run(args: argparse.Namespace) -> int:
    """`onekey enrol` (provisioning/cli.py defines its options)."""
    try:
        e = enrol(
            gateway_id=args.gateway_id, village=args.village, centre_dir=args.centre_dir,
            state_dir=args.state_dir, pki_dir=args.pki_dir, config=args.config,
            centre_host=args.centre_host, centre_port=args.centre_port,
            village_host=args.village_host, village_port=args.village_port, name=args.name,
            broker_passwd=args.broker_passwd, broker_reload=args.broker_reload,
        )
    except (EnrolError, KeyFileError, pki.PkiError, PrivatePathError) as exc:
        raise EnrolmentError(str(exc)) from None
    print(f"gateway {e.gateway_id} enrolled; its public key {e.public_key}")
    print(f"centre key pinned: {e.centre_key}")
    print(f"configuration: {e.config} ({'written' if e.config_written else 'updated'})")
    pw = args.state_dir.resolve() / "village-broker.pass"
    if args.broker_passwd is not None:
        return 0
    print("next: give the gateway its login on the village broker, e.g.\n"
          f"  mosquitto_passwd -b /etc/mosquitto/passwd gateway \"$(cat {pw})\"\n"
          "then set [admin] broker_passwd and broker_reload in the configuration "
          "(docs/provisioning.md)")
    return 0
