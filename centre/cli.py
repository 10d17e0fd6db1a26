"""`onekey centre ...` commands."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from centre.accounts import (
    AccountError,
    Accounts,
    InvalidAccount,
    check_password,
    check_username,
)
from centre.api import create_app
from centre.auth import Role
from centre.config import CentreConfig, ConfigError, load_config
from centre.enrol import CONFIG_NAME, EnrolError, centre_public_key, enrol_gateway, init_centre
from centre.household_csv import MAX_BYTES, CsvRefused, export_from, import_into
from centre.live import LiveHub
from centre.store import Store, StoreError, now_ms
from transport import backup, pki
from transport.keys import load_private_key


class HouseholdFileError(Exception):
    """A households CSV file cannot be read or written (missing, unreadable, too large)."""


# Errors the top-level command line prints as one line (no traceback).
ERRORS: tuple[type[Exception], ...] = (
    ConfigError, EnrolError, StoreError, backup.BackupError, AccountError, HouseholdFileError
)
T = TypeVar("T")

log = logging.getLogger("onekey.centre")


def add_commands(sub: Any) -> None:
    c = sub.add_parser("centre", help="the township centre service, its keys and gateways")
    csub = c.add_subparsers(dest="centre_cmd", required=True, metavar="COMMAND")

    run = csub.add_parser("run", help="run the centre (HTTP API, web page, ingest) until stopped")
    run.add_argument("--config", type=Path, required=True, help="centre TOML config file")
    run.set_defaults(func=_run)

    init = csub.add_parser("init", help="create the centre's signing key and a config file")
    init.add_argument("--dir", type=Path, required=True, help="directory for key, config, db")
    init.add_argument("--http-host", default="127.0.0.1")
    init.add_argument("--http-port", type=int, default=8080)
    init.add_argument("--broker-host", default="127.0.0.1")
    init.add_argument("--broker-port", type=int, default=8883)
    init.add_argument("--ca", default=None,
                      help="the CA certificate the centre broker trusts (relative to --dir); "
                      "without --ca, --cert and --key, init creates a CA in DIR/pki with the "
                      "centre's client certificate and the centre broker's server certificate")
    init.add_argument("--cert", default=None, help="centre client certificate (CN centre)")
    init.add_argument("--key", default=None, help="centre client certificate key")
    init.add_argument("--server-host", action="append", default=[], metavar="NAME",
                      help="with the created CA: a name or address gateways dial the centre "
                      "broker by (repeat; --broker-host is always included)")
    init.add_argument("--admin", default="admin", metavar="NAME",
                      help="username of the first admin account (default admin)")
    init.add_argument("--admin-password-file", type=Path, default=None, metavar="FILE",
                      help="its password (first line); without it one is generated and "
                      "printed once")
    init.set_defaults(func=_init)

    user = csub.add_parser("user", help="staff accounts and their API tokens")
    usub = user.add_subparsers(dest="user_cmd", required=True, metavar="COMMAND")
    u_add = usub.add_parser("add", help="add a staff account")
    u_add.add_argument("username")
    u_add.add_argument("--role", required=True, choices=[r.label for r in Role])
    u_add.add_argument("--display-name", default=None, help="name shown to staff (default: "
                       "the username)")
    u_add.add_argument("--password-file", type=Path, default=None, metavar="FILE",
                       help="the password (first line); without it one is generated and "
                       "printed once")
    u_add.set_defaults(func=_user_add)
    u_list = usub.add_parser("list", help="list staff accounts")
    u_list.set_defaults(func=_user_list)
    for name, helptext, fn in (
        ("disable", "disable an account: its sessions and tokens stop working at once",
         _user_disable),
        ("enable", "enable an account again (and lift a lockout)", _user_enable),
    ):
        sp = usub.add_parser(name, help=helptext)
        sp.add_argument("username")
        sp.set_defaults(func=fn)
    u_pw = usub.add_parser("passwd", help="set a new password (logs the account out everywhere)")
    u_pw.add_argument("username")
    u_pw.add_argument("--password-file", type=Path, default=None, metavar="FILE",
                      help="the password (first line); without it one is generated and "
                      "printed once")
    u_pw.set_defaults(func=_user_passwd)
    tok = usub.add_parser("token", help="API tokens for scripts: create, list, revoke")
    tsub = tok.add_subparsers(dest="token_cmd", required=True, metavar="COMMAND")
    t_new = tsub.add_parser("create", help="create a token; its secret is printed once")
    t_new.add_argument("username")
    t_new.add_argument("--name", required=True, help="what it is for, e.g. cap-feed")
    t_new.add_argument("--role", default=None, choices=[r.label for r in Role],
                       help="default: the account's role (never higher)")
    t_new.add_argument("--expires-days", type=float, default=None,
                       help="expire after this many days (default: never)")
    t_new.set_defaults(func=_token_create)
    t_list = tsub.add_parser("list", help="an account's tokens (never their secrets)")
    t_list.add_argument("username")
    t_list.set_defaults(func=_token_list)
    t_rev = tsub.add_parser("revoke", help="revoke a token at once")
    t_rev.add_argument("username")
    t_rev.add_argument("token_id", type=int)
    t_rev.set_defaults(func=_token_revoke)
    for sp in (u_add, u_list, u_pw, t_new, t_list, t_rev, *(
        usub.choices[n] for n in ("disable", "enable")
    )):
        sp.add_argument("--config", type=Path, required=True, help="centre TOML config file")

    enrol = csub.add_parser("enrol-gateway", help="enrol a gateway or replace its public key")
    enrol.add_argument("--config", type=Path, required=True)
    enrol.add_argument("--id", required=True, help="gateway id, e.g. gw-demo")
    enrol.add_argument("--public-key", required=True, help="gateway's Ed25519 public key (hex)")
    enrol.add_argument("--name", default=None, help="a readable name, e.g. the village's")
    enrol.add_argument(
        "--village",
        action="append",
        default=None,
        metavar="VILLAGE",
        help="a village id it serves (repeat for each; broadcasts to it go through this "
        "gateway); without --village, the villages enrolled before are kept",
    )
    enrol.set_defaults(func=_enrol)

    backup.add_commands(
        csub, "centre", CENTRE_DB, _centre_db, "a backups directory beside the database"
    )

    hh = csub.add_parser(
        "households",
        help="household cards: import or export a CSV file (format: docs/centre.md)",
    )
    hsub = hh.add_subparsers(dest="households_cmd", required=True, metavar="COMMAND")
    imp = hsub.add_parser(
        "import",
        help="create or replace the cards of a CSV file: every row, or nothing if one is bad",
        description=(
            "Checks the whole file first: every bad row is listed with its line, column and "
            "rule, and then nothing is imported (exit status 1). Households not in the file "
            "are kept. The centre may be running."
        ),
    )
    imp.add_argument("--config", type=Path, required=True)
    imp.add_argument("file", type=Path, help="UTF-8 CSV, with or without a byte order mark")
    imp.set_defaults(func=_households_import)
    exp = hsub.add_parser(
        "export", help="write every card to a CSV file (UTF-8 with a byte order mark, as Excel wants)"
    )
    exp.add_argument("--config", type=Path, required=True)
    exp.add_argument("--village", default=None, help="only this village's cards")
    exp.add_argument("file", type=Path, help="written (replaced) with mode 0600: personal data")
    exp.set_defaults(func=_households_export)

    show = csub.add_parser("show-key", help="print the centre's public key (gateways pin it)")
    show.add_argument("--config", type=Path, required=True)
    show.set_defaults(func=_show_key)


class _CentreServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, live: LiveHub) -> None:
        super().__init__(config)
        self.live = live

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn waits for responses in progress before it stops; a console's event stream
        # never ends by itself, so it is ended first (the pages show their banner and retry).
        self.live.close()
        await super().shutdown(sockets)


def uvicorn_server(config: CentreConfig, **kwargs: Any) -> uvicorn.Server:
    """A uvicorn server for the centre app; `await server.serve()` runs it in this loop."""
    app = create_app(config, **kwargs)
    return _CentreServer(
        uvicorn.Config(
            app,
            host=config.http_host,
            port=config.http_port,
            lifespan="on",
            log_config=None,  # keep the caller's logging set-up
            access_log=False,
            # Requests still running this long after a stop are cut rather than holding it.
            timeout_graceful_shutdown=5,
        ),
        app.state.live,
    )


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    load_private_key(cfg.key_path)  # fail here, with a clear message, not inside the server
    server = uvicorn_server(cfg)
    server.run()
    return 0 if server.started else 1


def _init(args: argparse.Namespace) -> int:
    # Checked before anything is written: a refused admin leaves no half-made centre.
    password, generated = _password(args.admin_password_file)
    check_username(args.admin)
    check_password(password)
    tls = _init_tls(args)
    path, pub = init_centre(
        args.dir,
        http_host=args.http_host,
        http_port=args.http_port,
        broker_host=args.broker_host,
        broker_port=args.broker_port,
        ca=tls[0],
        cert=tls[1],
        tls_key=tls[2],
    )
    cfg = load_config(path)
    staff = _accounts(cfg, lambda a: a.add(_actor(), args.admin, args.admin, Role.ADMIN, password))
    print(f"config: {path}")
    _print_password(f"admin account {staff.username}", password, generated)
    print(f"centre public key: {pub}")
    return 0


def _init_tls(args: argparse.Namespace) -> tuple[str, str, str]:
    """The TLS files the configuration names, which exist: given (all three), or a CA created in
    DIR/pki with the centre's client certificate and the centre broker's server certificate."""
    given = (args.ca, args.cert, args.key)
    if any(v is not None for v in given):
        if not all(v is not None for v in given):
            raise EnrolError("give all of --ca, --cert and --key, or none (init then creates a CA)")
        for v in given:
            p = Path(v) if Path(v).is_absolute() else args.dir / v
            if not p.is_file():
                raise EnrolError(
                    f"{p} does not exist; issue it first (onekey pki issue), or leave out --ca, "
                    "--cert and --key and init creates a CA in DIR/pki"
                )
        return args.ca, args.cert, args.key
    config = args.dir / CONFIG_NAME
    if config.exists():  # init_centre refuses it with its own message
        return "pki/ca.crt", "pki/centre.crt", "pki/centre.key"
    pki_dir = args.dir / "pki"
    ca = pki.create_ca(pki_dir)
    pki.issue_client(ca, pki_dir, "centre")
    server = pki.issue_server(ca, pki_dir, "centre-broker", [args.broker_host, *args.server_host])
    if not pki.crl_path(ca).exists():
        pki.write_crl(ca)
    print(f"CA: {ca.cert} (its key {ca.key} never leaves this machine; onekey pki ... manages it)")
    print(f"centre broker certificate: {server.cert} and {server.key} (for its TLS listener)")
    return "pki/ca.crt", "pki/centre.crt", "pki/centre.key"


def _actor() -> str:
    """Who made a change from the command line, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "cli"


def _accounts(cfg: CentreConfig, fn: Callable[[Accounts], Awaitable[T]]) -> T:
    async def run() -> T:
        async with Store(cfg.db_path) as store:
            return await fn(Accounts(store, cfg.auth))

    return asyncio.run(run())


def _password(path: Path | None) -> tuple[str, bool]:
    """The password in `path` (its first line), or a generated one (never a prompt: this runs
    from scripts and services too)."""
    if path is None:
        return secrets.token_urlsafe(15), True
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidAccount(f"cannot read password file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidAccount(f"password file {path} is not UTF-8 text") from None
    if not lines or not lines[0]:
        raise InvalidAccount(f"password file {path} is empty; put the password on its first line")
    return lines[0], False


def _print_password(who: str, password: str, generated: bool) -> None:
    if generated:
        print(f"{who} password: {password}")
        print("  (shown once, not stored; change it with `onekey centre user passwd`)")
    else:
        print(f"{who}: password set from file")


def _user_add(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    password, generated = _password(args.password_file)
    staff = _accounts(cfg, lambda a: a.add(
        _actor(), args.username, args.display_name or args.username, Role.parse(args.role),
        password))
    print(f"added {staff.username} id={staff.id} role={staff.role.label}")
    _print_password(f"account {staff.username}", password, generated)
    return 0


def _user_list(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    now = now_ms()
    for st in _accounts(cfg, lambda a: a.list_staff()):
        state = "disabled" if st.disabled else "locked" if st.locked_until > now else "enabled"
        print(f"id={st.id} username={st.username} role={st.role.label} state={state} "
              f"display_name={st.display_name!r}")
    return 0


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    cfg = load_config(args.config)

    async def run(a: Accounts) -> Any:
        st = await a.by_username(args.username)
        return await a.set_disabled(_actor(), st.id, disabled)

    st = _accounts(cfg, run)
    print(f"{'disabled' if st.disabled else 'enabled'} {st.username}")
    return 0


def _user_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def _user_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def _user_passwd(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    password, generated = _password(args.password_file)

    async def run(a: Accounts) -> Any:
        st = await a.by_username(args.username)
        return await a.set_password(_actor(), st.id, password)

    st = _accounts(cfg, run)
    _print_password(f"account {st.username}", password, generated)
    return 0


def _token_create(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.expires_days is not None and args.expires_days <= 0:
        raise InvalidAccount("--expires-days must be positive")
    expires = None if args.expires_days is None else now_ms() + int(args.expires_days * 86_400_000)

    async def run(a: Accounts) -> Any:
        st = await a.by_username(args.username)
        role = Role.parse(args.role) if args.role else None
        return await a.create_token(_actor(), st.id, args.name, role, expires)

    new = _accounts(cfg, run)
    print(f"token id={new.info.id} name={new.info.name} role={new.info.role.label} "
          f"expires_at={new.info.expires_at}")
    print(new.secret)
    print("  (shown once, not stored; send it as `Authorization: Bearer <token>`)",
          file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)

    async def run(a: Accounts) -> Any:
        return await a.tokens((await a.by_username(args.username)).id)

    for t in _accounts(cfg, run):
        state = "revoked" if t.revoked_at else "active"
        print(f"id={t.id} name={t.name} role={t.role.label} state={state} "
              f"expires_at={t.expires_at} last_used={t.last_used}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)

    async def run(a: Accounts) -> Any:
        st = await a.by_username(args.username)
        return await a.revoke_token(_actor(), st.id, args.token_id)

    t = _accounts(cfg, run)
    print(f"revoked token id={t.id} name={t.name}")
    return 0


def _enrol(args: argparse.Namespace) -> int:
    gw = enrol_gateway(args.config, args.id, args.public_key, args.name, args.village)
    villages = ", ".join(gw.villages) or "none yet (its heartbeat may list them)"
    print(f"enrolled gateway {gw.id} key {gw.public_key} villages {villages}")
    return 0


# What `onekey centre restore` accepts: a database with the centre's tables.
CENTRE_DB = backup.DbKind(
    "centre",
    frozenset({"gateways", "alarms", "downlinks", "broadcasts"}),
    "Ctrl-C or SIGTERM to `onekey centre run`, or stop the service that runs it",
)


def _centre_db(config: Path) -> tuple[Path, Path]:
    cfg = load_config(config)
    return cfg.db_path, cfg.db_path.parent / "backups"


def _show_key(args: argparse.Namespace) -> int:
    print(centre_public_key(args.config))
    return 0


def _cli_actor() -> str:
    """Who acts, for the audit log, when no session does: the operating system's user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no user name in the environment or the password database
        return f"cli:uid{os.getuid()}"


def _households_import(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    path: Path = args.file
    try:
        if path.stat().st_size > MAX_BYTES:
            raise HouseholdFileError(
                f"{path} has {path.stat().st_size} bytes, more than the {MAX_BYTES} accepted: "
                "split it into several files"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise HouseholdFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        result = asyncio.run(import_into(cfg.db_path, data, _cli_actor(), source=path.name))
    except CsvRefused as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        print(f"onekey: error: {path}: {exc}", file=sys.stderr)
        return 1
    print(f"imported {result.count} households from {path}: {result.created} new, "
          f"{result.updated} replaced")
    return 0


def _households_export(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    path: Path = args.file
    data, count = asyncio.run(export_from(cfg.db_path, _cli_actor(), args.village))
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise HouseholdFileError(f"cannot write {path}: {exc.strerror}") from None
    print(f"exported {count} households to {path}")
    return 0
