# Simulated hardware for the MicroPython unix port: pins, LEDs and buzzer in RAM, the network
# always up (unless switched off), and a control channel on 127.0.0.1:<sim_port> that tests,
# the demo and `onekey sim` use to press the buttons and read the status.
#
# Line protocol, one command per line, one reply line each:
#   press <ms>      hold the alarm button down for ms, then release; "ok" after the release
#   test            press the test switch; "ok"
#   status          one JSON object (App.status())
#   net on|off      connect or cut the simulated Wi-Fi; "ok"
#   battery <pct>   set the simulated battery level; "ok"
# Anything else gets "error ...".
import asyncio
import gc
import json
import sys

from micropython import const

_MAX_PRESS_MS = const(60000)
_SETTLE_MS = const(60)  # after a release, long enough for the debounce to see it


class SimHal:
    def __init__(self, cfg: dict) -> None:
        self.port = cfg["sim_port"]
        self.btn = False
        self.tst = False
        self.led_colour: str | None = None
        self.buzz = False
        self.net = True
        self.bat = 95
        self.app = None
        self._server: object = None

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

    # -- network

    async def net_up(self) -> bool:
        return self.net

    def net_ok(self) -> bool:
        return self.net

    def rssi(self) -> int | None:
        return -55 if self.net else None

    # -- system

    def feed(self) -> None:
        pass

    def reset(self) -> None:
        sys.exit(1)

    async def start(self, app) -> None:
        self.app = app
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        print("sim: control channel on 127.0.0.1:%d" % self.port)

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
                return json.dumps(self.app.status())
            if cmd == "press":
                ms = int(words[1]) if len(words) > 1 else 150
                if not 0 < ms <= _MAX_PRESS_MS:
                    return "error press takes 1..%d ms" % _MAX_PRESS_MS
                await self._hold(ms, False)
                return "ok"
            if cmd == "test":
                await self._hold(150, True)
                return "ok"
            if cmd == "net" and len(words) == 2 and words[1] in ("on", "off"):
                self.net = words[1] == "on"
                if self.app is not None:
                    self.app.wake.set()
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
                reply = await self.command(line.decode().strip())
                w.write(reply.encode())
                w.write(b"\n")
                await w.drain()
        except (OSError, UnicodeError):
            pass
        finally:
            w.close()
            await w.wait_closed()
