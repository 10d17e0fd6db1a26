"""Battery button: awake time per check-in and per alarm, measured on the simulation, and the
battery life they give with the ESP32's documented currents (docs/firmware.md "Battery model").

A battery button (power "battery") runs the real firmware in the MicroPython unix port against
the whole local system (brokers, gateway, centre). It sleeps between check-ins as on the board
(harness/deepsleep.py: each wake is a new boot); the bench lets it check in `--checkins` times
on a short timer, then presses it while it sleeps `--alarms` times. For every wake it records
the firmware's own awake time (its clock, from its start to its sleep) and the wall time from
process start to exit (which adds the unix port's start and compiling the firmware from source:
a board with frozen modules does not compile).

Anchor, measured in the same run: a bare interpreter start and exit (`micropython -c pass`), the
part of the wall time that is the simulation's and not the firmware's.

Usage: python bench/battery.py [--checkins 10] [--alarms 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import progress
from harness.deepsleep import Sleep
from harness.simdevice import micropython_binary
from harness.stack import LocalStack

# ESP32 currents (Espressif, "ESP32 Series Datasheet" v4.x, section "Power Consumption by Power
# Modes" and "RF Power-Consumption Specifications"): Wi-Fi RX 95-100 mA, TX 802.11n 180-240 mA,
# CPU modem-sleep at 240 MHz 30-68 mA; deep sleep with the RTC timer 10 uA. A wake with Wi-Fi
# associated averages about 120 mA (listening most of the time, short transmit bursts).
AWAKE_MA = 120.0
# Asleep, the whole board: the chip with ext0 wake (RTC peripherals on) about 10-15 uA, a
# low-quiescent regulator (HT7333 class, 4 uA), a 2 x 1 MOhm battery divider (2 uA): 25 uA.
SLEEP_MA = 0.025
# Not in the simulation: joining the access point (static address, channel known: about 1 s
# on the boards measured by others; DHCP adds about a second) and the boot from deep sleep with
# frozen modules (about 0.3 s).
WIFI_JOIN_S = 1.0
BOOT_S = 0.3
USABLE = 0.8  # of the nominal capacity: cold, self-discharge, the 3.3 V cut-off
CELL_MAH = 2000.0


def anchor_boot_s(runs: int = 5) -> float:
    binary = micropython_binary()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([binary, "-c", "pass"], check=True, timeout=30)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_day_mah(
    checkin_s: float, awake_checkin_s: float, alarms_per_day: float, awake_alarm_s: float
) -> float:
    wakes = 86400 / checkin_s
    awake_s = wakes * awake_checkin_s + alarms_per_day * awake_alarm_s
    return (awake_s * AWAKE_MA + (86400 - awake_s) * SLEEP_MA) / 3600


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkins", type=int, default=10)
    ap.add_argument("--alarms", type=int, default=3)
    args = ap.parse_args()
    anchor = anchor_boot_s()
    with tempfile.TemporaryDirectory(prefix="onekey-bench-") as tmp, LocalStack(Path(tmp)) as stack:
        stack.setup()
        stack.start()
        button = stack.add_button(
            "btn-bat", "h-001", power="battery", checkin_s=1, awake_s=10,
            awake_after_alarm_s=2, retry_s=5, cancel_window_s=2,
        )
        button.start()
        keeper = button.keeper
        assert keeper is not None
        deadline = time.monotonic() + 30 + 5 * args.checkins
        while len([s for s in keeper.sleeps if s.woke_by == "timer"]) < args.checkins:
            if time.monotonic() > deadline:
                raise SystemExit("the battery button stopped checking in; see its device.log")
            time.sleep(0.2)
            progress("check-ins", min(len(keeper.sleeps), args.checkins), args.checkins)
        checkins: list[Sleep] = [s for s in keeper.sleeps[1:] if s.woke_by == "timer"]
        for n in range(args.alarms):
            while not button.asleep:
                time.sleep(0.05)
            button.press(150)
            progress("alarms", n + 1, args.alarms)
        # A record is written at the wake that ends its sleep, and holds the awake time before
        # that sleep: the alarm wake's is in the record after its own. One more wake closes it.
        n = len(keeper.sleeps)
        while len(keeper.sleeps) <= n:
            time.sleep(0.05)
        alarms = [keeper.sleeps[i + 1] for i, s in enumerate(keeper.sleeps[:-1]) if s.woke_by == "button"]
        button.stop()
    ck_fw = statistics.median(s.awake_ms for s in checkins) / 1000
    ck_wall = statistics.median(s.wall_awake_s for s in checkins)
    print(f"anchor: interpreter start and exit {anchor * 1000:.0f} ms (median of 5)")
    print(f"check-in wake ({len(checkins)}): firmware awake p50 {ck_fw * 1000:.0f} ms, "
          f"max {max(s.awake_ms for s in checkins)} ms; wall p50 {ck_wall * 1000:.0f} ms "
          f"({ck_wall / anchor:.1f}x the anchor)")
    al_fw = 0.0
    if alarms:
        al_fw = statistics.median(s.awake_ms for s in alarms) / 1000
        print(f"alarm wake ({len(alarms)}): firmware awake p50 {al_fw * 1000:.0f} ms "
              f"(awake_after_alarm_s=2 here; 120 s by default)")
    board_checkin_s = ck_fw + WIFI_JOIN_S + BOOT_S
    print(f"on a board: {board_checkin_s:.2f} s per check-in (firmware {ck_fw:.2f} + Wi-Fi join "
          f"{WIFI_JOIN_S} + boot {BOOT_S}) at {AWAKE_MA:.0f} mA, asleep {SLEEP_MA * 1000:.0f} uA")
    alarm_s = 120 + WIFI_JOIN_S + BOOT_S  # awake_after_alarm_s by default
    for checkin, alarms_per_day in ((3600, 0), (3600, 1 / 7), (3600, 1), (1800, 1 / 7), (900, 1 / 7)):
        day = per_day_mah(checkin, board_checkin_s, alarms_per_day, alarm_s)
        life = CELL_MAH * USABLE / day
        print(f"  check-in every {checkin // 60} min, {alarms_per_day:.2f} alarms/day: "
              f"{day:.2f} mAh/day, {life:.0f} days ({life / 365:.1f} years) on {CELL_MAH:.0f} mAh "
              f"({USABLE:.0%} usable)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
