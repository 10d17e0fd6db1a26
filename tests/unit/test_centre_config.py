"""Centre config files and the init / enrol / show-key steps."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from centre.config import ConfigError, load_config, render_config
from centre.enrol import (
    EnrolError,
    centre_public_key,
    enrol_gateway,
    enrol_gateway_async,
    init_centre,
)
from centre.store import Store
from transport.keys import load_private_key, public_hex


def test_rendered_config_reads_back_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(render_config(http_port=8123, broker_port=18883, ca="/etc/ca.pem"))
    cfg = load_config(path)
    assert cfg.db_path == tmp_path / "centre.db"
    assert cfg.key_path == tmp_path / "centre.key"
    assert cfg.broker_ca == Path("/etc/ca.pem")
    assert cfg.broker_cert == tmp_path / "centre-cert.pem"
    assert (cfg.http_port, cfg.broker_port, cfg.client_id) == (8123, 18883, "centre")
    assert cfg.gateway_timeout_s == 90.0 and cfg.source == path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('port = 8080', 'port = "8080"', "[http]: field 'port'"),
        ('port = 8080', 'port = 70000', "[http]: field 'port'"),
        ('db = "centre.db"\n', "", "[centre]: missing field 'db'"),
        ('[broker]', '[brokers]', "missing section [broker]"),
        ('client_id = "centre"', 'client_id = "Centre 1"', "field 'client_id'"),
        ('gateway_timeout_s = 90.0', 'gateway_timeout_s = -1', "field 'gateway_timeout_s'"),
        ('ca = "ca.pem"', "ca = [", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_field(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    text = render_config()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_config(tmp_path / "nope.toml")


def test_init_creates_a_private_key_and_config_and_refuses_to_overwrite(tmp_path: Path) -> None:
    d = tmp_path / "centre"
    path, pub = init_centre(d, http_port=8124, broker_port=18884)
    key_path = d / "centre.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert public_hex(load_private_key(key_path)) == pub
    cfg = load_config(path)
    assert cfg.http_port == 8124 and cfg.key_path == key_path
    assert centre_public_key(path) == pub == centre_public_key(cfg)
    with pytest.raises(EnrolError, match="already"):
        init_centre(d)


def test_enrol_validates_and_stores_the_gateway_key(tmp_path: Path) -> None:
    path, _ = init_centre(tmp_path)
    key_hex = public_hex(Ed25519PrivateKey.generate())
    gw = enrol_gateway(path, "gw-1", key_hex.upper(), name="Xiaocun")
    assert (gw.id, gw.public_key, gw.name) == ("gw-1", key_hex, "Xiaocun")
    with pytest.raises(EnrolError, match="gateway id"):
        enrol_gateway(path, "GW 1", key_hex)
    with pytest.raises(EnrolError, match="64 hex"):
        enrol_gateway(path, "gw-1", "abcd")
    with pytest.raises(EnrolError):
        enrol_gateway(path, "gw-1", "zz" * 32)


async def test_enrol_from_a_running_loop_replaces_the_key(tmp_path: Path) -> None:
    path, _ = init_centre(tmp_path)
    k1 = public_hex(Ed25519PrivateKey.generate())
    k2 = public_hex(Ed25519PrivateKey.generate())
    await enrol_gateway_async(path, "gw-1", k1)
    await enrol_gateway_async(path, "gw-1", k2)
    async with Store(load_config(path).db_path) as store:
        gws = await store.list_gateways()
    assert [(g.id, g.public_key) for g in gws] == [("gw-1", k2)]


def run_cli(*argv: str) -> int:
    import argparse

    from centre.cli import add_commands

    parser = argparse.ArgumentParser(prog="onekey")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


def test_cli_init_enrol_and_show_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "c"
    assert run_cli("centre", "init", "--dir", str(d), "--http-port", "8125") == 0
    out = capsys.readouterr().out
    pub = out.split("centre public key: ")[1].strip()
    cfg = d / "centre.toml"
    assert load_config(cfg).http_port == 8125
    assert run_cli("centre", "show-key", "--config", str(cfg)) == 0
    assert capsys.readouterr().out.strip() == pub
    gw_pub = public_hex(Ed25519PrivateKey.generate())
    args = ("centre", "enrol-gateway", "--config", str(cfg), "--id", "gw-7")
    assert run_cli(*args, "--public-key", gw_pub, "--name", "Dongcun") == 0
    assert "gw-7" in capsys.readouterr().out
    with pytest.raises(EnrolError):
        run_cli(*args, "--public-key", "00")
