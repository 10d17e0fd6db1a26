# Deep sleep of a simulated battery button on the unix port (hal_sim delegates here; a device
# that never sleeps never compiles it). As on the ESP32, a sleep loses RAM: the process ends with
# code SLEEP_EXIT after writing sleep.json, and harness/deepsleep.py starts the firmware again at
# the wake, with wake.json saying why: {"reason": "button" | "timer", "hold_ms": ms}.
import json
import os
import sys

from micropython import const

WAKE_FILE = "wake.json"
SLEEP_FILE = "sleep.json"
SLEEP_EXIT = const(3)


def wake_reason(hal) -> str:
    # No wake.json: a power-on. A wake by the button goes on pressing it for the rest of hold_ms
    # after the boot (hal_sim releases it).
    try:
        with open(WAKE_FILE) as f:
            w = json.load(f)
    except (OSError, ValueError):
        return "power"
    try:
        os.remove(WAKE_FILE)
    except OSError:
        pass
    reason = w.get("reason")
    if reason == "button":
        hal.btn = True
        hal._release_after = w.get("hold_ms", 0)
        return "button"
    return "timer" if reason == "timer" else "power"


def deep_sleep(ms: int, awake_ms: int) -> None:
    with open(SLEEP_FILE, "w") as f:
        json.dump({"ms": ms, "awake_ms": awake_ms}, f)
    sys.exit(SLEEP_EXIT)
