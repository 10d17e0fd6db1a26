# The link task: the only owner of the device's connection (docs/protocol.md §2, §5.2).
#
# Wi-Fi through the HAL, then MQTT to the village broker. On each (re)connect it subscribes to
# its ack topic, sends a heartbeat and re-sends, in counter order, every outbox entry the
# gateway has not confirmed as stored; while connected it re-sends those every resend_s, hands
# acks to the application (PUBACKing them only afterwards), sends heartbeats, pings, and drops
# the link when the broker has been silent for keepalive_s. Reconnects back off exponentially
# with jitter, 0.5 s up to 30 s.
import asyncio
import random
from time import ticks_diff, ticks_ms

import okproto
from micropython import const
from okmqtt import MQTTError

_WAIT_MS = const(200)  # the loop looks at its timers at least this often
_BACKOFF_MIN_MS = const(500)
_BACKOFF_MAX_MS = const(30000)
_BUF = const(640)


def backoff_ms(fails: int) -> int:
    # Delay before reconnect attempt number fails + 1: exponential, half of it random.
    delay = min(_BACKOFF_MAX_MS, _BACKOFF_MIN_MS << min(fails, 6))
    return delay // 2 + random.getrandbits(16) % (delay // 2 + 1)


class Link:
    def __init__(self, app) -> None:
        self.app = app
        self.cfg = app.cfg
        self.client = app.client
        self.buf = bytearray(_BUF)
        self.connected = False
        self.connects = 0
        self.hb_sent = 0

    async def _send_hb(self) -> None:
        app = self.app
        bat, mv = app.hal.battery()
        fields = {
            "bat": bat,
            "mv": mv,
            "rssi": app.hal.rssi(),
            "fw": self.cfg["fw"],
            "ob": len(app.outbox),
            "up": app.up_ms,
        }
        topic, payload = okproto.encode_up(app.key, app.id, "hb", app.counter.take(), fields)
        await self.client.publish(topic.encode(), payload, 0)
        self.hb_sent += 1

    async def _send_due(self) -> None:
        # Every entry the gateway has not stored yet, in counter order: at once when new or
        # after a reconnect, then every resend_s. The bytes are the ones on flash.
        outbox = self.app.outbox
        every = self.cfg["resend_s"] * 1000
        mv = memoryview(self.buf)
        for e in outbox.unsent():
            if e.tx >= 0 and ticks_diff(ticks_ms(), e.tx) < every:
                continue
            if e not in outbox.entries:
                continue  # dropped or finished while an earlier one was being sent
            try:
                tl, n = outbox.read(e, self.buf)
            except OSError as ex:
                print("link: outbox read failed for", e.c, ex)
                continue
            await self.client.publish(mv[:tl], mv[tl + 1 : n], 1)
            e.tx = ticks_ms()

    async def _serve(self) -> None:
        app = self.app
        cl = self.client
        ka = self.cfg["keepalive_s"] * 1000
        hb_every = self.cfg["hb_interval_s"] * 1000
        await cl.subscribe(okproto.topic_down(app.id).encode(), 1)
        for e in app.outbox.entries:
            e.tx = -1
        await self._send_hb()
        hb_at = ping_at = ticks_ms()
        while cl.up and app.hal.net_ok():
            app.wake.clear()
            while cl.inbox:
                pid, topic, payload = cl.inbox.pop(0)
                app.on_down(topic, payload)
                await cl.done(pid)
            await self._send_due()
            now = ticks_ms()
            if hb_every and ticks_diff(now, hb_at) >= hb_every:
                hb_at = now
                await self._send_hb()
            if ticks_diff(now, ping_at) >= ka // 2:
                ping_at = now
                await cl.ping()
            if cl.idle_ms() > ka:
                raise OSError("broker silent for %d ms" % cl.idle_ms())
            try:
                await asyncio.wait_for_ms(app.wake.wait(), _WAIT_MS)
            except asyncio.TimeoutError:
                pass

    async def run(self) -> None:
        fails = 0
        m = self.cfg["mqtt"]
        while True:
            if await self.app.hal.net_up():
                try:
                    await self.client.connect()
                    self.connected = True
                    self.connects += 1
                    fails = 0
                    print("link: connected to %s:%d" % (m["host"], m["port"]))
                    await self._serve()
                except (OSError, EOFError, MQTTError, asyncio.TimeoutError) as ex:
                    print("link:", type(ex).__name__, ex)
                finally:
                    self.connected = False
                    await self.client.close()
            await asyncio.sleep_ms(backoff_ms(fails))
            fails += 1
