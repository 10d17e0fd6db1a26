"""`onekey demo`: a whole village on loopback, with buttons running the real firmware."""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from centre.auth import Role
from centre.enrol import add_staff
from harness.stack import LocalStack, StackError
from harness.vmodem import VModemError, VModemProcess

DEFAULT_RUN_DIR = Path("run/demo")
# Fictional staff, one of each role; their passwords are made afresh for each run.
DEMO_STAFF = (
    ("zhang", "张主任 Zhang (admin)", Role.ADMIN),
    ("li", "李广播 Li (broadcaster)", Role.BROADCASTER),
    ("wang", "王值班 Wang (operator)", Role.OPERATOR),
)


def add_commands(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="run a demo village on loopback: brokers, centre, gateway, firmware buttons and speakers",
        description=(
            "Starts a village Mosquitto (per-device passwords and ACLs), a centre Mosquitto with "
            "TLS, the centre, the gateway, and alarm buttons and broadcast speakers running the "
            "real firmware in the MicroPython unix port, all on 127.0.0.1. Ctrl-C stops everything."
        ),
    )
    demo.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR,
                      help=f"where the demo keeps its state; wiped at start (default {DEFAULT_RUN_DIR})")
    demo.add_argument("--buttons", type=int, default=5, help="number of firmware buttons (default 5)")
    demo.add_argument("--speakers", type=int, default=2, help="number of firmware speakers (default 2)")
    demo.add_argument("--http-port", type=int, default=8080, help="centre web port (default 8080)")
    demo.add_argument("--duration", type=float, default=0,
                      help="stop by itself after this many seconds (default: run until Ctrl-C)")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir.resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    stack = LocalStack(run_dir, http_port=args.http_port)
    vmodem = VModemProcess(run_dir / "vmodem")
    try:
        print(f"demo: setting up keys, certificates and configuration in {run_dir}", flush=True)
        stack.setup()
        staff = demo_accounts(stack)
        load_households(stack)
        # The escalation chain's SMS go through a virtual modem: one can read them and reply.
        port = vmodem.start()
        with stack.centre_config.open("a", encoding="utf-8") as f:
            f.write(f'\n[modem]\nport = "{port}"\n')
        print(f"demo: virtual SMS modem on {port}", flush=True)
        print("demo: starting village broker, centre broker (TLS), centre and gateway", flush=True)
        stack.start()
        for i in range(1, args.buttons + 1):
            button = stack.add_button(f"btn-{i:04d}", f"h-{i:03d}")
            button.start()
            print(f"demo: button {button.device_id} running the firmware (household h-{i:03d})", flush=True)
        for i in range(1, args.speakers + 1):
            group = "north" if i % 2 else "south"
            speaker = stack.add_speaker(f"spk-{i:04d}", f"s-{i:03d}", groups=[group])
            speaker.start()
            print(f"demo: speaker {speaker.device_id} running the firmware (group {group})", flush=True)
        stack.wait_devices_connected()
        print("demo: ready: brokers, centre, gateway links and every device are up", flush=True)
        print_instructions(stack, run_dir, staff)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                break
            for proc in (stack.gateway_proc, stack.centre_proc):
                if proc is not None and not proc.running:
                    print(f"demo: {proc.exit_message(proc.name)}", file=sys.stderr)
                    return 1
            stop.wait(0.5)
    except (StackError, VModemError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        print("demo: stopping everything", flush=True)
        stack.stop()
        vmodem.stop()
    return 0


def demo_accounts(stack: LocalStack) -> list[tuple[str, Role, str]]:
    """The demo's staff accounts: (username, role, password)."""
    made = []
    for username, display, role in DEMO_STAFF:
        password = secrets.token_urlsafe(9)
        add_staff(stack.centre_config, username, display, role, password, actor="demo")
        made.append((username, role, password))
    return made


def load_households(stack: LocalStack) -> None:
    """The demo village's household cards (harness/demo_households.csv: fictional people,
    phone numbers 139 0000 00xx), so that an alarm shows a person and whom to call."""
    import asyncio
    from importlib import resources

    from centre.config import load_config
    from centre.household_csv import import_into

    data = resources.files("harness").joinpath("demo_households.csv").read_bytes()
    db = load_config(stack.centre_config).db_path
    result = asyncio.run(import_into(db, data, "demo", source="demo_households.csv"))
    print(f"demo: {result.count} fictional household cards with contacts loaded "
          "(h-001 ... h-008)", flush=True)


def print_instructions(
    stack: LocalStack, run_dir: Path, staff: list[tuple[str, Role, str]]
) -> None:
    url = f"http://127.0.0.1:{stack.http_port}"
    auth = f'-H "Authorization: Bearer $(cat {stack.centre_token_file})"'
    logins = "\n".join(f"  {role.label:<12} {user:<6} password {pw}" for user, role, pw in staff)
    first = next(iter(stack.buttons), "btn-0001")
    spk = next(iter(stack.speakers), "spk-0001")
    rd = "" if run_dir == DEFAULT_RUN_DIR.resolve() else f" --run-dir {run_dir}"
    print(
        f"""
The demo village is running. In another terminal, from this directory:

  .venv/bin/onekey sim press {first}{rd}        press the alarm button
  .venv/bin/onekey sim status {first}{rd}       what the button's LED and buzzer show
  .venv/bin/onekey sim press {first} --ms 2500{rd}   a long press: cancels the alarm
  .venv/bin/onekey sim press {first} --test{rd}  a test alarm (recorded as a test)
  .venv/bin/onekey sim played {spk}{rd}       what the speaker has played

Broadcast to the village (every speaker; the report shows each one played):
  curl -X POST {url}/api/broadcasts {auth} -H 'Content-Type: application/json' \\
       -d '{{"by": "Li", "severity": "Severe", "urgency": "Expected", "certainty": "Likely",
            "valid_for_s": 3600, "area": [{{"village": "{stack.village}"}}],
            "text": "今晚有暴雨，请注意防范。"}}'
  curl {auth} {url}/api/broadcasts/<id>   (per-speaker report)
  Groups: "area": [{{"village": "{stack.village}", "groups": ["north"]}}]

Township centre:
  staff page   {url}/                  (log in, acknowledge alarms here)
  API          {url}/api/alarms        (API description: {url}/openapi.json, after login)
  ack by API   curl -X POST {url}/api/alarms/<id>/ack {auth} -H 'Content-Type: application/json' \\
                    -d '{{"by": "Wang", "note": "on the way"}}'

Escalation: an alarm nobody acknowledges within 60 s goes by SMS to the household's contacts
(h-001: leader 王建国 and grid worker 赵志强 first, then the son 张伟, 60 s each), through the
virtual modem:
  .venv/bin/onekey vmodem sent --dir {run_dir}/vmodem        the SMS sent so far
  .venv/bin/onekey vmodem send-reply --dir {run_dir}/vmodem --from +8613900000002 --text 收到
                                      reply as the son: confirms, the chain stops
  curl {auth} {url}/api/alarms/<id>/escalation   (the chain, step by step)

Staff accounts, for this demo only (fictional people; passwords made for this run; an admin
API token for the curl lines above is in {stack.centre_token_file}):
{logins}

Gateway counters:  .venv/bin/onekey gateway stats --config {stack.gateway_config}
Logs:              {run_dir}/*.log, {run_dir}/devices/*/device.log

Press Ctrl-C to stop everything.
""",
        flush=True,
    )
