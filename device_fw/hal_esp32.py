# ESP32 hardware, by role.
# Button: alarm button and recessed test switch to ground (internal pull-ups), a red/green LED
# (both lit = amber), an active buzzer.
# Speaker: a serial TTS module (an XFS5152CE or a SYN6288, tts.py) on UART 2, and a tone output by PWM on
# the audio pin into the amplifier (clips).
# Both: battery voltage through a divider on an ADC pin (or mains), Wi-Fi station, and the
# hardware watchdog fed by main.py's loop. Default pins and why: config.py, docs/firmware.md "Pins".
import asyncio
from binascii import hexlify

import machine
import network
from micropython import const

_WIFI_WAIT_MS = const(20000)
_BAT_EMPTY_MV = const(3300)
_BAT_FULL_MV = const(4200)
_TTS_UART = const(2)  # UART 0 is the USB console, UART 1 shares pins with the SPI flash
_TTS_TXBUF = const(512)  # a whole 200-byte-text frame fits: write() returns at once
_TTS_RXBUF = const(256)
_HALF_DUTY = const(32768)


class Esp32Hal:
    def __init__(self, cfg: dict) -> None:
        pins = cfg["pins"]
        self.wifi = cfg["wifi"]
        self.wdt_ms = cfg["wdt_s"] * 1000
        if cfg["role"] == "speaker":
            self._init_speaker(cfg)
        else:
            self._init_button(pins)
        self._adc = None
        self._div = pins.get("battery_div", 2)
        if pins.get("battery") is not None:
            self._adc = machine.ADC(machine.Pin(pins["battery"]), atten=machine.ADC.ATTN_11DB)
        self._wlan = network.WLAN(network.STA_IF)
        self._wdt: machine.WDT | None = None

    def _init_button(self, pins: dict) -> None:
        self._btn = machine.Pin(pins["button"], machine.Pin.IN, machine.Pin.PULL_UP)
        self._tst = machine.Pin(pins["test"], machine.Pin.IN, machine.Pin.PULL_UP)
        self._red = machine.Pin(pins["red"], machine.Pin.OUT, value=0)
        self._green = machine.Pin(pins["green"], machine.Pin.OUT, value=0)
        self._buzz = machine.Pin(pins["buzzer"], machine.Pin.OUT, value=0)

    def _init_speaker(self, cfg: dict) -> None:
        pins = cfg["pins"]
        self._uart = machine.UART(
            _TTS_UART,
            baudrate=cfg["tts_baud"],
            tx=pins["tts_tx"],
            rx=pins["tts_rx"],
            txbuf=_TTS_TXBUF,
            rxbuf=_TTS_RXBUF,
        )
        self._pwm = machine.PWM(machine.Pin(pins["audio"]), freq=1000, duty_u16=0)

    # -- speaker outputs

    def tts_uart(self) -> machine.UART:
        # The module's status replies (busy 0x4E / idle 0x4F) come back on this UART.
        return self._uart

    def tone(self, hz: int) -> None:
        # A square wave at hz into the amplifier; 0 is silence.
        if hz > 0:
            self._pwm.freq(hz)
            self._pwm.duty_u16(_HALF_DUTY)
        else:
            self._pwm.duty_u16(0)

    def record_play(self, rec: dict) -> None:
        pass  # the simulation keeps a played log; on the board the reports are the record

    # -- inputs and outputs

    def button(self) -> bool:
        return self._btn.value() == 0

    def test_switch(self) -> bool:
        return self._tst.value() == 0

    def led(self, colour: str | None) -> None:
        self._red.value(1 if colour == "red" or colour == "amber" else 0)
        self._green.value(1 if colour == "green" or colour == "amber" else 0)

    def buzzer(self, on: bool) -> None:
        self._buzz.value(1 if on else 0)

    def battery(self) -> tuple[int | None, int | None]:
        # (percent, millivolts) of a single Li-ion cell; (None, None) on mains.
        if self._adc is None:
            return None, None
        mv = self._adc.read_uv() * self._div // 1000
        pct = (mv - _BAT_EMPTY_MV) * 100 // (_BAT_FULL_MV - _BAT_EMPTY_MV)
        return max(0, min(100, pct)), mv

    def hw_id(self) -> str:
        return hexlify(machine.unique_id()).decode()

    # -- network

    async def net_up(self) -> bool:
        w = self._wlan
        if w.isconnected():
            return True
        if not self.wifi.get("ssid"):
            return False
        w.active(True)
        static = self.wifi.get("static")
        if static:
            # A fixed address skips DHCP: a battery button's wake is shorter by a second or more.
            w.ifconfig(tuple(static))
        try:
            w.connect(self.wifi["ssid"], self.wifi.get("psk") or "")
        except OSError as ex:
            print("wifi: connect failed:", ex)
        waited = 0
        while waited < _WIFI_WAIT_MS:
            if w.isconnected():
                print("wifi: up", w.ifconfig()[0])
                return True
            await asyncio.sleep_ms(200)
            waited += 200
        print("wifi: no connection after", _WIFI_WAIT_MS, "ms")
        try:
            w.disconnect()
        except OSError:
            pass
        return False

    def net_down(self) -> None:
        # Leaves the access point after a lost link, so that net_up() starts a fresh
        # association instead of trusting one that may be stale (mqtt_as does the same).
        try:
            self._wlan.disconnect()
        except OSError:
            pass  # the interface was not started

    def net_ok(self) -> bool:
        return self._wlan.isconnected()

    def rssi(self) -> int | None:
        try:
            return self._wlan.status("rssi")
        except (OSError, ValueError):
            return None

    # -- system

    def feed(self) -> None:
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self) -> None:
        machine.reset()

    def wake_reason(self) -> str:
        r = machine.wake_reason()
        if r == machine.EXT0_WAKE:
            return "button"
        if r == machine.TIMER_WAKE:
            return "timer"
        return "power"

    def deep_sleep(self, ms: int, awake_ms: int) -> None:
        # Wakes on the alarm button (ext0: its RTC GPIO pulled low) or after ms. The RTC
        # domain keeps the pin's pull-up powered while the rest of the chip is off. RAM is
        # lost: the next wake boots from main.py, with the outbox and counter on flash.
        import esp32

        self._wlan.active(False)
        self._btn.init(machine.Pin.IN, machine.Pin.PULL_UP)
        esp32.wake_on_ext0(self._btn, esp32.WAKEUP_ALL_LOW)
        machine.deepsleep(ms)

    async def start(self, app) -> None:
        # The watchdog starts last: from here on main.py's loop must feed it.
        self._wdt = machine.WDT(timeout=self.wdt_ms)
