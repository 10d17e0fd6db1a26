# What the button shows and sounds (docs/protocol.md §7). One task drives the current pattern;
# show(name) switches pattern at once, and showing the same name again replays it from the
# start (its beeps included).
import asyncio
from time import ticks_diff, ticks_ms

from micropython import const

_TICK_MS = const(20)
_LONG_MS = const(1800000)  # stored/received stay on for 30 min at most, to spare the battery
_STEADY = (1, 0)

AMBER = "amber"
GREEN = "green"
RED = "red"

# name: (colour, LED on/off times in ms cycled, how long the pattern lasts in ms (0 for ever),
#        buzzer on/off times in ms, repeat the buzzer every ms (0 once))
PATTERNS = {
    "idle": (None, _STEADY, 0, (), 0),
    "sending": (AMBER, (100, 100), 0, (100,), 0),
    "stored": (GREEN, (200, 800), _LONG_MS, (100, 100, 100), 0),
    "received": (GREEN, (100, 100, 100, 700), _LONG_MS, (100, 100, 100, 100, 100), 0),
    "acked": (GREEN, _STEADY, 60000, (800,), 0),
    "failed": (RED, (100, 100), 0, (500, 300, 500, 300, 500), 10000),
    "cancelled": (AMBER, _STEADY, 3000, (800,), 0),
    "test_ok": (GREEN, _STEADY, 3000, (100, 100, 100), 0),
}


def level(seq: tuple, t: int) -> bool:
    # True if time t (ms) falls in an "on" slot of the on/off sequence seq, cycled.
    total = 0
    for d in seq:
        total += d
    if total <= 0:
        return False
    t %= total
    on = True
    for d in seq:
        if t < d:
            return on
        t -= d
        on = not on
    return False


class Feedback:
    def __init__(self, hal) -> None:
        self.hal = hal
        self.name = "idle"
        self.t0 = ticks_ms()
        self.led: str | None = None  # colour lit now
        self.buzz = False
        self.shown = 0  # patterns shown since boot

    def show(self, name: str) -> None:
        if name not in PATTERNS:
            name = "idle"
        self.name = name
        self.t0 = ticks_ms()
        self.shown += 1

    def step(self, t: int) -> None:
        # Sets the LED and buzzer for time t (ms) into the current pattern.
        colour, seq, last_ms, beeps, every = PATTERNS[self.name]
        if last_ms and t >= last_ms:
            self.name = "idle"
            colour = None
        led = colour if colour is not None and level(seq, t) else None
        buzz = False
        if colour is not None and beeps:
            bt = t % every if every else t
            total = 0
            for d in beeps:
                total += d
            buzz = bt < total and level(beeps, bt)
        if led != self.led:
            self.led = led
            self.hal.led(led)
        if buzz != self.buzz:
            self.buzz = buzz
            self.hal.buzzer(buzz)

    async def run(self) -> None:
        while True:
            self.step(ticks_diff(ticks_ms(), self.t0))
            await asyncio.sleep_ms(_TICK_MS)
