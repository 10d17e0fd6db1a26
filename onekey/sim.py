"""`onekey sim ...`: drive the simulated buttons and speakers of a running demo (or test) village.

A device is found at RUN_DIR/devices/DEVICE_ID/config.json, which holds its control port.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from provisioning.simcontrol import SimDeviceError, control_port, send_command

DEFAULT_RUN_DIR = "./run/demo"
_PRESS_MARGIN_S = 5.0


def default_run_dir() -> str:
    return os.environ.get("ONEKEY_RUN_DIR") or DEFAULT_RUN_DIR


def add_commands(subparsers: Any) -> None:
    """Registers `sim press`, `sim status`, `sim net` and `sim played` on the top-level
    subparsers."""
    sim = subparsers.add_parser("sim", help="press or inspect a simulated button or speaker")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("device_id", metavar="DEVICE_ID", help="e.g. btn-0001")
        p.add_argument(
            "--run-dir",
            default=default_run_dir(),
            help="the village's run directory (default: $ONEKEY_RUN_DIR or ./run/demo)",
        )

    press = sim_sub.add_parser("press", help="press the alarm button (or, with --test, the test switch)")
    common(press)
    press.add_argument(
        "--ms",
        type=int,
        default=150,
        help="how long to hold it, in ms (default 150; 2500 soon after an alarm cancels it)",
    )
    press.add_argument("--test", action="store_true", help="press the test switch instead")
    press.set_defaults(func=cmd_press)

    status = sim_sub.add_parser("status", help="print the device's status as JSON")
    common(status)
    status.set_defaults(func=cmd_status)

    net = sim_sub.add_parser("net", help="connect or cut the device's simulated Wi-Fi")
    common(net)
    net.add_argument("state", choices=("on", "off"))
    net.set_defaults(func=cmd_net)

    played = sim_sub.add_parser("played", help="print a simulated speaker's played log as JSON")
    common(played)
    played.set_defaults(func=cmd_played)


def _port(args: argparse.Namespace) -> int:
    device_dir = Path(args.run_dir) / "devices" / args.device_id
    if not (device_dir / "config.json").exists():
        raise SimDeviceError(
            f"no simulated device {args.device_id!r} under {args.run_dir} "
            f"(expected {device_dir / 'config.json'}); is the demo running? see --run-dir"
        )
    return control_port(device_dir)


def _run(args: argparse.Namespace, line: str, timeout: float = 5.0) -> str | None:
    # The device's reply, or None after printing why there is none.
    try:
        return send_command(_port(args), line, timeout)
    except SimDeviceError as exc:
        msg = str(exc)
        if "does not answer" in msg:
            msg += f" (is {args.device_id} running?)"
        print(f"onekey: error: {msg}", file=sys.stderr)
        return None


def cmd_press(args: argparse.Namespace) -> int:
    if args.test:
        reply = _run(args, "test")
    else:
        if not 0 < args.ms <= 60000:
            print("onekey: error: --ms takes 1..60000", file=sys.stderr)
            return 2
        reply = _run(args, f"press {args.ms}", args.ms / 1000 + _PRESS_MARGIN_S)
    if reply is None:
        return 2
    what = "test switch pressed" if args.test else f"button held {args.ms} ms"
    print(f"{args.device_id}: {what}")
    return 0


def _json_reply(args: argparse.Namespace, line: str, what: str) -> Any:
    """The device's JSON answer to `line`, or None (after saying why) if it gave none."""
    reply = _run(args, line)
    if reply is None:
        return None
    try:
        return json.loads(reply)
    except ValueError:
        print(f"onekey: error: bad {what} from {args.device_id}: {reply[:200]}", file=sys.stderr)
        return None


def cmd_status(args: argparse.Namespace) -> int:
    data = _json_reply(args, "status", "status")
    if data is None:
        return 2
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def cmd_net(args: argparse.Namespace) -> int:
    reply = _run(args, f"net {args.state}")
    if reply is None:
        return 2
    print(f"{args.device_id}: Wi-Fi {args.state}")
    return 0


def cmd_played(args: argparse.Namespace) -> int:
    data = _json_reply(args, "played", "played log")
    if data is None:
        return 2
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0
