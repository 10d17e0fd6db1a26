"""Press-to-centre latency with real firmware buttons on loopback, durability on.

Each press is held 150 ms on a simulated pin of a button running the firmware in the
MicroPython unix port (heap 96K). Measured per alarm, on the one host clock:
  press-to-centre  from the moment the pin goes down to the centre's commit (`received_at`)
  raise-to-centre  the same, less the firmware's hold threshold (`alarm_hold_ms`, default 100 ms,
                   there to stop accidental alarms): the system's own part
Usage: python bench/latency.py [--presses 200] [--buttons 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import percentile, progress
from harness.stack import LocalStack

HOLD_MS = 100


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--buttons", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onekey-bench-") as tmp, LocalStack(Path(tmp)) as stack:
        stack.setup()
        stack.start()
        buttons = []
        for i in range(args.buttons):
            b = stack.add_button(
                f"btn-{i:04d}", f"h-{i:03d}", alarm_hold_ms=HOLD_MS, cancel_window_s=0,
                hb_interval_s=60,
            )
            b.start()
            buttons.append(b)
        for b in buttons:
            b.wait_for(lambda st: st["connected"], timeout=20)
        press_to_centre: list[float] = []
        for n in range(args.presses):
            b = buttons[n % len(buttons)]
            before = {r["c"] for r in b.status()["recent"]}
            t0_ms = time.time() * 1000
            b.press(150)
            st = b.wait_for(lambda st, before=before: _new_received(st, before), timeout=10)
            counter = _new_received(st, before)
            alarm_id = f"{stack.gateway_id}:{b.device_id}:{counter}"
            alarm = stack.api("GET", f"/api/alarms/{alarm_id}")
            press_to_centre.append(alarm["received_at"] - t0_ms)
            # Staff acknowledge it, so the button's flash outbox empties as in the field.
            stack.api("POST", f"/api/alarms/{alarm_id}/ack", {"by": "bench"})
            progress("presses", n + 1, args.presses)
        raise_to_centre = [v - HOLD_MS for v in press_to_centre]
        time.sleep(1.0)  # the gateway writes its counters every half second
        m = stack.gateway_metrics()
    print(f"presses: {len(press_to_centre)} on {args.buttons} firmware buttons (MicroPython, heap 96K)")
    for name, vals in (("press-to-centre", press_to_centre), ("raise-to-centre", raise_to_centre)):
        print(
            f"{name}: p50 {percentile(vals, 50):.1f} ms  p99 {percentile(vals, 99):.1f} ms  "
            f"max {max(vals):.1f} ms"
        )
    print(f"gateway: stored {m['counts'].get('stored_alarm')} rejected {m.get('rejected')}")
    return 0


def _new_received(st: dict[str, Any], before: set[int]) -> int | None:
    for r in st["recent"]:
        if r["c"] not in before and r["kind"] == "alarm" and r["state"] in ("received", "acked"):
            return int(r["c"])
    return None


if __name__ == "__main__":
    sys.exit(main())
