"""Escalation step timing: from the end of a step's T2 to the next contact's SMS at the modem.

A firmware button (MicroPython unix port) is pressed once; nobody acknowledges and nobody
replies, so the chain walks every step of every round. The centre runs as in the field
(its own process, the engine looking every `period_s`, 1 s by default) and sends through the
virtual modem (`onekey vmodem`) on a pseudo-terminal. Measured per step after the first, on
the one host clock:
  anchor           `due_at` of the previous step's SMS: when its T2 ended (the centre's
                   clock, Unix ms, stored with each SMS)
  T2 -> sending    the next SMS committed as `sending` (`created_at`): the engine noticed
  T2 -> at modem   the virtual modem decoded the whole message (`at` in its sent.jsonl)
Usage: python bench/escalation.py [--contacts 5] [--rounds 5] [--t2 1] [--period 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import percentile
from harness.stack import LocalStack
from harness.vmodem import VModemProcess, read_sent


def _ms(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp() * 1000


def _summary(label: str, values: list[float]) -> str:
    return (
        f"{label:<16} n={len(values)} p50={percentile(values, 50):.0f} ms "
        f"p99={percentile(values, 99):.0f} ms max={max(values):.0f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=5, help="family contacts: one step each")
    ap.add_argument("--rounds", type=int, default=5, help="1-10")
    ap.add_argument("--t2", type=float, default=1.0, help="T2 in seconds (>= 1)")
    ap.add_argument("--period", type=float, default=1.0, help="the engine's period_s")
    args = ap.parse_args()
    steps = args.contacts * args.rounds
    with tempfile.TemporaryDirectory(prefix="onekey-bench-") as tmp:
        vmodem = VModemProcess(Path(tmp) / "vmodem")
        port = vmodem.start()
        try:
            with LocalStack(Path(tmp) / "stack") as stack:
                stack.setup()
                with stack.centre_config.open("a") as f:
                    f.write(
                        f"\n[escalation]\nt1_s = 1\nt2_s = {args.t2}\nrounds = {args.rounds}\n"
                        f'period_s = {args.period}\n\n[modem]\nport = "{port}"\n'
                    )
                stack.start()
                contacts = [
                    {"kind": "family", "name": f"联系人{i + 1}", "relation": "亲属",
                     "phone": f"1380000{i:04d}"}
                    for i in range(args.contacts)
                ]
                stack.api("PUT", "/api/households/h-001", {
                    "village": stack.village, "group": "一组", "name": "测试户",
                    "address": "村东1号", "contacts": contacts,
                })
                button = stack.add_button("btn-0001", "h-001", cancel_window_s=0)
                button.start()
                button.wait_for(lambda st: st["connected"], timeout=20)
                button.press(150)
                deadline = time.monotonic() + 30 + steps * (args.t2 + args.period + 2)
                alarm = ""
                chain: dict[str, Any] = {}
                while time.monotonic() < deadline:
                    rows = stack.api("GET", "/api/alarms?kind=alarm")
                    if rows:
                        alarm = rows[0]["id"]
                        chain = stack.api("GET", f"/api/alarms/{alarm}/escalation")
                        if chain["state"] == "exhausted":
                            break
                    time.sleep(0.5)
                else:
                    print(f"the chain did not end in time: {chain.get('state')}", file=sys.stderr)
                    return 1
                sent = read_sent(vmodem.dir)
        finally:
            vmodem.stop()
    msgs = chain["messages"]
    if len(msgs) != steps or len(sent) != steps:
        print(f"expected {steps} SMS, the chain has {len(msgs)}, the modem {len(sent)}",
              file=sys.stderr)
        return 1
    to_sending: list[float] = []
    to_modem: list[float] = []
    for prev, msg, rec in zip(msgs, msgs[1:], sent[1:], strict=False):
        assert rec["to"] == msg["phone"], (rec["to"], msg["phone"])
        to_sending.append(msg["created_at"] - prev["due_at"])
        to_modem.append(_ms(rec["at"]) - prev["due_at"])
    print(f"escalation steps: {args.contacts} contacts x {args.rounds} rounds, T2 {args.t2:g} s, "
          f"period {args.period:g} s; anchor: the previous step's T2 end (due_at)")
    print(_summary("T2 -> sending", to_sending))
    print(_summary("T2 -> at modem", to_modem))
    return 0


if __name__ == "__main__":
    sys.exit(main())
