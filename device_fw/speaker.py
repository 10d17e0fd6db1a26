# The speaker application: broadcasts from the gateway (docs/protocol.md §8.2) checked,
# queued (playqueue.py), played (tts.py) and reported (§8.3).
#
# Hardware comes in through `hal` (hal_esp32 or hal_sim); nothing here imports machine or
# network. Tasks (started by main.py under a supervisor):
#   ticker()    uptime and the clock; drops broadcasts that expire while they wait
#   player()    plays the head of the queue: clip, then text, `rep` times; stops at once when
#               the queue says so (preempted or cancelled)
#   link.run()  the connection, with the speaker's hooks (link.SpeakerLink): its own down/#
#               topic, heartbeats, and the reports waiting in pq.out
# Downlinks are checked in the MQTT reader as they arrive (okmqtt's handler): a 3 KB frame is
# checked in place, and PUBACKed only once it is on flash.
#
# Flash (the working directory):
#   bcs     {"c": highest broadcast counter accepted, "done": [[id, final state], ...]},
#           written atomically before the PUBACK, so a replay fails after a reboot too
#   bq/<c>  the body of each broadcast waiting or playing, written before bcs; played from
#           here (RAM keeps what ordering needs) and queued again after a reboot
#   ctr     the uplink counter (store.Counter), shared by heartbeats and reports
# Kept compact: on a small heap every function and attribute costs room that a 3 KB frame
# needs while it is checked.
import asyncio
import gc
import json
import os
from time import ticks_diff, ticks_ms

import okproto
import store
from link import SpeakerLink
from micropython import const
from okmqtt import Client
from playqueue import FAILED, PLAYED, Bc, PlayQueue
from tts import MODULES, Tts, TtsError

_TICK_MS = const(250)
# A broadcast frame (MAX_BC_PAYLOAD) with its topic (at most 50 bytes) and packet id.
RX_SIZE = okproto.MAX_BC_PAYLOAD + 64
_STATE = "bcs"


def log(*args: object) -> None:
    print("[%s]" % ticks_ms(), *args)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def open_frame(key: bytes, device_id: str, topic: str, payload: memoryview) -> dict:
    # okproto.open_down, step by step with okproto's own checks in its order (§3.4), so that
    # only one copy of a 3 KB body is alive at a time: open_down keeps the body while it builds
    # TOPIC 0 BODY for the MAC, and a small, fragmented heap may not have two such blocks.
    # A test runs every golden vector through both and expects the same outcome.
    n = okproto.MAC_HEX_LEN + 1
    if len(payload) > okproto.MAX_BC_PAYLOAD:
        raise okproto.ProtocolError(okproto.OVERSIZED, "%d bytes" % len(payload))
    dev, direction, kind = okproto.parse_topic(topic)
    if direction != "down" or dev != device_id:
        raise okproto.ProtocolError(okproto.BAD_TOPIC, "not this device's downlink topic")
    limit = okproto.MAX_BC_PAYLOAD if kind == "bc" else okproto.MAX_PAYLOAD
    # split_frame's checks without its copy of the body.
    mac = okproto.frame_mac(payload, limit)
    okproto.check_mac(key, topic, mac, payload[n:])  # type: ignore[arg-type]
    return okproto.parse_body(bytes(payload[n:]), device_id, kind)


class App:
    def __init__(self, cfg: dict, hal) -> None:
        self.cfg = cfg
        self.hal = hal
        self.id = cfg["id"]
        self.key = cfg["key_bytes"]
        m = cfg["mqtt"]
        # main.py allocates the receive buffer before the modules load, while the heap still
        # has a free block that size.
        rx = cfg.get("rx_buf") or bytearray(RX_SIZE)
        self.client = Client(
            self.id, m["host"], m["port"], m.get("user"), m.get("password"), cfg["keepalive_s"],
            okproto.topic_up(self.id, "will"), b"offline", rx, self.on_message,
        )  # fmt: skip
        self.wake = self.client.wake
        self.counter = store.Counter()
        self.pq = PlayQueue(cfg["queue_cap"])
        self.tts = Tts(hal.tts_uart(), hal.tone, cfg["tts_chunk_bytes"], MODULES.index(cfg["tts_module"]))
        self.play_evt = asyncio.Event()
        self.bc_c = 0  # the highest broadcast counter accepted (§8.2.1)
        self._saved_c = 0  # bc_c as the state file has it
        self.state_writes = 0  # writes of the state file since boot (status: flash wear)
        self.clock = 0  # Unix ms at clock_at, from the gateway; 0: not set since boot
        self.clock_at = ticks_ms()
        self.refused: dict = {}  # reason -> count
        self.up_ms = 0
        self.alive = ticks_ms()  # last pass of the ticker, for the watchdog
        self.errors = 0
        self.link = SpeakerLink(self)

    def now(self) -> int:
        # Unix ms; 0 while no downlink has set the clock since boot.
        if not self.clock:
            return 0
        return self.clock + ticks_diff(ticks_ms(), self.clock_at)

    def _save(self) -> None:
        # The watermark and the final states, written only when one of them changed (a
        # LittleFS write erases flash; a report waiting out an outage must not rewrite it
        # every tick), then the bodies no longer needed; the link is woken for the reports.
        pq = self.pq
        if pq.changed or self.bc_c != self._saved_c:
            try:
                store.write_atomic(_STATE, json.dumps({"c": self.bc_c, "done": pq.done}).encode())
                self.state_writes += 1
                pq.changed = False
                self._saved_c = self.bc_c
                for bc in pq.finished:
                    _remove("bq/%d" % bc.c)
                pq.finished = []
            except OSError as ex:
                log("flash:", ex)  # tried again on the next tick
        if pq.out:
            self.wake.set()

    def boot(self) -> None:
        self.counter.load()
        pq = self.pq
        try:
            with open(_STATE) as f:
                st = json.load(f)
            self.bc_c = st["c"]
            pq.done = [(d[0], d[1]) for d in st["done"]]
        except (OSError, ValueError, KeyError, TypeError, IndexError) as ex:
            log("flash:", _STATE, ex)  # first boot, or a damaged file: the bodies still count
        self._saved_c = self.bc_c
        try:
            names = os.listdir("bq")
        except OSError:
            os.mkdir("bq")
            names = []
        for name in names:
            path = "bq/" + name
            try:
                with open(path) as f:
                    bc = Bc(json.load(f))
                # A body is written before the watermark: it counts even if bcs missed it.
                self.bc_c = max(self.bc_c, int(name))
            except (OSError, ValueError, KeyError, TypeError):
                _remove(path)  # a write cut short by a power loss
                continue
            if pq.state(bc.id) is None:
                pq.insert(bc)
            else:
                _remove(path)  # it ended before the power loss
        log("boot: id", self.id, "bc counter", self.bc_c, "queued", len(pq.queue))

    def on_message(self, topic: memoryview, payload: memoryview) -> None:
        # The MQTT reader's handler for each downlink, in arrival order (§8.2.1); the frame is
        # PUBACKed when this returns. `payload` is valid only during the call.
        why = None
        try:
            body = open_frame(self.key, self.id, bytes(topic).decode(), payload)
        except okproto.ProtocolError as ex:
            why = ex.reason
        except (UnicodeError, ValueError):
            why = okproto.MALFORMED
        else:
            c = body["c"]
            if body["t"] != "bc":
                why = "not_bc"  # acks answer nothing a speaker sends, and set no clock
            elif c <= self.bc_c:
                why = okproto.REPLAY  # a late or replayed frame: the clock stays as it is
            else:
                self.bc_c = c
                ts = body.get("ts")
                if ts is not None:
                    # The gateway's time as it sent this, the newest frame (§8.2.1): taken as
                    # it is, so a gateway whose clock was corrected brings the speaker along.
                    self.clock = ts
                    self.clock_at = ticks_ms()
                elif c > self.now():
                    # An older gateway sends no ts: its counter is its time; forward only.
                    self.clock = c
                    self.clock_at = ticks_ms()
                if self.pq.offer(body, self.now()) is not None:
                    path = "bq/%d" % c
                    try:
                        with open(path + ".tmp", "wb") as f:
                            f.write(payload[okproto.MAC_HEX_LEN + 1 :])
                        os.rename(path + ".tmp", path)
                    except OSError as ex:
                        log("flash:", ex)
                self._save()
                self.play_evt.set()
                log("broadcast", body["id"], body["mt"], "c", c)
        if why:
            self.refused[why] = self.refused.get(why, 0) + 1
            log("downlink refused:", why)

    async def ticker(self) -> None:
        last = ticks_ms()
        n = 0
        while True:
            now = ticks_ms()
            self.up_ms += ticks_diff(now, last)
            last = self.alive = now
            if self.clock:
                # Re-based every tick: ticks_diff holds only for days (ESP32 ticks wrap).
                self.clock += ticks_diff(now, self.clock_at)
                self.clock_at = now
                n += 1
                if n >= 4:
                    n = 0
                    self.pq.expire(self.clock)
                    if self.pq.changed or self.pq.out:
                        self._save()
            await asyncio.sleep_ms(_TICK_MS)

    async def player(self) -> None:
        pq = self.pq
        while True:
            # Broadcasts reloaded after a reboot wait until a downlink has set the clock:
            # without it their expiry cannot be judged.
            bc = pq.next(self.now()) if self.clock else None
            if bc is None:
                self.play_evt.clear()
                try:
                    await asyncio.wait_for_ms(self.play_evt.wait(), 1000)
                except asyncio.TimeoutError:
                    pass
                continue
            self._save()  # "playing" goes out now
            gc.collect()
            result = PLAYED
            why = None
            text = ""
            at = self.now()
            try:
                # MicroPython has no asynchronous files; reading 3 KB of flash is quick.
                with open("bq/%d" % bc.c) as f:  # noqa: ASYNC230
                    text = json.load(f).get("text") or ""
                log("playing", bc.id, "pri", bc.pri, "chars", len(text))
                await self.tts.play(
                    bc.clip, text, bc.rep, lambda: pq.current is not bc, lambda: bc.exp <= self.now()
                )
            except (OSError, ValueError) as ex:
                result, why = FAILED, "flash"
                log("flash:", ex)
            except TtsError as ex:
                result, why = FAILED, "tts"
                log("tts:", ex)
            if pq.current is bc:
                pq.finish(bc, result, why)
            else:
                result = bc.state  # preempted or cancelled: reported when it happened
            self._save()
            log("play of", bc.id, "ended:", result)
            self.hal.record_play(
                {"id": bc.id, "clip": bc.clip, "text": text, "pri": bc.pri, "at": at, "result": result}
            )
            text = ""  # dropped while the player waits: the next frame needs the heap

    def status(self) -> dict:
        pq = self.pq
        cur = pq.current
        bcs = {}
        for i, s in pq.done:
            bcs[i] = s
        for bc in pq.queue:
            bcs[bc.id] = bc.state
        if cur:
            bcs[cur.id] = cur.state
        return {
            "id": self.id, "role": "speaker", "fw": self.cfg["fw"], "village": self.cfg.get("village"),
            "connected": self.link.connected and self.client.up, "net": self.hal.net_ok(),
            "counter": self.counter.last, "playing": cur.id if cur else None,
            "queue": [bc.id for bc in pq.queue], "bcs": bcs, "bc_counter": self.bc_c,
            "clock": self.now() or None, "reports": len(pq.out), "refused": self.refused,
            "oversized": self.client.oversized, "state_writes": self.state_writes,
            "connects": self.link.connects, "up_ms": self.up_ms, "errors": self.errors,
            "heap_free": gc.mem_free(),
        }  # fmt: skip
