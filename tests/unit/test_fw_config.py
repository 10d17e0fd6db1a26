"""The device's config.json (device_fw/config.py) on the MicroPython unix port: defaults for
everything optional, and clear refusals of what a device cannot run with."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

RUNNER = r"""
import json
import config
try:
    cfg = config.load()
    del cfg["key_bytes"]
    print(json.dumps({"ok": cfg}))
except config.ConfigError as e:
    print(json.dumps({"error": str(e)}))
"""

MINIMAL = {"id": "btn-0007", "key": fw.KEY_HEX, "hal": "sim", "sim_port": 40000}


@pytest.fixture
def load(tmp_path: Path) -> Any:
    script = fw.write_script(tmp_path / "bin", "load.py", RUNNER)
    flash = tmp_path / "flash"
    flash.mkdir()

    def go(cfg: Any) -> dict[str, Any]:
        if cfg is not None:
            (flash / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
        (out,) = fw.micropython_json_lines(script, cwd=flash)
        assert isinstance(out, dict)
        return out

    return go


def test_defaults_fill_everything_optional(load: Any) -> None:
    cfg = load(MINIMAL)["ok"]
    assert cfg["role"] == "button"
    assert (cfg["alarm_hold_ms"], cfg["cancel_hold_ms"], cfg["cancel_window_s"]) == (100, 2000, 120)
    assert (cfg["ack_timeout_s"], cfg["hb_interval_s"], cfg["resend_s"]) == (20, 20, 5)
    assert cfg["mqtt"]["port"] == 1883 and cfg["pins"]["button"] == 32


def test_power_defaults_to_mains_with_battery_periods_ready(load: Any) -> None:
    cfg = load(MINIMAL)["ok"]
    assert cfg["power"] == "mains"
    assert (cfg["checkin_s"], cfg["awake_s"], cfg["awake_after_alarm_s"], cfg["retry_s"]) == (
        3600, 20, 120, 60)
    cfg = load({**MINIMAL, "power": "battery",
                "wifi": {"ssid": "x", "static": ["10.0.0.9", "255.255.255.0", "10.0.0.1", "10.0.0.1"]}})
    assert cfg["ok"]["power"] == "battery"


def test_nested_settings_merge_with_defaults(load: Any) -> None:
    cfg = load({**MINIMAL, "mqtt": {"host": "10.0.0.2"}, "pins": {"buzzer": 13}})["ok"]
    assert (cfg["mqtt"]["host"], cfg["mqtt"]["port"]) == ("10.0.0.2", 1883)
    assert (cfg["pins"]["buzzer"], cfg["pins"]["button"]) == (13, 32)


# ESP32 boot strapping pins: their level at reset picks the boot mode (GPIO0 low: serial
# bootloader), the flash voltage (GPIO12 high: 1.8 V) or the boot log and SDIO timing (2, 5, 15).
STRAPPING = {0, 2, 5, 12, 15}
FLASH = set(range(6, 12))  # the SPI flash on every ESP32-WROOM-32 and ESP32-WROVER module
WROVER_PSRAM = {16, 17}
RTC_INPUTS = {0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39}
INPUT_ONLY = set(range(34, 40))  # no output driver and no internal pull-up


@pytest.mark.parametrize("role", ["button", "speaker"])
def test_default_pins_keep_clear_of_strapping_flash_and_psram(load: Any, role: str) -> None:
    pins = load({**MINIMAL, "role": role})["ok"]["pins"]
    inputs = {name: pins[name] for name in ("button", "test", "battery", "tts_rx")}
    outputs = {name: pins[name] for name in ("red", "green", "buzzer", "tts_tx", "audio")}
    for name, pin in inputs.items():
        if pin is not None:  # a speaker's battery: on mains
            assert pin not in STRAPPING | FLASH, f"input {name} on strapping/flash GPIO{pin}"
    for name in ("tts_tx", "tts_rx"):
        assert pins[name] not in WROVER_PSRAM | FLASH, f"UART {name} on GPIO{pins[name]}"
    for name, pin in outputs.items():
        assert pin not in INPUT_ONLY | FLASH, f"output {name} on GPIO{pin}"
    # The held inputs can wake the chip from deep sleep and have an internal pull-up.
    for name in ("button", "test"):
        assert pins[name] in RTC_INPUTS - INPUT_ONLY, f"{name} on GPIO{pins[name]}"


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (None, "no config.json"),
        ("{not json", "not valid JSON"),
        ({**MINIMAL, "id": "BTN 1"}, "id must be"),
        ({**MINIMAL, "key": "abc"}, "key must be 64 hex"),
        ({**MINIMAL, "key": "zz" * 32}, "key must be 64 hex"),
        ({**MINIMAL, "hal": "pico"}, "hal must be"),
        ({**MINIMAL, "sim_port": 0}, "needs sim_port"),
        ({**MINIMAL, "alarm_hold_ms": -5}, "alarm_hold_ms"),
        ({**MINIMAL, "resend_s": "5"}, "resend_s"),
        ({**MINIMAL, "keepalive_s": 1}, "keepalive_s"),
        ({**MINIMAL, "power": "solar"}, "power must be 'mains' or 'battery'"),
        ({**MINIMAL, "role": "speaker", "power": "battery"}, "a speaker runs on mains"),
        ({**MINIMAL, "power": "battery", "checkin_s": 0}, "at least 1"),
        ({**MINIMAL, "wifi": {"ssid": "x", "static": "10.0.0.9"}}, "wifi.static"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(load: Any, cfg: Any, message: str) -> None:
    out = load(cfg)
    assert message in out.get("error", ""), out
