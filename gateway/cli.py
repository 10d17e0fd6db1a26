"""`onekey gateway ...` commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from gateway import registry
from gateway.config import load_config
from gateway.errors import GatewayError
from gateway.metrics import read_metrics
from gateway.service import Gateway
from transport import backup


def add_commands(sub: Any) -> None:
    gw = sub.add_parser("gateway", help="the village gateway service and its device registry")
    gsub = gw.add_subparsers(dest="gateway_cmd", required=True, metavar="COMMAND")

    run = gsub.add_parser("run", help="run the gateway until stopped (Ctrl-C or SIGTERM)")
    run.add_argument("--config", type=Path, required=True, help="gateway TOML config file")
    run.set_defaults(func=_run)

    stats = gsub.add_parser("stats", help="print the gateway's counters (rejections by reason, ...)")
    stats.add_argument("--config", type=Path, required=True)
    stats.set_defaults(func=_stats)

    backup.add_commands(gsub, "gateway", GATEWAY_DB, _gateway_db, "STATE_DIR/backups")

    dev = gsub.add_parser("device", help="add, list or revoke devices in the registry")
    dsub = dev.add_subparsers(dest="device_cmd", required=True, metavar="COMMAND")
    add = dsub.add_parser("add", help="register a device and print its new key")
    add.add_argument("--config", type=Path, required=True)
    add.add_argument("--id", required=True, help="device id, e.g. btn-0001")
    add.add_argument("--role", choices=registry.ROLES, default="button")
    add.add_argument("--household", required=True, help="household id the device belongs to")
    add.add_argument(
        "--group", action="append", default=[], metavar="GROUP",
        help="a speaker group for broadcasts (repeat for several)",
    )
    add.add_argument("--power", choices=registry.POWERS, default="mains",
                     help="the power profile supervision judges it by (docs/gateway.md)")
    add.add_argument("--period", type=int, default=0, metavar="S",
                     help="its heartbeat (mains) or check-in (battery) period; default: the "
                     "[supervision] period of the profile")
    add.set_defaults(func=_device_add)
    ls = dsub.add_parser("list", help="list registered devices")
    ls.add_argument("--config", type=Path, required=True)
    ls.set_defaults(func=_device_list)
    rv = dsub.add_parser(
        "revoke",
        help="disable a device: its messages are refused from now on, and its broker login is "
        "removed when [admin] broker_passwd is set",
    )
    rv.add_argument("--config", type=Path, required=True)
    rv.add_argument("--id", required=True)
    rv.set_defaults(func=_device_revoke)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    try:
        asyncio.run(_serve(Gateway(cfg)))
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(gateway: Gateway) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly (metrics flushed, SQLite closed)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await gateway.run()
    except asyncio.CancelledError:
        logging.getLogger("onekey.gateway").info("event=gateway_stop")


def _stats(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    try:
        data = read_metrics(cfg.metrics_path)
    except FileNotFoundError:
        print(f"no metrics yet at {cfg.metrics_path}: is the gateway running?", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


# What `onekey gateway restore` accepts: a database with the gateway's tables.
GATEWAY_DB = backup.DbKind(
    "gateway",
    frozenset({"meta", "devices", "events"}),
    "Ctrl-C or SIGTERM to `onekey gateway run`, or stop the service that runs it",
)


def _gateway_db(config: Path) -> tuple[Path, Path]:
    cfg = load_config(config)
    return cfg.db_path, cfg.state_dir / "backups"


def _device_add(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    conn = registry.open_admin(cfg.db_path)
    try:
        sup = cfg.supervision
        period = args.period or (
            sup.battery_period_s if args.power == "battery" else sup.mains_period_s
        )
        dev = registry.add_device(
            conn, args.id, role=args.role, village=cfg.village, household=args.household,
            groups=args.group, power=args.power, period_s=period,
        )
    finally:
        conn.close()
    print(json.dumps({"id": dev.id, "role": dev.role, "village": dev.village,
                      "household": dev.household, "groups": list(dev.groups),
                      "power": dev.power, "period_s": dev.period_s, "key": dev.key.hex()}))
    return 0


def _device_list(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    conn = registry.open_admin(cfg.db_path)
    try:
        rows = registry.list_devices(conn)
    finally:
        conn.close()
    for dev_id, role, village, household, enabled, last_seen in rows:
        state = "enabled" if enabled else "REVOKED"
        print(f"{dev_id:<20} {role:<8} {village:<12} {household:<12} {state:<8} {last_seen or '-'}")
    return 0


def _device_revoke(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    conn = registry.open_admin(cfg.db_path)
    try:
        registry.revoke_device(conn, args.id)
    finally:
        conn.close()
    print(f"revoked {args.id}: the gateway refuses its messages")
    admin = cfg.admin
    if admin is not None and admin.broker_passwd is not None:
        from gateway.brokerctl import BrokerControl

        removed = asyncio.run(
            BrokerControl(admin.broker_passwd, admin.broker_reload).remove_user(args.id)
        )
        where = admin.broker_passwd
        print(f"broker login {args.id} {'removed from' if removed else 'was not in'} {where}")
    else:
        print("no [admin] broker_passwd in the configuration: remove its broker login by hand")
    return 0


ERRORS: tuple[type[Exception], ...] = (GatewayError, backup.BackupError)
