"""`onekey vmodem`: a virtual GSM modem on a pseudo-terminal (harness/vmodem.py), and the
commands that drive a running one: reply as a contact, list what it sent, inject faults."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any


def add_commands(sub: Any) -> None:
    vm = sub.add_parser("vmodem", help="a virtual GSM modem (AT commands, SMS) on a pseudo-terminal")
    vsub = vm.add_subparsers(dest="vmodem_command", required=True, metavar="ACTION")

    run = vsub.add_parser("run", help="start one; prints the port to open")
    run.add_argument("--dir", type=Path, required=True, help="its port link, control socket and sent.jsonl")
    run.add_argument("--report-delay", type=float, default=0.2,
                     help="seconds before a delivery report (default 0.2)")
    run.set_defaults(func=_run)

    reply = vsub.add_parser("send-reply", help="an SMS from a contact arrives at the modem")
    reply.add_argument("--dir", type=Path, required=True)
    reply.add_argument("--from", dest="sender", required=True,
                       help="the contact's number, e.g. +8613900139000")
    reply.add_argument("--text", required=True, help="e.g. 1 or 收到")
    reply.add_argument("--parts", type=int, default=None, help="split into this many concatenated parts")
    reply.set_defaults(func=_reply)

    sent = vsub.add_parser("sent", help="the messages it sent, one JSON object a line")
    sent.add_argument("--dir", type=Path, required=True)
    sent.set_defaults(func=_sent)

    fault = vsub.add_parser("fault", help="inject a fault (or clear it); prints the modem's status")
    fault.add_argument("--dir", type=Path, required=True)
    fault.add_argument("--network", choices=["ok", "none"], help="none: not registered, sends fail (331)")
    fault.add_argument("--sim", choices=["present", "missing"],
                       help="missing: +CME ERROR 10, sends fail (310)")
    fault.add_argument("--cms", type=int, metavar="CODE", help="the next send(s) fail with +CMS ERROR CODE")
    fault.add_argument("--count", type=int, default=1, help="how many sends --cms fails (default 1)")
    fault.add_argument("--delay", type=float, metavar="SECONDS",
                       help="answer every command this late (0: off)")
    fault.add_argument("--reports", choices=["on", "off", "fail"],
                       help="delivery reports: sent, none, failed")
    fault.add_argument("--garbage", type=int, metavar="N", help="print N garbage lines now")
    fault.add_argument("--unplug", action="store_true", help="the port vanishes")
    fault.add_argument("--plug", action="store_true", help="the port comes back (the module boots again)")
    fault.set_defaults(func=_fault)

    status = vsub.add_parser("status", help="its port and faults")
    status.add_argument("--dir", type=Path, required=True)
    status.set_defaults(func=_status)


def _run(args: argparse.Namespace) -> int:
    from harness.vmodem import VirtualModem

    vm = VirtualModem(args.dir, report_delay=args.report_delay)
    port = vm.start()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        vm.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"virtual modem on {port} ({vm.pty})", flush=True)
    print(f"  reply as a contact: onekey vmodem send-reply --dir {vm.dir} --from +8613900139000 --text 收到",
          flush=True)
    print(f"  sent messages: onekey vmodem sent --dir {vm.dir}; Ctrl-C stops it", flush=True)
    try:
        vm.serve()
    finally:
        vm.stop()
    return 0


def _call(directory: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    from harness.vmodem import VModemError, control

    try:
        return control(directory, request)
    except VModemError as exc:
        print(f"onekey: error: {exc}", file=sys.stderr)
        return None


def _reply(args: argparse.Namespace) -> int:
    reply = _call(args.dir, {"cmd": "reply", "from": args.sender, "text": args.text, "parts": args.parts})
    if reply is None:
        return 2
    print(f"delivered to the modem from {args.sender} (storage {reply['indexes']})")
    return 0


def _sent(args: argparse.Namespace) -> int:
    from harness.vmodem import read_sent

    for row in read_sent(args.dir):
        print(json.dumps(row, ensure_ascii=False))
    return 0


def _fault(args: argparse.Namespace) -> int:
    req: dict[str, Any] = {"cmd": "fault"}
    for key in ("network", "sim", "delay", "reports", "garbage"):
        value = getattr(args, key)
        if value is not None:
            req[key] = value
    if args.cms is not None:
        req["cms"], req["count"] = args.cms, args.count
    if args.unplug:
        req["unplug"] = True
    if args.plug:
        req["plug"] = True
    reply = _call(args.dir, req)
    if reply is None:
        return 2
    print(json.dumps(reply["status"], ensure_ascii=False))
    return 0


def _status(args: argparse.Namespace) -> int:
    reply = _call(args.dir, {"cmd": "status"})
    if reply is None:
        return 2
    print(json.dumps(reply["status"], ensure_ascii=False))
    return 0
