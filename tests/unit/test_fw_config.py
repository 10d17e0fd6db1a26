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
    assert (cfg["ack_timeout_s"], cfg["hb_interval_s"], cfg["resend_s"]) == (20, 60, 5)
    assert cfg["mqtt"]["port"] == 1883 and cfg["pins"]["button"] == 0


def test_nested_settings_merge_with_defaults(load: Any) -> None:
    cfg = load({**MINIMAL, "mqtt": {"host": "10.0.0.2"}, "pins": {"buzzer": 13}})["ok"]
    assert (cfg["mqtt"]["host"], cfg["mqtt"]["port"]) == ("10.0.0.2", 1883)
    assert (cfg["pins"]["buzzer"], cfg["pins"]["button"]) == (13, 0)


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
    ],
)
def test_bad_configs_are_refused_with_the_reason(load: Any, cfg: Any, message: str) -> None:
    out = load(cfg)
    assert message in out.get("error", ""), out
