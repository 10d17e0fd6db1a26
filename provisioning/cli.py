"""`onekey provision ...` and `onekey enrol`: the technician's commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioning.errors import ProvisionError, SelfTestError

if TYPE_CHECKING:
    from provisioning.flow import Options, Summary
    from provisioning.gwadmin import GatewayAdmin

# The heavier modules (pyserial, the centre's, the firmware build) are imported by the
# commands that need them, so that every other `onekey` command starts as fast as before.

# Errors the top-level command line prints as one line (no traceback).
ERRORS: tuple[type[Exception], ...] = (ProvisionError,)
ROLES = ("button", "speaker")
BAUD = 115200
DEFAULT_URL = "http://127.0.0.1:8081"


def add_commands(sub: Any) -> None:
    _provision_commands(sub)
    _enrol_command(sub)


def _enrol_command(sub: Any) -> None:
    p = sub.add_parser("enrol", help="enrol this gateway at its centre: keys, TLS, pinned centre key")
    p.add_argument("--gateway-id", required=True)
    p.add_argument("--village", required=True, help="the village this gateway serves")
    p.add_argument("--centre-dir", type=Path, required=True,
                   help="the centre's directory (its centre.toml; its CA in pki/)")
    p.add_argument("--state-dir", type=Path, required=True, help="the gateway's state directory")
    p.add_argument("--pki-dir", type=Path, default=None, help="the centre's CA (default CENTRE_DIR/pki)")
    p.add_argument("--config", type=Path, default=None, help="gateway.toml (default STATE_DIR/gateway.toml)")
    p.add_argument("--centre-host", default=None, help="the centre broker as gateways dial it")
    p.add_argument("--centre-port", type=int, default=None)
    p.add_argument("--village-host", default="127.0.0.1", help="the village broker (from the gateway)")
    p.add_argument("--village-port", type=int, default=1883)
    p.add_argument("--name", default=None, help="a readable name at the centre (default: the village)")
    p.add_argument("--broker-passwd", type=Path, default=None,
                   help="the village broker's password file, where device logins go "
                        "(`onekey install gateway` prints it)")
    p.add_argument("--broker-reload", default="none",
                   help="how the broker re-reads it: none (a systemd path unit does, as installed), "
                        "pid-file:PATH or command:CMD")
    p.set_defaults(func=_enrol)




def _admin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gateway-admin", metavar="URL", default=None,
                   help=f"the gateway's admin API (default $ONEKEY_GATEWAY_ADMIN or {DEFAULT_URL})")
    p.add_argument("--admin-token-file", type=Path, default=None, metavar="FILE",
                   help="the gateway's admin token (default $ONEKEY_ADMIN_TOKEN_FILE or "
                        "/var/lib/onekey/gateway/admin.token)")
    p.add_argument("--gateway-config", type=Path, default=None, metavar="FILE",
                   help="take the admin address and token from this gateway.toml instead")


def _device_id(text: str) -> str:
    """argparse type: a device id a device may have (§1.1); else a usage error saying why."""
    from provisioning.devconfig import check_device_id
    from provisioning.errors import DeviceIdError

    try:
        return check_device_id(text)
    except DeviceIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _board_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="the board's serial port (`onekey provision list`)")
    p.add_argument("--village", default=None, help="village id (checked against the gateway's)")
    p.add_argument("--group", action="append", default=[], metavar="GROUP",
                   help="a speaker group for broadcasts (repeat for several)")
    p.add_argument("--device-id", default=None, type=_device_id,
                   help="device id (default: btn-/spk- and the end of the board's unique id)")
    p.add_argument("--wifi-ssid", default=None, help="the village Wi-Fi (real boards)")
    p.add_argument("--wifi-psk", default=None)
    p.add_argument("--broker-host", default=None, help="village broker as the board dials it "
                   "(default: what the gateway says)")
    p.add_argument("--broker-port", type=int, default=None)
    p.add_argument("--power", choices=("mains", "battery"), default=None,
                   help="power profile: mains (always connected, heartbeat every 20 s) or battery "
                   "(a button that sleeps and checks in every hour); default: mains, or the old "
                   "device's for replace")
    p.add_argument("--period", type=int, default=0, metavar="S",
                   help="its heartbeat (mains) or check-in (battery) period in seconds; default: "
                   "the gateway's for the profile")
    p.add_argument("--force", action="store_true",
                   help="take over a board bound to another household, or an id of another board")
    p.add_argument("--baud", type=int, default=BAUD)
    p.add_argument("--self-test-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--press-timeout", type=float, default=120.0, metavar="S",
                   help="real button: how long to wait for the TEST press")
    p.add_argument("--no-compile", action="store_true", help="send sources, not .mpy")
    p.add_argument("--upload-modules", action="store_true",
                   help="upload the modules even onto a board whose image has frozen firmware "
                        "of another version (they shadow it; needs a board with PSRAM heap)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _admin_args(p)


def _provision_commands(sub: Any) -> None:
    pr = sub.add_parser("provision", help="provision boards over USB serial (technician)")
    psub = pr.add_subparsers(dest="provision_cmd", required=True, metavar="COMMAND")

    ls = psub.add_parser("list", help="serial ports that look like boards, and virtual boards")
    ls.add_argument("--all", action="store_true", help="every serial port")
    ls.set_defaults(func=_list)

    dev = psub.add_parser("device", help="turn the board on --port into a proven device")
    dev.add_argument("--role", choices=ROLES, required=True)
    dev.add_argument("--household", required=True, help="household id (personal data stays at the centre)")
    _board_args(dev)
    dev.set_defaults(func=_device)

    rep = psub.add_parser("replace", help="move a household to a new board, revoke the old one")
    rep.add_argument("--old", required=True, metavar="DEVICE_ID", type=_device_id,
                     help="the device being replaced")
    rep.add_argument("--role", choices=ROLES, default=None, help="default: the old device's")
    rep.add_argument("--household", default=None, help="default: the old device's")
    _board_args(rep)
    rep.set_defaults(func=_replace)

    rv = psub.add_parser("revoke", help="remove a device's key and broker login at the gateway")
    rv.add_argument("device_id", metavar="DEVICE_ID", type=_device_id)
    _admin_args(rv)
    rv.set_defaults(func=_revoke)

    fz = psub.add_parser("freeze-tree",
                         help="write the firmware to freeze into a board's MicroPython image")
    fz.add_argument("dir", metavar="DIR", type=Path,
                    help="where (a FROZEN_MANIFEST then says freeze(DIR); docs/firmware.md)")
    fz.set_defaults(func=_freeze_tree)

    st = psub.add_parser("status", help="devices at the gateway (or one, with its last test)")
    st.add_argument("device_id", metavar="DEVICE_ID", nargs="?")
    _admin_args(st)
    st.set_defaults(func=_status)


def gateway_admin(args: argparse.Namespace) -> GatewayAdmin:
    from provisioning.gwadmin import GatewayAdmin, default_token_file, load_token

    url = args.gateway_admin or os.environ.get("ONEKEY_GATEWAY_ADMIN") or DEFAULT_URL
    token_file = args.admin_token_file or default_token_file()
    if args.gateway_config is not None:
        from gateway.config import load_config

        admin = load_config(args.gateway_config).admin
        if admin is not None:
            host = "127.0.0.1" if admin.listen in ("0.0.0.0", "::") else admin.listen
            url = args.gateway_admin or f"http://{host}:{admin.port}"
            token_file = args.admin_token_file or admin.token_file
    return GatewayAdmin(url, load_token(token_file))


def _options(args: argparse.Namespace) -> Options:
    from provisioning.flow import Options

    return Options(
        port=args.port, role=args.role or "", household=args.household or "",
        admin=gateway_admin(args), village=args.village, groups=tuple(args.group),
        device_id=args.device_id, wifi_ssid=args.wifi_ssid, wifi_psk=args.wifi_psk,
        broker_host=args.broker_host, broker_port=args.broker_port, force=args.force,
        baud=args.baud, self_test_timeout=args.self_test_timeout,
        press_timeout=args.press_timeout, compile=not args.no_compile,
        upload_modules=args.upload_modules,
        power=args.power, period_s=args.period,
    )


def _report(args: argparse.Namespace, summary: Summary, exc: ProvisionError | None) -> int:
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(summary.render())
    if exc is None:
        return 0
    print(f"onekey: error: {exc}", file=sys.stderr)
    return 1 if isinstance(exc, SelfTestError) else 2


def _device(args: argparse.Namespace) -> int:
    from provisioning.flow import STEPS, Summary, provision
    from provisioning.progress import Progress

    summary = Summary()
    try:
        provision(_options(args), Progress(STEPS), summary)
    except ProvisionError as exc:
        return _report(args, summary, exc)
    return _report(args, summary, None)


def _replace(args: argparse.Namespace) -> int:
    from provisioning.flow import STEPS, Summary, replace
    from provisioning.progress import Progress

    summary = Summary()
    try:
        replace(_options(args), args.old, Progress(STEPS), summary)
    except ProvisionError as exc:
        return _report(args, summary, exc)
    return _report(args, summary, None)


def _revoke(args: argparse.Namespace) -> int:
    result = gateway_admin(args).revoke(args.device_id)
    login = "removed" if result.get("broker_user_removed") else "was already absent"
    print(f"revoked {args.device_id}: the gateway refuses it; its broker login {login}")
    return 0


def _status(args: argparse.Namespace) -> int:
    admin = gateway_admin(args)
    if args.device_id:
        rec = admin.device(args.device_id)
        if rec is None:
            print(f"no device {args.device_id} at {admin.url}", file=sys.stderr)
            return 1
        print(json.dumps(rec, indent=2))
        return 0
    for d in admin.devices():
        state = "enabled" if d["enabled"] else "REVOKED"
        test = d.get("last_test") or {}
        print(f"{d['id']:<16} {d['role']:<8} {d['household']:<14} {state:<8} "
              f"hw {d['hw_id'] or '-':<14} last test {test.get('state', '-')}")
    return 0


def _freeze_tree(args: argparse.Namespace) -> int:
    from provisioning.firmware import firmware_version, freeze_tree

    names = freeze_tree(args.dir)
    print(f"firmware version {firmware_version()}: {len(names)} modules in {args.dir} "
          f"({', '.join(names)}); main.py stays a file")
    return 0


def _list(args: argparse.Namespace) -> int:
    from provisioning.ports import list_boards

    boards = list_boards(args.all)
    if not boards:
        print("no boards found: plug one in (or start `onekey vboard`); `--all` shows every "
              "serial port", file=sys.stderr)
        return 1
    for b in boards:
        print(f"{b.device:<24} {b.kind:<26} {b.detail}")
    return 0


def _enrol(args: argparse.Namespace) -> int:
    from provisioning import enrol

    return enrol.run(args)
