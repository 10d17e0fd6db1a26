# The alarm button application: press logic, outbox, link to the village broker, feedback.
#
# Hardware comes in through `hal` (hal_esp32 or hal_sim); nothing here imports machine or
# network. Tasks (started by main.py under a supervisor):
#   buttons()   samples the pins every 10 ms, turns presses into alarm/cancel/test messages
#   link.run()  the only owner of the connection: Wi-Fi, MQTT, re-sends, acks, heartbeats
#   fb.run()    drives the LED and buzzer pattern
import asyncio
import gc
from time import ticks_diff, ticks_ms

import okproto
import store
from feedback import Feedback
from link import Link
from micropython import const
from okmqtt import Client
from presslogic import ALARM, CANCEL, CLOCK_MASK, REPLAY, TEST, PressLogic, TestSwitch

_POLL_MS = const(10)
_RECENT = const(8)
_SYNC = const(8)  # okproto.MAX_EV: events whose final state is awaited, listed in heartbeats


def log(*args: object) -> None:
    print("[%s]" % ticks_ms(), *args)


class App:
    def __init__(self, cfg: dict, hal) -> None:
        self.cfg = cfg
        self.hal = hal
        self.id = cfg["id"]
        self.key = cfg["key_bytes"]
        m = cfg["mqtt"]
        self.client = Client(
            self.id,
            m["host"],
            m["port"],
            m.get("user"),
            m.get("password"),
            cfg["keepalive_s"],
            okproto.topic_up(self.id, "will"),
            b"offline",
        )
        self.wake = self.client.wake
        self.counter = store.Counter()
        self.outbox = store.Outbox()
        self.logic = PressLogic(
            cfg["alarm_hold_ms"],
            cfg["cancel_hold_ms"],
            cfg["cancel_window_s"] * 1000,
            cfg["debounce_ms"],
        )
        self.tswitch = TestSwitch()
        self.fb = Feedback(hal)
        self.recent: list[store.Entry] = []  # newest last
        # §4.3: every alarm, cancel and test whose final state the device has not seen yet,
        # oldest first, at most _SYNC; heartbeats list them (`ev`) so that the gateway sends
        # again a state whose ack was lost. RAM only: after a reboot it is rebuilt from the
        # outbox, which holds exactly the messages not yet final.
        self.sync: list[store.Entry] = []
        self.sync_drops = 0
        self.alarm: store.Entry | None = None  # the newest alarm
        self.focus: store.Entry | None = None  # the message the feedback is about
        self.up_ms = 0  # uptime
        self.clock = 0  # uptime wrapped at 2**30, for the press logic
        self.alive = ticks_ms()  # last pass of the button loop, for the watchdog
        self.bad_acks = 0
        self.stale_acks = 0
        self.errors = 0
        self.link = Link(self)
        self.power = None
        self.woke = hal.wake_reason()  # "button", "timer" or "power" (a reset or power-on)
        if cfg["power"] == "battery":
            # Its own module, imported only by a battery button: a mains button needs no room.
            from power import Power

            self.power = Power(self)

    # -- state on flash

    def boot(self) -> None:
        floor = self.outbox.load()
        self.counter.load(floor)
        for e in self.outbox.entries:
            self._remember(e)
            self._track(e)
            if e.kind == "alarm":
                self.alarm = e
            self.focus = e
        if self.focus is not None:
            self.fb.show(self.pattern(self.focus))
        log(
            "boot: id",
            self.id,
            "next counter",
            self.counter.next,
            "outbox",
            len(self.outbox),
            "woke by",
            self.woke,
        )
        if self.woke == "button":
            self.on_event(self.logic.woken(self.hal.button(), self.clock))

    def _remember(self, e: store.Entry) -> None:
        if len(self.recent) >= _RECENT:
            self.recent.pop(0)
        self.recent.append(e)

    def _track(self, e: store.Entry) -> None:
        if len(self.sync) >= _SYNC:
            old = self.sync.pop(0)
            self.sync_drops += 1
            log("sync list full: no longer asking for", old.kind, old.c)
        self.sync.append(e)

    def ev(self) -> list:
        # §4.3: [counter, state] of each message still waiting for its final state.
        out = []
        for e in self.sync:
            out.append([e.c, store.SENDING if e.state == store.FAILED else e.state])
        return out

    def _find(self, c: int) -> store.Entry | None:
        e = self.outbox.find(c)
        if e is not None:
            return e
        for e in self.recent:
            if e.c == c:
                return e
        return None

    def _new(self, kind: str, fields: dict) -> store.Entry:
        # Counter, then the exact bytes on flash, then the link may send them.
        c = self.counter.take()
        topic, payload = okproto.encode_up(self.key, self.id, kind, c, fields)
        e = store.Entry(c, kind, store.SENDING, self.up_ms)
        dropped = self.outbox.add(e, topic, payload)
        if dropped is not None:
            log("outbox full: dropped", dropped.kind, dropped.c, dropped.state)
        self._remember(e)
        self._track(e)
        self.wake.set()
        if self.power is not None:
            self.power.on_press()
        log("raised", kind, c)
        return e

    # -- presses and feedback

    def pattern(self, e: store.Entry) -> str:
        s = e.state
        if e.kind == "cancel":
            return "cancelled" if s != store.FAILED and s != store.REJECTED else "failed"
        if s == store.REJECTED:
            return "failed"
        if e.kind == "test" and (s == store.RECEIVED or s == store.ACKED):
            return "test_ok"
        return s

    def on_event(self, ev: str) -> None:
        if ev == ALARM:
            self.alarm = self.focus = self._new("alarm", {"up": self.up_ms})
            self.fb.show("sending")
        elif ev == REPLAY:
            if self.alarm is not None:
                self.fb.show(self.pattern(self.alarm))
        elif ev == CANCEL:
            if self.alarm is not None:
                e = self._new("cancel", {"ref": self.alarm.c, "up": self.up_ms})
                e.ref = self.alarm.c
                self.focus = e
                self.fb.show("cancelled")
        elif ev == TEST:
            self.focus = self._new("test", {"up": self.up_ms})
            self.fb.show("sending")

    def _check_timeouts(self) -> None:
        limit = self.cfg["ack_timeout_s"] * 1000
        now = ticks_ms()
        for e in self.outbox.entries:
            if e.state == store.SENDING and ticks_diff(now, e.t0) >= limit:
                e.state = store.FAILED
                log("no stored ack for", e.kind, e.c, "within", limit, "ms")
                if e is self.focus:
                    self.fb.show("failed")

    async def buttons(self) -> None:
        last = ticks_ms()
        n = 0
        while True:
            now = ticks_ms()
            dt = ticks_diff(now, last)
            last = now
            self.alive = now
            self.up_ms += dt
            self.clock = (self.clock + dt) & CLOCK_MASK
            ev = self.logic.update(self.hal.button(), self.clock)
            if ev is not None:
                self.on_event(ev)
            ev = self.tswitch.update(self.hal.test_switch(), self.clock)
            if ev is not None:
                self.on_event(ev)
            n += 1
            if n >= 25:
                n = 0
                self._check_timeouts()
            await asyncio.sleep_ms(_POLL_MS)

    # -- acks from the gateway

    def on_down(self, topic: bytes, payload: bytes) -> None:
        try:
            body = okproto.open_down(self.key, self.id, topic.decode(), payload)
        except (okproto.ProtocolError, UnicodeError, ValueError) as ex:
            self.bad_acks += 1
            log("bad ack ignored:", ex)
            return
        ref = body["ref"]
        state = body["s"]
        e = self._find(ref)
        if e is None or not self.outbox.advance(e, state):
            self.stale_acks += 1
            return
        log("ack", e.kind, ref, state)
        if store.is_final(e.kind, e.state) and e in self.sync:
            self.sync.remove(e)
        if e is self.focus:
            self.fb.show(self.pattern(e))

    # -- status

    def status(self) -> dict:
        link = self.link
        msgs = []
        for e in self.recent:
            msgs.append({"c": e.c, "kind": e.kind, "state": e.state, "raised_ms": e.raised_ms})
        return {
            "id": self.id,
            "role": "button",
            "fw": self.cfg["fw"],
            "hw": self.hal.hw_id(),
            "connected": link.connected and self.client.up,
            "counter": self.counter.last,
            "outbox": len(self.outbox),
            "drops": self.outbox.drops,
            "oversized": self.client.oversized,
            "ev": self.ev(),
            "ev_drops": self.sync_drops,
            "led": self.fb.name,
            "led_on": self.fb.led,
            "buzzer": self.fb.buzz,
            "recent": msgs,
            "last": self.alarm.state if self.alarm is not None else None,
            "up_ms": self.up_ms,
            "connects": link.connects,
            "bad_acks": self.bad_acks,
            "stale_acks": self.stale_acks,
            "hb_sent": link.hb_sent,
            "errors": self.errors,
            "heap_free": gc.mem_free(),
            "power": self.cfg["power"],
            "woke": self.woke,
        }
