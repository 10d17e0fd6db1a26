# Press logic of the alarm button: debounce, hold thresholds and the cancel window.
#
# Pure and hardware-free: the caller samples the pins and passes (pressed, now_ms) in; events
# come out. now_ms is a millisecond clock that may wrap at 2**30 (it stays a small int on a
# 32-bit port); times are compared with diff(). Runs under MicroPython and CPython: the unit
# tests drive it with synthetic sequences.
CLOCK_MASK = 0x3FFFFFFF
_HALF = 0x20000000


def diff(a: int, b: int) -> int:
    # a - b on the wrapping clock, correct while the true difference is under 2**29 ms.
    return ((a - b + _HALF) & CLOCK_MASK) - _HALF


# Events returned by update().
ALARM = "alarm"  # a press crossed alarm_hold_ms and no alarm is active: raise an alarm
REPLAY = "replay"  # a press while an alarm is active in its window: show its feedback again
CANCEL = "cancel"  # a later press held for cancel_hold_ms inside the window: cancel the alarm
TEST = "test"  # the test switch was pressed


class Debouncer:
    # A level is accepted once the raw input has kept it for debounce_ms. `since` is the time
    # of the raw edge that led to the accepted level, so hold times count from the real edge.
    def __init__(self, debounce_ms: int = 20) -> None:
        self.debounce_ms = debounce_ms
        self.raw = False
        self.stable = False
        self.raw_since = 0
        self.since = 0

    def update(self, pressed: bool, now_ms: int) -> bool:
        # Returns True when the accepted level changed on this call.
        pressed = bool(pressed)
        if pressed != self.raw:
            self.raw = pressed
            self.raw_since = now_ms
        if self.raw != self.stable and diff(now_ms, self.raw_since) >= self.debounce_ms:
            self.stable = self.raw
            self.since = self.raw_since
            return True
        return False


class PressLogic:
    # The main button. One event at most per call; call it every few milliseconds.
    #
    # - A press held for alarm_hold_ms raises ALARM at the moment the threshold is crossed,
    #   unless an alarm is active (raised less than cancel_window_ms ago and not cancelled):
    #   then it gives REPLAY instead, and never a second alarm.
    # - A press that starts after the alarm press was released, inside the window, and is held
    #   for cancel_hold_ms gives CANCEL, which closes the window.
    def __init__(
        self,
        alarm_hold_ms: int = 100,
        cancel_hold_ms: int = 2000,
        cancel_window_ms: int = 120000,
        debounce_ms: int = 20,
    ) -> None:
        self.alarm_hold_ms = alarm_hold_ms
        self.cancel_hold_ms = cancel_hold_ms
        self.cancel_window_ms = cancel_window_ms
        self.deb = Debouncer(debounce_ms)
        self.down = False  # a debounced press is in progress
        self.down_at = 0  # when it started (its raw edge)
        self.stage = 0  # 0 nothing yet, 1 alarm or replay given, 2 cancel given
        self.second = False  # this press started while an alarm was active
        self.alarm_at = 0
        self.alarm_on = False

    def active(self, now_ms: int) -> bool:
        # An alarm raised less than cancel_window_ms ago and not cancelled.
        if self.alarm_on and diff(now_ms, self.alarm_at) >= self.cancel_window_ms:
            self.alarm_on = False
        return self.alarm_on

    def clear(self) -> None:
        # Forget the active alarm (the next press raises a new one).
        self.alarm_on = False

    def woken(self, pressed: bool, now_ms: int) -> str:
        # The button woke the chip from deep sleep (battery button): that press is an alarm.
        # It was held through the wake-up, which takes longer than alarm_hold_ms, and its hold
        # cannot be measured any other way. If it is still held, the rest of it belongs to this
        # press (no second event when it crosses a threshold).
        self.alarm_at = now_ms
        self.alarm_on = True
        if pressed:
            d = self.deb
            d.raw = d.stable = True
            d.raw_since = d.since = now_ms
            self.down = True
            self.down_at = now_ms
            self.stage = 1
            self.second = False
        return ALARM

    def update(self, pressed: bool, now_ms: int) -> str | None:
        active = self.active(now_ms)
        if self.deb.update(pressed, now_ms):
            if self.deb.stable:
                self.down = True
                self.down_at = self.deb.since
                self.stage = 0
                self.second = active and diff(self.down_at, self.alarm_at) >= 0
            else:
                self.down = False
        if not self.down:
            return None
        held = diff(now_ms, self.down_at)
        if self.stage == 0 and held >= self.alarm_hold_ms:
            self.stage = 1
            if self.second:
                return REPLAY
            self.alarm_at = now_ms
            self.alarm_on = True
            return ALARM
        if self.stage == 1 and self.second and held >= self.cancel_hold_ms:
            self.stage = 2
            self.alarm_on = False
            return CANCEL
        return None


class TestSwitch:
    # The recessed test switch: TEST once per debounced press.
    def __init__(self, debounce_ms: int = 30) -> None:
        self.deb = Debouncer(debounce_ms)

    def update(self, pressed: bool, now_ms: int) -> str | None:
        if self.deb.update(pressed, now_ms) and self.deb.stable:
            return TEST
        return None
