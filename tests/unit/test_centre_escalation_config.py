"""The [escalation] and [modem] sections of the centre's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from centre.config import ConfigError, load_config

BASE = """
[centre]
db = "centre.db"
key = "centre.key"
[http]
host = "127.0.0.1"
port = 8080
[broker]
host = "127.0.0.1"
port = 8883
ca = "ca.pem"
cert = "c.pem"
key = "k.pem"
"""


def write(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "centre.toml"
    p.write_text(BASE + extra)
    return p


def test_without_the_sections_the_defaults_hold_and_there_is_no_modem(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    assert (cfg.escalation.t1_s, cfg.escalation.t2_s, cfg.escalation.rounds) == (60.0, 60.0, 3)
    assert cfg.escalation.order == ("leader+grid", "family", "doctor")
    assert cfg.modem_port is None and cfg.escalation_period_s == 1.0


def test_escalation_and_modem_sections_are_read(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
[escalation]
t1_s = 2
t2_s = 3.5
rounds = 1
order = ["family", "leader+grid"]
period_s = 0.2
[modem]
port = "/dev/ttyUSB2"
baudrate = 9600
"""))
    assert (cfg.escalation.t1_s, cfg.escalation.t2_s, cfg.escalation.rounds) == (2.0, 3.5, 1)
    assert cfg.escalation.order == ("family", "leader+grid")
    assert (cfg.escalation_period_s, cfg.modem_port, cfg.modem_baudrate) == (0.2, "/dev/ttyUSB2", 9600)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("[escalation]\nt1_s = 0\n", "t1_s must be between"),
        ("[escalation]\nwait = 3\n", "unknown field 'wait'"),
        ("[escalation]\norder = [\"boss\"]\n", "unknown contact kind 'boss'"),
        ("[escalation]\nperiod_s = -1\n", "period_s"),
        ("[modem]\nport = \"\"\n", "'port' must be a non-empty string"),
        ("[modem]\nport = \"/dev/x\"\nbaudrate = \"fast\"\n", "baudrate"),
    ],
)
def test_bad_values_name_the_section_and_field(tmp_path: Path, extra: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config(write(tmp_path, extra))
