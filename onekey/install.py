"""`onekey install gateway|centre`: a Debian or Raspberry Pi OS machine set up to run a role.

Idempotent: every step keeps what exists (passwords, keys, certificates, configuration) and
rewrites only the files it owns (the Mosquitto drop-in, the ACL, the units), so running it again
changes nothing. `--root DIR` installs into a directory tree instead of `/` (tests, images):
users are created in DIR/etc/passwd by `systemd-sysusers --root`, units enabled by
`systemctl --root`, nothing is started.

What it does, and where (paths under the root):

| what | where | owner, mode |
| --- | --- | --- |
| system user `onekey` | sysusers.d entry, /usr/lib/sysusers.d/onekey.conf | |
| state | /var/lib/onekey (0711: Mosquitto passes through), /var/lib/onekey/ROLE | onekey, 0700 |
| village broker logins, ACL (gateway) | /var/lib/onekey/village-broker | onekey:mosquitto 2750, 0640 |
| CA, certificates, CRL (centre) | /var/lib/onekey/pki (ca.key, client keys 0600) | onekey:mosquitto 2750 |
| Mosquitto settings | /etc/mosquitto/conf.d/onekey-ROLE.conf (Debian's main file untouched) | root, 0644 |
| units | /etc/systemd/system/onekey-*.{service,timer,path} | root, 0644 |

The gateway's logins change at run time (devices provisioned or revoked through its admin API):
`onekey-broker-reload.path` reloads Mosquitto whenever the password file changes, since the
gateway (user onekey) cannot signal Mosquitto (user mosquitto) itself.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from transport import brokers, pki
from transport.keys import private_file, write_secret

USER = "onekey"
BROKER_GROUP = "mosquitto"
ONEKEY_BIN_IN_UNITS = "/opt/onekey/venv/bin/onekey"
STATE = Path("/var/lib/onekey")
DROPIN_DIR = Path("/etc/mosquitto/conf.d")
UNIT_DIR = Path("/etc/systemd/system")
SYSUSERS = Path("/usr/lib/sysusers.d/onekey.conf")

UNITS: dict[str, tuple[str, ...]] = {
    "gateway": (
        "onekey-gateway.service",
        "onekey-backup@.service",
        "onekey-backup@.timer",
        "onekey-broker-reload.path",
        "onekey-broker-reload.service",
    ),
    "centre": (
        "onekey-centre.service",
        "onekey-backup@.service",
        "onekey-backup@.timer",
        "onekey-crl.service",
        "onekey-crl.timer",
        "onekey-broker-reload.service",
    ),
}
ENABLE: dict[str, tuple[str, ...]] = {
    "gateway": ("onekey-gateway.service", "onekey-backup@gateway.timer", "onekey-broker-reload.path"),
    "centre": ("onekey-centre.service", "onekey-backup@centre.timer", "onekey-crl.timer"),
}


class InstallError(Exception):
    """A step of the installation failed; the message says which and what to do."""


@dataclass(frozen=True)
class Options:
    role: str
    root: Path = Path("/")
    onekey_bin: str = ONEKEY_BIN_IN_UNITS
    broker_host: str = "0.0.0.0"
    broker_port: int | None = None  # default: 1883 (village), 8883 (centre)
    server_hosts: Sequence[str] = ()  # names and addresses gateways dial the centre broker by
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    start: bool = True  # enable --now and reload Mosquitto (only when root is /)


@dataclass
class Result:
    role: str
    root: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def _run(cmd: Sequence[str], what: str) -> str:
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{what}: cannot run {cmd[0]}: {exc}") from None
    if res.returncode != 0:
        raise InstallError(f"{what}: {' '.join(cmd)} failed: {(res.stderr or res.stdout).strip()}")
    return res.stdout


def _ids(root: Path, user: str, group: str) -> tuple[int, int, int]:
    """uid and gid of `user` and gid of `group`, from the root's own /etc files."""
    if root == Path("/"):
        try:
            pw = pwd.getpwnam(user)
            return pw.pw_uid, pw.pw_gid, grp.getgrnam(group).gr_gid
        except KeyError as exc:
            raise InstallError(
                f"no {exc.args[0]}; is Mosquitto installed (apt-get install mosquitto)?"
            ) from None

    def field_of(path: Path, name: str, index: int) -> int:
        try:
            for line in path.read_text().splitlines():
                parts = line.split(":")
                if parts[0] == name:
                    return int(parts[index])
        except OSError:
            pass
        raise InstallError(
            f"no {name!r} in {path}; is Mosquitto installed in {root} (it creates the "
            f"{BROKER_GROUP} user and group)?"
        )

    return (
        field_of(root / "etc/passwd", user, 2),
        field_of(root / "etc/passwd", user, 3),
        field_of(root / "etc/group", group, 2),
    )


class _Installer:
    def __init__(self, opts: Options, say: Callable[[str], None]) -> None:
        if opts.role not in UNITS:
            raise InstallError(f"unknown role {opts.role!r}; one of: gateway, centre")
        self.o = opts
        self.root = opts.root.resolve()
        self.say = say
        self.result = Result(opts.role, self.root)
        self.uid = self.gid = self.broker_gid = -1

    def at(self, path: Path) -> Path:
        """A target path under the root."""
        return self.root / path.relative_to("/")

    def own(self, path: Path, mode: int, group: int | None = None) -> None:
        os.chown(path, self.uid, self.gid if group is None else group)
        os.chmod(path, mode)

    def directory(self, path: Path, mode: int, group: int | None = None) -> Path:
        p = self.at(path)
        p.mkdir(parents=True, exist_ok=True)
        self.own(p, mode, group)
        return p

    def write(self, path: Path, text: str, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> None:
        p = self.at(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode()
        if p.exists() and p.read_bytes() == data:
            self.result.kept.append(path)
        else:
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, p)
            self.result.written.append(path)
        os.chown(p, *owner)
        os.chmod(p, mode)

    # -- steps -------------------------------------------------------------------------------
    def user(self) -> None:
        self.say(f"install: system user {USER} (systemd-sysusers)")
        conf = resources.files("deploy").joinpath("sysusers.d", "onekey.conf").read_text()
        self.write(SYSUSERS, conf)
        _run(["systemd-sysusers", f"--root={self.root}", str(self.at(SYSUSERS))], "system user")
        self.uid, self.gid, self.broker_gid = _ids(self.root, USER, BROKER_GROUP)

    def state(self) -> None:
        self.say(f"install: state directories under {STATE}")
        self.directory(STATE, 0o711)
        self.directory(STATE / self.o.role, 0o700)

    def village_broker(self) -> None:
        d = STATE / "village-broker"
        self.say(f"install: village broker logins and ACL in {d}")
        self.directory(d, 0o2750, self.broker_gid)
        broker = brokers.VillageBroker(d, self.o.broker_port or 1883, self.o.broker_host)
        self.write(d / "acl", brokers.village_acl(broker.service_users), 0o640, (self.uid, self.broker_gid))
        passwd = self.at(broker.password_path)
        if not passwd.exists():
            private_file(passwd)
        # The gateway's own login: its password file is the one `onekey enrol` uses and keeps.
        pw_file = self.at(STATE / "gateway" / "village-broker.pass")
        if not pw_file.exists():
            write_secret(pw_file, secrets.token_urlsafe(24).encode() + b"\n")
            self.result.written.append(STATE / "gateway" / "village-broker.pass")
        os.chown(pw_file, self.uid, self.gid)
        password = pw_file.read_text().strip()
        if not _has_user(passwd, "gateway"):
            _run([brokers.MOSQUITTO_PASSWD, "-b", str(passwd), "gateway", password], "broker login")
            self.result.written.append(broker.password_path)
        self.own(passwd, 0o640, self.broker_gid)
        self.write(DROPIN_DIR / "onekey-gateway.conf", broker.render_dropin())
        self.result.next_steps.append(
            f"enrol the gateway: onekey enrol --gateway-id GW --village VILLAGE --centre-dir ... "
            f"--state-dir {STATE / 'gateway'} --village-port {broker.port} "
            f"--broker-passwd {broker.password_path}   (as user {USER})"
        )

    def centre_pki(self) -> None:
        d = STATE / "pki"
        self.say(f"install: the CA, the centre broker's and the centre's certificates in {d}")
        self.directory(d, 0o2750, self.broker_gid)
        at = self.at(d)
        ca = pki.create_ca(at)
        pki.issue_server(ca, at, "centre-broker", list(self.o.server_hosts))
        client = pki.issue_client(ca, at, "centre")
        if not pki.crl_path(ca).exists():
            pki.write_crl(ca)
        for p in at.iterdir():
            # Mosquitto (its group) reads the CA, the CRL and its own certificate and key; the
            # CA's key and every other key stay the onekey user's alone.
            for_broker = p.name in ("ca.crt", "ca.crl", "centre-broker.crt", "centre-broker.key")
            os.chown(p, self.uid, self.broker_gid if for_broker else self.gid)
            if ".key" in p.suffixes or p.name == "revoked.json":
                os.chmod(p, 0o640 if for_broker else 0o600)
            else:
                os.chmod(p, 0o644)
        self.server = pki.CertFiles(
            ca=d / "ca.crt", cert=d / "centre-broker.crt", key=d / "centre-broker.key"
        )
        self.client = client

    def centre_broker(self) -> None:
        d = STATE / "centre-broker"
        self.say(f"install: centre broker ACL in {d}")
        self.directory(d, 0o2750, self.broker_gid)
        broker = brokers.CentreBroker(
            d, self.o.broker_port or 8883, self.server, self.o.broker_host, crl=STATE / "pki" / "ca.crl"
        )
        self.write(d / "acl", brokers.centre_acl(broker.centre_users), 0o640, (self.uid, self.broker_gid))
        self.write(DROPIN_DIR / "onekey-centre.conf", broker.render_dropin())

    def centre_config(self) -> None:
        from centre.enrol import init_centre

        d = STATE / "centre"
        if (self.at(d) / "centre.toml").exists():
            self.say(f"install: centre configuration {d / 'centre.toml'} kept")
            self.result.kept.append(d / "centre.toml")
        else:
            self.say(f"install: centre key and configuration in {d}")
            init_centre(
                self.at(d),
                http_host=self.o.http_host,
                http_port=self.o.http_port,
                broker_host="127.0.0.1",
                broker_port=self.o.broker_port or 8883,
                ca="../pki/ca.crt",
                cert="../pki/centre.crt",
                tls_key="../pki/centre.key",
            )
            self.result.written.append(d / "centre.toml")
        for p in self.at(d).iterdir():
            os.chown(p, self.uid, self.gid)
        self.result.next_steps.append(
            f"create the first staff account: onekey centre user add --config {d / 'centre.toml'} "
            "--role admin NAME   (as user onekey)"
        )

    def units(self) -> None:
        self.say(f"install: systemd units in {UNIT_DIR}")
        for name in UNITS[self.o.role]:
            text = resources.files("deploy").joinpath("systemd", name).read_text()
            self.write(UNIT_DIR / name, text.replace(ONEKEY_BIN_IN_UNITS, self.o.onekey_bin))
        enable = list(ENABLE[self.o.role])
        if self.root != Path("/"):
            _run(["systemctl", f"--root={self.root}", "enable", *enable], "enable units")
            return
        _run(["systemctl", "daemon-reload"], "systemd")
        _run(["systemctl", "enable", *(["--now"] if self.o.start else []), *enable], "enable units")
        if self.o.start:
            _run(["systemctl", "restart", "mosquitto.service"], "Mosquitto")

    def run(self) -> Result:
        self.user()
        self.state()
        if self.o.role == "gateway":
            self.village_broker()
        else:
            self.centre_pki()
            self.centre_broker()
            self.centre_config()
        self.units()
        return self.result


def _has_user(passwd: Path, name: str) -> bool:
    try:
        return any(line.split(":", 1)[0] == name for line in passwd.read_text().splitlines())
    except OSError:
        return False


def install(opts: Options, say: Callable[[str], None] = print) -> Result:
    if os.geteuid() != 0:
        raise InstallError("installing needs root (users, file owners, units): run it with sudo")
    return _Installer(opts, say).run()


# -- command line --------------------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "install", help="set this machine up to run the gateway or the centre (root)"
    )
    p.add_argument("role", choices=sorted(UNITS), help="what this machine runs")
    p.add_argument("--root", type=Path, default=Path("/"),
                   help="install into this directory tree instead of / (nothing is started)")
    p.add_argument("--onekey-bin", default=None,
                   help="the onekey command the units run (default: this one)")
    p.add_argument("--broker-host", default="0.0.0.0",
                   help="the address Mosquitto listens on (use the LAN's on a Pi that also has 4G)")
    p.add_argument("--broker-port", type=int, default=None, help="default 1883 (gateway), 8883 (centre)")
    p.add_argument("--server-host", action="append", default=[], metavar="NAME",
                   help="centre: a name or address gateways dial the centre broker by (repeat)")
    p.add_argument("--http-host", default="127.0.0.1", help="centre: the console's address")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--no-start", action="store_true", help="enable the units but do not start them")
    p.set_defaults(func=_install)


def _install(args: argparse.Namespace) -> int:
    onekey_bin = args.onekey_bin or shutil.which("onekey") or str(Path(sys.argv[0]).resolve())
    opts = Options(
        role=args.role, root=args.root, onekey_bin=str(Path(onekey_bin).absolute()),
        broker_host=args.broker_host, broker_port=args.broker_port,
        server_hosts=tuple(args.server_host), http_host=args.http_host, http_port=args.http_port,
        start=not args.no_start,
    )
    try:
        result = install(opts)
    except (brokers.BrokerError, OSError) as exc:
        raise InstallError(str(exc)) from None
    print(f"install: {args.role} done: {len(result.written)} files written, {len(result.kept)} kept")
    for step in result.next_steps:
        print(f"next: {step}")
    return 0
