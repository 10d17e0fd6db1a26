# Simulated hardware for the MicroPython unix port: pins, LEDs and buzzer in RAM, the network
# always up (unless switched off), and a control channel on 127.0.0.1:<sim_port> that tests,
# the demo and `onekey sim` use to press the buttons and read the status.
# For a speaker: a simulated TTS module behind the "UART" (sim_tts.SimTts) that takes real time to
# speak and logs every frame to tts.log, the tone output in RAM, and played.log: one JSON line
# per play {"id", "clip", "text", "pri", "at", "result"}; both logs in the working directory.
#
# Line protocol, one command per line, one reply line each:
#   press <ms>      (button) hold the alarm button down for ms, then release; "ok" after it
#   test            (button) press the test switch; "ok"
#   played          (speaker) the played log as one JSON list, oldest first
#   status          one JSON object (App.status())
#   net on|off      connect or cut the simulated Wi-Fi; "ok"
#   net             "JOINS LEAVES": how often the device joined and left the access point
#   battery <pct>   set the simulated battery level; "ok"
#   uptime <ms>     set the device's uptime (the button's press clock too, wrapped at 2**30):
#                   tests take it past 2**30, the small-integer limit of a 32-bit build; "ok"
# The status reply also carries "ticks_ms", the device's ticks_ms() (tests that start the
# device near the 2**30 wrap of an ESP32's ticks wait on it).
# Anything else gets "error ...".
import asyncio
import gc
import json
import sys
from time import ticks_ms

from micropython import const

_MAX_PRESS_MS = const(60000)
_SETTLE_MS = const(60)  # after a release, long enough for the debounce to see it
PLAYED_LOG = "played.log"


class SimHal:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.role = cfg["role"]
        self.port = cfg["sim_port"]
        self.btn = False
        self.tst = False
        self.led_colour: str | None = None
        self.buzz = False
        self.net = True  # the simulated radio: `net on|off`
        self.joins = 0  # joined to the access point: net_up; joined now while joins > leaves
        self.leaves = 0  # left it: net_down
        self.bat = 95
        self.app = None
        self._server: object = None
        self._tts: object = None  # a speaker's simulated TTS module (sim_tts.SimTts)
        self.tone_hz = 0  # the tone sounding now (0: silence)
        self._release_after = 0  # a wake by the button: release it this long after boot

    # -- inputs and outputs

    def button(self) -> bool:
        return self.btn

    def test_switch(self) -> bool:
        return self.tst

    def led(self, colour: str | None) -> None:
        self.led_colour = colour

    def buzzer(self, on: bool) -> None:
        self.buzz = on

    def battery(self) -> tuple[int | None, int | None]:
        return self.bat, 3300 + self.bat * 9

    def hw_id(self) -> str:
        return "sim"

    # -- speaker outputs

    def tts_uart(self):
        if self._tts is None:
            # Its own module, imported only by a speaker: a button's heap has no room to spare.
            from sim_tts import SimTts

            self._tts = SimTts(
                self.cfg["sim_ms_per_char"],
                self.cfg["sim_min_speak_ms"],
                self.cfg["tts_module"] == "syn6288",
            )
        return self._tts

    def tone(self, hz: int) -> None:
        self.tone_hz = hz

    def record_play(self, rec: dict) -> None:
        # One JSON line, written a field and 64 characters of text at a time: a 500-character
        # text in one piece would need a 1.5 KB block, which a speaker's heap may not have.
        with open(PLAYED_LOG, "a") as f:
            sep = "{"
            for k in rec:
                v = rec[k]
                f.write(sep + json.dumps(k) + ": ")
                sep = ", "
                if isinstance(v, str):
                    f.write('"')
                    for i in range(0, len(v), 64):
                        f.write(json.dumps(v[i : i + 64])[1:-1])
                    f.write('"')
                else:
                    f.write(json.dumps(v))
            f.write("}\n")

    # -- network

    async def net_up(self) -> bool:
        # Joins the simulated access point when the radio is on (`net on`) and not joined.
        if self.net and self.joins == self.leaves:
            self.joins += 1
        return self.net

    def net_down(self) -> None:
        if self.joins > self.leaves:
            self.leaves += 1

    def net_ok(self) -> bool:
        return self.net and self.joins > self.leaves

    def rssi(self) -> int | None:
        return -55 if self.net else None

    # -- system

    def feed(self) -> None:
        pass

    def wake_reason(self) -> str:
        # Deep sleep on the unix port: sim_sleep.py (imported only here, and only by a button).
        from sim_sleep import wake_reason

        return wake_reason(self)

    def deep_sleep(self, ms: int, awake_ms: int) -> None:
        from sim_sleep import deep_sleep

        deep_sleep(ms, awake_ms)

    def reset(self) -> None:
        sys.exit(1)

    async def start(self, app) -> None:
        self.app = app
        if self._release_after:
            asyncio.create_task(self._release(self._release_after))
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        print("sim: control channel on 127.0.0.1:%d" % self.port)

    async def _release(self, ms: int) -> None:
        await asyncio.sleep_ms(ms)
        self.btn = False

    # -- control channel

    async def _hold(self, ms: int, test: bool) -> None:
        if test:
            self.tst = True
        else:
            self.btn = True
        await asyncio.sleep_ms(ms)
        if test:
            self.tst = False
        else:
            self.btn = False
        await asyncio.sleep_ms(_SETTLE_MS)

    async def command(self, line: str) -> str:
        words = line.split()
        if not words:
            return "error empty command"
        cmd = words[0]
        try:
            if cmd == "status" and self.app is not None:
                gc.collect()  # the reply is the largest single allocation the device makes
                st = self.app.status()
                st["ticks_ms"] = ticks_ms()
                return json.dumps(st)
            if cmd in ("press", "test") and self.role != "button":
                return "error %s: this device is a %s, it has no button" % (cmd, self.role)
            if cmd == "played" and self.role != "speaker":
                return "error played: this device is a %s, it plays nothing" % self.role
            if cmd == "press":
                ms = int(words[1]) if len(words) > 1 else 150
                if not 0 < ms <= _MAX_PRESS_MS:
                    return "error press takes 1..%d ms" % _MAX_PRESS_MS
                await self._hold(ms, False)
                return "ok"
            if cmd == "test":
                await self._hold(150, True)
                return "ok"
            if cmd == "net" and len(words) == 1:
                return "%d %d" % (self.joins, self.leaves)
            if cmd == "net" and len(words) == 2 and words[1] in ("on", "off"):
                self.net = words[1] == "on"
                if self.app is not None:
                    self.app.wake.set()
                return "ok"
            if cmd == "uptime" and len(words) == 2 and self.app is not None:
                ms = int(words[1])
                if ms < 0:
                    return "error uptime takes a non-negative number of ms"
                self.app.up_ms = ms
                if self.role == "button":
                    self.app.clock = ms & 0x3FFFFFFF  # presslogic.CLOCK_MASK
                return "ok"
            if cmd == "battery" and len(words) == 2:
                pct = int(words[1])
                if not 0 <= pct <= 100:
                    return "error battery takes 0..100"
                self.bat = pct
                return "ok"
        except ValueError:
            return "error bad number"
        return "error unknown command: " + cmd[:20]

    async def _serve(self, r, w) -> None:
        try:
            while True:
                line = await r.readline()
                if not line:
                    break
                text = line.decode().strip()
                if text == "played" and self.role == "speaker":
                    await self._send_played(w)
                    continue
                reply = await self.command(text)
                w.write(reply.encode())
                w.write(b"\n")
                await w.drain()
        except (OSError, UnicodeError):
            pass
        finally:
            w.close()
            await w.wait_closed()

    async def _send_played(self, w) -> None:
        # The played log as one JSON list on one line, streamed 256 bytes at a time (the log
        # outgrows a small heap long before it outgrows the flash). Its records are JSON lines,
        # so each newline becomes a comma, except the last.
        w.write(b"[")
        try:
            # MicroPython has no asynchronous files; 256 bytes of flash are quick to read.
            f = open(PLAYED_LOG, "rb")  # noqa: ASYNC230
        except OSError:
            f = None
        if f is not None:
            with f:
                held = b""
                while True:
                    chunk = f.read(256)
                    if not chunk:
                        break
                    out = held + chunk.replace(b"\n", b",")
                    held = b""
                    if out.endswith(b","):
                        out, held = out[:-1], b","
                    w.write(out)
                    await w.drain()
        w.write(b"]\n")
        await w.drain()
