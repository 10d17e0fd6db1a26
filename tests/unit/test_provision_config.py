"""config.json as provisioning writes it, and the household binding it protects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioning.devconfig import (
    build_config,
    check_binding,
    default_device_id,
    parse_existing,
)
from provisioning.errors import AlreadyProvisionedError
from provisioning.gwadmin import Credentials
from tests import fw_support as fw

KEY = "00" * 32


def creds(**kw: object) -> Credentials:
    base: dict[str, object] = dict(
        id="btn-c2d3e4f5", role="button", village="v-1", household="h-001", groups=(),
        created=True, key_hex=KEY, mqtt_user="btn-c2d3e4f5", mqtt_password="pw",
        broker_host="192.168.4.1", broker_port=1883, counter_floor=1,
    )
    base.update(kw)
    return Credentials(**base)  # type: ignore[arg-type]


def test_default_ids_come_from_the_role_and_the_unique_id() -> None:
    assert default_device_id("button", "a0b1c2d3e4f5") == "btn-c2d3e4f5"
    assert default_device_id("speaker", "a0b1c2d3e4f5") == "spk-c2d3e4f5"


def test_existing_config_names_its_household() -> None:
    ex = parse_existing(json.dumps({"id": "btn-1", "household": "h-9", "village": "v-1"}).encode())
    assert ex is not None and (ex.device_id, ex.household, ex.village) == ("btn-1", "h-9", "v-1")
    assert parse_existing(None) is None
    damaged = parse_existing(b"{not json")
    assert damaged is not None and damaged.household is None


def test_a_board_of_another_household_needs_force() -> None:
    ex = parse_existing(json.dumps({"id": "btn-1", "household": "h-9", "village": "v-1"}).encode())
    with pytest.raises(AlreadyProvisionedError, match=r"btn-1 for household h-9 in village v-1.*--force"):
        check_binding(ex, "h-001", False, "/dev/ttyUSB0")
    check_binding(ex, "h-001", True, "/dev/ttyUSB0")
    check_binding(ex, "h-9", False, "/dev/ttyUSB0")
    check_binding(None, "h-001", False, "/dev/ttyUSB0")


LOADER = r"""
import json
import config
cfg = config.load()
print(json.dumps({"id": cfg["id"], "hal": cfg["hal"], "user": cfg["mqtt"]["user"],
                  "key": len(cfg["key_bytes"]), "household": cfg["household"]}))
"""


def test_config_for_a_real_board_is_what_the_firmware_reads(tmp_path: Path) -> None:
    cfg = build_config(
        creds(), virtual=False, sim_port=None, wifi={"ssid": "village", "psk": "secret"},
        broker_host="192.168.4.1", broker_port=1883, existing=None,
    )
    assert cfg["hal"] == "esp32" and "sim_port" not in cfg
    assert cfg["mqtt"] == {"host": "192.168.4.1", "port": 1883, "user": "btn-c2d3e4f5", "password": "pw"}
    assert cfg["household"] == "h-001" and cfg["key"] == KEY
    # The firmware's own loader, on MicroPython, accepts it.
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "config.json").write_text(json.dumps(cfg))
    script = fw.write_script(tmp_path / "bin", "load.py", LOADER)
    (out,) = fw.micropython_json_lines(script, cwd=flash)
    assert out == {"id": "btn-c2d3e4f5", "hal": "esp32", "user": "btn-c2d3e4f5", "key": 32,
                   "household": "h-001"}


def test_a_virtual_board_gets_the_sim_hal_and_its_port() -> None:
    cfg = build_config(
        creds(), virtual=True, sim_port=40123, wifi={"ssid": "vboard", "psk": ""},
        broker_host="127.0.0.1", broker_port=1883, existing=None,
    )
    assert cfg["hal"] == "sim" and cfg["sim_port"] == 40123


def test_settings_outside_provisioning_are_kept_identity_replaced() -> None:
    old = parse_existing(json.dumps({
        "id": "btn-old", "key": "11" * 32, "household": "h-001", "pins": {"button": 35},
        "alarm_hold_ms": 150, "mqtt": {"host": "old", "port": 1, "user": "x", "password": "y"},
    }).encode())
    cfg = build_config(
        creds(), virtual=False, sim_port=None, wifi={"ssid": "v", "psk": "p"},
        broker_host="192.168.4.1", broker_port=1883, existing=old,
    )
    assert cfg["pins"] == {"button": 35} and cfg["alarm_hold_ms"] == 150
    assert cfg["id"] == "btn-c2d3e4f5" and cfg["key"] == KEY and cfg["mqtt"]["host"] == "192.168.4.1"


def test_power_profile_and_its_period_are_written_for_the_firmware() -> None:
    battery = build_config(
        creds(power="battery", period_s=3600), virtual=False, sim_port=None,
        wifi={"ssid": "v", "psk": "p"}, broker_host="192.168.4.1", broker_port=1883, existing=None,
    )
    assert (battery["power"], battery["checkin_s"]) == ("battery", 3600)
    assert "hb_interval_s" not in battery
    mains = build_config(
        creds(power="mains", period_s=20), virtual=False, sim_port=None,
        wifi={"ssid": "v", "psk": "p"}, broker_host="192.168.4.1", broker_port=1883, existing=None,
    )
    assert (mains["power"], mains["hb_interval_s"]) == ("mains", 20)
    # A board re-provisioned from battery to mains does not keep its old profile.
    old = parse_existing(json.dumps({"id": "btn-old", "key": "11" * 32, "household": "h-001",
                                     "power": "battery"}).encode())
    again = build_config(
        creds(), virtual=False, sim_port=None, wifi={"ssid": "v", "psk": "p"},
        broker_host="192.168.4.1", broker_port=1883, existing=old,
    )
    assert again["power"] == "mains"


def test_provision_device_takes_the_power_profile_from_the_command_line(tmp_path: Path) -> None:
    from onekey.cli import build_parser
    from provisioning.cli import _options

    token = tmp_path / "admin.token"
    token.write_text("t" * 32)
    common = ["provision", "device", "--port", "/dev/null", "--role", "button",
              "--household", "h-1", "--admin-token-file", str(token)]
    opts = _options(build_parser().parse_args([*common, "--power", "battery", "--period", "1800"]))
    assert (opts.power, opts.period_s) == ("battery", 1800)
    opts = _options(build_parser().parse_args(common))
    assert (opts.power, opts.period_s) == (None, 0)  # mains, at the gateway's period
    with pytest.raises(SystemExit):
        build_parser().parse_args([*common, "--power", "solar"])
