"""Device supervision: time from a device dying to `lost` at the centre (docs/performance.md).

The whole local system (brokers, gateway, centre) with devices running the real firmware in the
MicroPython unix port. Each sample is one device; the samples of a mode run side by side, each
killed at its own random moment within one heartbeat or check-in period, so that they fall at
every phase of the device's period. The time is the centre's `received_at` of the device's
`lost` event minus the moment the bench killed it (one machine, one clock), split into detection
at the gateway (the event's `gw_ts`) and forwarding (gateway to centre).

Modes:
- mains, SIGKILL: speakers with the default periods (heartbeat 20 s, lost after 3 missed: 60 s).
  The kernel closes the dead process's socket, the broker publishes its last will at once, and
  the gateway calls it lost `will_grace_s` (10 s) later.
- mains, SIGSTOP: the same speakers frozen: the socket stays open, no will until the broker's
  keepalive runs out (1.5 x 30 s); lost by the 60 s heartbeat grace or 10 s after that will,
  whichever comes first. This is the power cut or the Wi-Fi gone with no FIN: the T5 figure.
- battery, SIGKILL while asleep: battery buttons with the check-in period scaled down (`--scale`,
  600 by default: 6 s instead of 3600 s; the margin 300 s becomes 1 s), lost after 2 missed.

Anchor, measured in the same run: a test press of a mains button to its event at the centre
(median of 5), the same path (village broker, gateway store and forwarder, centre commit) that
a supervision event takes after the gateway raised it.

Usage: python bench/supervision.py [--samples 5] [--scale 600] [--skip-mains]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.stack import LocalStack

MAINS_PERIOD_S = 20
BATTERY_PERIOD_S = 3600


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.2)


def lost_events(stack: LocalStack) -> dict[tuple[str, str], dict[str, Any]]:
    """(device, event id) -> the newest lost events (the list is newest first)."""
    evs = stack.api("GET", "/api/device-events?limit=1000")
    return {(e["device"], e["id"]): e for e in evs if e["what"] == "lost"}


def listed(stack: LocalStack, ids: list[str]) -> bool:
    have = {d["id"]: d for d in stack.api("GET", "/api/devices")}
    return all(i in have and have[i]["status"] == "ok" for i in ids)


def measure(
    stack: LocalStack, ids: list[str], kill: Any, period_s: float, timeout_s: float
) -> list[tuple[float, float]]:
    """Kill each device at a random moment within `period_s`; returns per device (total s,
    forwarding s)."""
    before = set(lost_events(stack))
    killed: dict[str, int] = {}
    lock = threading.Lock()

    def one(dev_id: str, delay: float) -> None:
        time.sleep(delay)
        at = now_ms()
        kill(dev_id)
        with lock:
            killed[dev_id] = at

    threads = [threading.Thread(target=one, args=(d, random.uniform(0, period_s))) for d in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def done() -> dict[str, dict[str, Any]] | None:
        new = {dev: e for (dev, eid), e in lost_events(stack).items()
               if (dev, eid) not in before and dev in killed}
        return new if len(new) == len(ids) else None

    found: dict[str, dict[str, Any]] = wait(done, timeout_s, "every killed device reported lost")
    out = []
    for dev_id in ids:
        e = found[dev_id]
        out.append(((e["received_at"] - killed[dev_id]) / 1000,
                    (e["received_at"] - e["gw_ts"]) / 1000))
    return out


def report(label: str, samples: list[tuple[float, float]]) -> None:
    totals = [t for t, _ in samples]
    fwd = [f for _, f in samples]
    print(f"{label} ({len(samples)} samples): death to lost at the centre p50 "
          f"{statistics.median(totals):.1f} s, max {max(totals):.1f} s; of which forwarding "
          f"(gateway raised to centre stored) p50 {statistics.median(fwd) * 1000:.0f} ms, "
          f"max {max(fwd) * 1000:.0f} ms", flush=True)


def anchor(stack: LocalStack, runs: int = 5) -> float:
    button = stack.add_button("btn-anchor", "h-anchor")
    button.start()
    wait(lambda: listed(stack, ["btn-anchor"]), 30, "the anchor button listed")
    times = []
    for _ in range(runs):
        have = {a["id"] for a in stack.api("GET", "/api/alarms?kind=test&limit=1000")}
        t0 = now_ms()
        button.test_press()
        new = wait(
            lambda have=have: [a for a in stack.api("GET", "/api/alarms?kind=test&limit=1000")
                               if a["id"] not in have],
            20, "the test press at the centre",
        )
        times.append((new[0]["received_at"] - t0) / 1000)
        time.sleep(4)  # the button's test feedback ends before the next press
    button.stop()
    return float(statistics.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--scale", type=int, default=600, help="battery check-in period divisor")
    ap.add_argument("--skip-mains", action="store_true", help="the battery mode only (seconds)")
    args = ap.parse_args()
    checkin_s = max(1, BATTERY_PERIOD_S // args.scale)
    margin_s = max(1, 300 // args.scale)
    battery_lost_s = checkin_s * 2 + margin_s
    with tempfile.TemporaryDirectory(prefix="onekey-bench-") as tmp:
        stack = LocalStack(
            Path(tmp), supervision={"battery_period_s": checkin_s, "battery_margin_s": margin_s}
        )
        with stack:
            stack.setup()
            stack.start()
            print(f"anchor: a test press to the centre p50 {anchor(stack) * 1000:.0f} ms "
                  "(median of 5)", flush=True)
            if not args.skip_mains:
                speakers = [f"spk-{i:04d}" for i in range(args.samples)]
                for s in speakers:
                    stack.add_speaker(s, f"h-{s}").start()
                wait(lambda: listed(stack, speakers), 60, "every speaker listed")
                kill = lambda d: stack.speakers[d].kill()  # noqa: E731
                report("mains, SIGKILL (last will)",
                       measure(stack, speakers, kill, MAINS_PERIOD_S, 60))
                for s in speakers:
                    stack.speakers[s].start()
                wait(lambda: listed(stack, speakers), 60, "every speaker restored")
                time.sleep(MAINS_PERIOD_S)  # a heartbeat from each before the next deaths

                def freeze(d: str) -> None:
                    pid = stack.speakers[d].pid
                    assert pid is not None
                    os.killpg(pid, signal.SIGSTOP)

                try:
                    report("mains, SIGSTOP (silent, T5)",
                           measure(stack, speakers, freeze, MAINS_PERIOD_S, 150))
                finally:
                    for s in speakers:
                        pid = stack.speakers[s].pid
                        if pid is not None:
                            os.killpg(pid, signal.SIGCONT)
                        stack.speakers[s].kill()
            buttons = [f"btn-{i:04d}" for i in range(args.samples)]
            for b in buttons:
                stack.add_button(b, f"h-{b}", power="battery", checkin_s=checkin_s, awake_s=8,
                                 retry_s=2).start()
            wait(lambda: listed(stack, buttons), 60, "every battery button listed")

            def kill_asleep(d: str) -> None:
                button = stack.buttons[d]
                wait(lambda: button.asleep, 30, f"{d} asleep")
                button.kill()

            report(f"battery, SIGKILL asleep (check-in {checkin_s} s = {BATTERY_PERIOD_S} s / "
                   f"{args.scale}, lost after {battery_lost_s} s)",
                   measure(stack, buttons, kill_asleep, checkin_s, battery_lost_s * 3 + 30))
    return 0


if __name__ == "__main__":
    sys.exit(main())
