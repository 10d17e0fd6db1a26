# Battery power for the alarm button (config "power": "battery"): the button sleeps between
# check-ins in the ESP32's deep sleep and wakes on the button pin (ext0, an RTC GPIO) or on the
# check-in timer. Deep sleep keeps nothing in RAM: every wake is a boot, and the outbox and the
# counter are on flash (store.py), so nothing is lost across a sleep.
#
# One wake (docs/firmware.md "Battery button"):
#   1. the link joins Wi-Fi (a static address saves the DHCP exchange), connects and sends its
#      check-in heartbeat, which lists what still waits for a final state (§4.3) so that the
#      gateway answers with any ack the button slept through, and the outbox, oldest first;
#   2. the button sleeps once that heartbeat went out LINGER_MS ago and nothing in the outbox
#      waits for `stored`, or after `awake_s` whatever happened (no Wi-Fi, no broker): the
#      outbox is still on flash, and the next wake comes after `retry_s` instead of the
#      check-in period while something waits;
#   3. after a press (a wake by the button is one: see App.boot) it stays awake for
#      `awake_after_alarm_s`, so that the person sees stored, received and acknowledged and can
#      cancel inside the cancel window, then sleeps as in 2.
import asyncio
from time import ticks_diff, ticks_ms

import store
from micropython import const

_STEP_MS = const(100)
LINGER_MS = const(500)  # after the check-in heartbeat: time for the gateway's answers (§4.3)


class Power:
    def __init__(self, app) -> None:
        self.app = app
        cfg = app.cfg
        self.t0 = ticks_ms()
        self.awake_ms = cfg["awake_s"] * 1000
        self.after_press_ms = cfg["awake_after_alarm_s"] * 1000
        self.checkin_ms = cfg["checkin_s"] * 1000
        self.retry_ms = cfg["retry_s"] * 1000
        self.pressed = False  # an alarm, cancel or test was raised during this wake
        self.pressed_at = ticks_ms()  # when the last one was

    def on_press(self) -> None:
        self.pressed = True
        self.pressed_at = ticks_ms()

    def waiting(self) -> bool:
        # Something in the outbox the gateway has not stored yet.
        for e in self.app.outbox.entries:
            if e.state == store.SENDING or e.state == store.FAILED:
                return True
        return False

    def due(self, now) -> bool:
        # Whether the button may sleep now.
        app = self.app
        if app.hal.button() or app.logic.down or app.hal.test_switch():
            return False  # a press in progress
        if self.pressed and ticks_diff(now, self.pressed_at) < self.after_press_ms:
            return False
        if ticks_diff(now, self.t0) >= self.awake_ms:
            return True  # the wake's budget is spent: try again at the next wake
        link = app.link
        return (
            link.hb_sent > 0 and ticks_diff(now, link.hb_at) >= LINGER_MS and not self.waiting()
        )

    async def run(self) -> None:
        app = self.app
        while True:
            await asyncio.sleep_ms(_STEP_MS)
            now = ticks_ms()
            if not self.due(now):
                continue
            ms = self.retry_ms if self.waiting() else self.checkin_ms
            awake = ticks_diff(now, self.t0)
            print("[%s] sleep: %d ms after %d ms awake, outbox %d" % (now, ms, awake, len(app.outbox)))
            await app.link.leave()
            app.hal.led(None)
            app.hal.buzzer(False)
            app.hal.deep_sleep(ms, awake)
