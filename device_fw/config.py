# The device's config.json (written at provisioning), with defaults for everything optional.
import json

import okproto

DEFAULTS = {
    "role": "button",
    "hal": "esp32",
    "sim_port": 0,
    "wifi": {"ssid": "", "psk": ""},
    "mqtt": {"host": "192.168.4.1", "port": 1883, "user": None, "password": None},
    # Pins for an ESP32-WROOM-32 or ESP32-WROVER(-E) board (docs/firmware.md, "Pins"). Inputs a
    # person holds avoid the strapping pins 0, 2, 5, 12, 15 (GPIO0 held at reset starts the serial
    # bootloader) and sit on RTC GPIOs with internal pull-ups (32, 33) so that they can wake the
    # chip from deep sleep. The UART avoids 6-11 (SPI flash) and 16/17 (the WROVER's PSRAM).
    "pins": {
        "button": 32,
        "test": 33,
        "red": 25,
        "green": 26,
        "buzzer": 27,
        "battery": 34,
        "battery_div": 2,
        # speaker: the TTS module's UART (ESP32 TX to module RX and back) and the audio output
        "tts_tx": 19,
        "tts_rx": 18,
        "audio": 25,
    },
    # "mains" (always awake, heartbeat every hb_interval_s) or "battery" (deep sleep between
    # check-ins every checkin_s; docs/firmware.md "Battery button"). Speakers are mains only.
    "power": "mains",
    "checkin_s": 3600,
    "awake_s": 20,  # a battery button's longest wake without a press
    "awake_after_alarm_s": 120,  # awake after a press: feedback and the cancel window
    "retry_s": 60,  # sleep while something waits for `stored`
    "wdt_s": 30,
    "alarm_hold_ms": 100,
    "cancel_hold_ms": 2000,
    "cancel_window_s": 120,
    "debounce_ms": 20,
    "ack_timeout_s": 20,
    # A mains device is reported lost at the centre within 90 s (EN 50136 T5) when the gateway
    # calls it lost after 3 missed heartbeats: 3 x 20 s + forwarding (docs/gateway.md).
    "hb_interval_s": 20,
    "keepalive_s": 30,
    "resend_s": 5,
    "fw": "btn-1.0.0",
    # speaker
    "tts_module": "xfs5152",  # whose frames the speaker sends: "xfs5152" (XFS5152CE) or "syn6288"
    "tts_baud": 9600,
    "tts_chunk_bytes": 200,  # text bytes (2 per character) per synthesis frame
    "queue_cap": 8,
    "sim_ms_per_char": 20,  # the simulated TTS module's speech rate
    "sim_min_speak_ms": 100,
}

# What a speaker has different from a button: its firmware name, and mains power.
SPEAKER_DEFAULTS = {"fw": "spk-1.0.0", "pins": {"battery": None}}
ROLES = ("button", "speaker")


class ConfigError(Exception):
    pass


def _merge(base: dict, over: dict) -> dict:
    out = {}
    for k in base:
        out[k] = base[k]
    for k in over:
        v = over[k]
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            v = _merge(base[k], v)
        out[k] = v
    return out


def load(path: str = "config.json") -> dict:
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError("no " + path + " in the working directory: provision the device") from None
    except ValueError:
        raise ConfigError(path + " is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ConfigError(path + " must hold a JSON object")
    base = DEFAULTS
    if raw.get("role") == "speaker":
        base = _merge(DEFAULTS, SPEAKER_DEFAULTS)
    cfg = _merge(base, raw)
    if cfg["role"] not in ROLES:
        raise ConfigError("role must be 'button' or 'speaker'")
    if not okproto.valid_id(cfg.get("id")):
        raise ConfigError("id must be 1-32 of a-z, 0-9, '-'")
    try:
        cfg["key_bytes"] = okproto.key_from_hex(cfg.get("key") or "")
    except ValueError:
        raise ConfigError("key must be 64 hex digits") from None
    for name in (
        "alarm_hold_ms",
        "cancel_hold_ms",
        "cancel_window_s",
        "debounce_ms",
        "ack_timeout_s",
        "hb_interval_s",
        "keepalive_s",
        "resend_s",
        "sim_port",
        "wdt_s",
        "tts_baud",
        "tts_chunk_bytes",
        "queue_cap",
        "sim_ms_per_char",
        "sim_min_speak_ms",
        "checkin_s",
        "awake_s",
        "awake_after_alarm_s",
        "retry_s",
    ):
        v = cfg[name]
        if type(v) is not int or v < 0:
            raise ConfigError(name + " must be a non-negative integer")
    if cfg["hal"] not in ("sim", "esp32"):
        raise ConfigError("hal must be 'sim' or 'esp32'")
    if cfg["hal"] == "sim" and not cfg["sim_port"]:
        raise ConfigError("a simulated device needs sim_port")
    if cfg["keepalive_s"] < 2:
        raise ConfigError("keepalive_s must be at least 2")
    if not 2 <= cfg["tts_chunk_bytes"] <= 4000 or cfg["tts_chunk_bytes"] % 2:
        raise ConfigError("tts_chunk_bytes must be even, 2..4000 (two bytes per character)")
    if cfg["tts_module"] not in ("xfs5152", "syn6288"):
        raise ConfigError("tts_module must be 'xfs5152' (an XFS5152CE) or 'syn6288' (a SYN6288)")
    if cfg["tts_module"] == "syn6288" and cfg["tts_chunk_bytes"] > 200:
        raise ConfigError("tts_chunk_bytes must be at most 200 for a SYN6288 (its frame limit)")
    if cfg["power"] not in ("mains", "battery"):
        raise ConfigError("power must be 'mains' or 'battery'")
    if cfg["power"] == "battery":
        if cfg["role"] != "button":
            raise ConfigError("a speaker runs on mains: power must be 'mains'")
        if not (cfg["checkin_s"] and cfg["retry_s"] and cfg["awake_s"]):
            raise ConfigError("battery: checkin_s, retry_s and awake_s must be at least 1")
    static = cfg["wifi"].get("static")
    if static is not None and (type(static) is not list or len(static) != 4):
        raise ConfigError("wifi.static must be [address, netmask, gateway, dns]")
    if cfg["queue_cap"] < 1:
        raise ConfigError("queue_cap must be at least 1")
    return cfg
