# The link task: the only owner of the device's connection (docs/protocol.md §2, §4.3, §5.2).
#
# Wi-Fi through the HAL, then MQTT to the village broker. On each (re)connect it subscribes to
# its ack topic, sends a heartbeat listing the messages whose final state it still waits for
# (`ev`, §4.3: the gateway answers with any state it has that the device lacks) and sends the
# oldest outbox entry the gateway has not confirmed as stored, one at a time in counter order
# (§5.6); while connected it re-sends that one every resend_s, hands acks to the application
# (PUBACKing them only afterwards), sends heartbeats, pings, and drops the link when the broker
# has been silent for keepalive_s. When the link is lost, or a connect fails short of a
# broker's refusal, it leaves the Wi-Fi access point (hal.net_down(), as mqtt_as does) and
# joins it again before the next connect. Reconnects back off exponentially with jitter, 0.5 s
# up to 30 s.
#
# A speaker's link (SpeakerLink) is the same task with other hooks: it subscribes to its whole
# down/# topic, has no outbox, and sends the broadcast reports waiting in app.pq.out.
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
    # The button's link. A speaker's (SpeakerLink, below) overrides the hooks: sub_topic,
    # hb_fields(), on_connect() and send_due().
    def __init__(self, app, sub_topic: str | None = None, buf_size: int = _BUF) -> None:
        self.app = app
        self.cfg = app.cfg
        self.client = app.client
        self.sub_topic = sub_topic or okproto.topic_down(app.id)
        self.buf = bytearray(buf_size)
        self.connected = False
        self.connects = 0
        self.hb_sent = 0
        self.hb_at = ticks_ms()  # when the last heartbeat went (hb_sent: whether one did)

    def hb_fields(self, connect: bool) -> dict:
        # connect: the heartbeat right after a (re)connect, which always carries ev (§4.3);
        # later ones carry it while something is still waiting.
        app = self.app
        bat, mv = app.hal.battery()
        f = {
            "bat": bat,
            "mv": mv,
            "rssi": app.hal.rssi(),
            "fw": self.cfg["fw"],
            "ob": len(app.outbox),
            "up": app.up_ms,
        }
        if self.client.oversized:
            f["ov"] = self.client.oversized
        if connect or app.sync:
            f["ev"] = app.ev()
        return f

    async def _send_hb(self, connect: bool = False) -> None:
        app = self.app
        fields = self.hb_fields(connect)
        topic, payload = okproto.encode_up(app.key, app.id, "hb", app.counter.take(), fields)
        await self.client.publish(topic.encode(), payload, 0)
        self.hb_sent += 1
        self.hb_at = ticks_ms()

    async def leave(self) -> None:
        # Before a deep sleep: a clean DISCONNECT (no last will) and off the access point.
        await self.client.disconnect()
        self.app.hal.net_down()

    def on_connect(self) -> None:
        # A new connection: everything not yet stored goes out again at once.
        for e in self.app.outbox.entries:
            e.tx = -1

    async def send_due(self) -> None:
        # The oldest entry the gateway has not stored yet, and only that one (§5.6): at once
        # when new or after a reconnect, then every resend_s; the next one goes as soon as this
        # one is stored. So a message that a broker lost after taking it (killed before its
        # autosave) is never overtaken by a newer one: the gateway stores them in counter order.
        # The bytes are the ones on flash.
        outbox = self.app.outbox
        every = self.cfg["resend_s"] * 1000
        mv = memoryview(self.buf)
        for e in outbox.unsent():
            if e not in outbox.entries:
                continue  # dropped or finished meanwhile
            if e.tx >= 0 and ticks_diff(ticks_ms(), e.tx) < every:
                return
            try:
                tl, n = outbox.read(e, self.buf)
            except OSError as ex:
                print("link: outbox read failed for", e.c, ex)
                continue  # a broken entry must not hold the ones behind it
            await self.client.publish(mv[:tl], mv[tl + 1 : n], 1)
            e.tx = ticks_ms()
            return

    async def _serve(self) -> None:
        app = self.app
        cl = self.client
        ka = self.cfg["keepalive_s"] * 1000
        hb_every = self.cfg["hb_interval_s"] * 1000
        await cl.subscribe(self.sub_topic.encode(), 1)
        self.on_connect()
        await self._send_hb(True)
        hb_at = ping_at = ticks_ms()
        while cl.up and app.hal.net_ok():
            app.wake.clear()
            while cl.inbox:
                pid, topic, payload = cl.inbox.pop(0)
                if topic:  # an empty topic: a message too large to take, dropped by the client
                    app.on_down(topic, payload)
                await cl.done(pid)
            await self.send_due()
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
                refused = False
                try:
                    await self.client.connect()
                    self.connected = True
                    self.connects += 1
                    fails = 0
                    print("link: connected to %s:%d" % (m["host"], m["port"]))
                    await self._serve()
                except (OSError, EOFError, MQTTError, asyncio.TimeoutError) as ex:
                    print("link:", type(ex).__name__, ex)
                    # A broker that answered with a refusal was reached: Wi-Fi is fine.
                    refused = isinstance(ex, MQTTError) and ex.code != 0
                finally:
                    self.connected = False
                    await self.client.close()
                if not refused:
                    # The link is lost (or never came up): leave the access point before
                    # joining again, as mqtt_as does, rather than trust an association
                    # that may be stale.
                    self.app.hal.net_down()
            await asyncio.sleep_ms(backoff_ms(fails))
            fails += 1


class SpeakerLink(Link):
    def __init__(self, app) -> None:
        # Its own down/# only: the gateway sends one copy per speaker under the speaker's key,
        # so no village or group topic is needed (and the broker's ACL allows no other).
        super().__init__(app, okproto.PREFIX + "dev/" + app.id + "/down/#", 0)

    def hb_fields(self, connect: bool) -> dict:
        app = self.app
        bat, mv = app.hal.battery()
        f = {"bat": bat, "mv": mv, "rssi": app.hal.rssi(), "fw": self.cfg["fw"], "up": app.up_ms}
        if self.client.oversized:
            f["ov"] = self.client.oversized  # downlinks too large to take, dropped since boot
        return f

    def on_connect(self) -> None:
        pass  # reports wait in app.pq.out until the broker has them: nothing to reset

    async def send_due(self) -> None:
        # Waiting reports (app.pq.out), oldest first, QoS 1 (§8.3). Each is encoded with a fresh
        # counter when it is sent, so one lost with the link goes out again under a new counter
        # (the gateway's watermark would refuse the old one). It leaves the list after its
        # PUBACK; a missing PUBACK drops the link, and it goes again after the reconnect.
        app = self.app
        out = app.pq.out
        while out:
            r = out[0]
            fields = {"id": r[0], "s": r[1]}
            if r[2]:
                fields["why"] = r[2]
            topic, payload = okproto.encode_up(app.key, app.id, "bcr", app.counter.take(), fields)
            await self.client.publish(topic.encode(), payload, 1)
            if r in out:  # it may have been dropped for room meanwhile
                out.remove(r)
