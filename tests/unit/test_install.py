"""`onekey install ROLE --root DIR`: the service user, directories and modes, Mosquitto's
drop-in beside Debian's untouched main file, systemd units that `systemd-analyze verify`
accepts, and a second run that changes nothing."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from centre.config import load_config
from onekey.install import InstallError, Options, install
from tests.install_support import (
    DEBIAN_MAIN_CONF,
    MOSQUITTO_GID,
    debian_root,
    install_into,
    onekey_bin,
    uid_of,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("systemd-sysusers") is None,
    reason="installing sets file owners (root) and uses systemd-sysusers",
)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int, bytes | str]]:
    out: dict[str, tuple[int, int, int, int, bytes | str]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        content: bytes | str = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else b"")
        out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, content)
    return out


def test_gateway_install_creates_user_directories_broker_login_and_units(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    install_into(root, "gateway", broker_port=1883)
    uid = uid_of(root, "onekey")
    state = root / "var/lib/onekey"
    assert (mode(state), state.stat().st_uid) == (0o711, uid)
    assert (mode(state / "gateway"), (state / "gateway").stat().st_uid) == (0o700, uid)
    pw = state / "gateway/village-broker.pass"
    assert (mode(pw), pw.stat().st_uid) == (0o600, uid)
    broker_dir = state / "village-broker"
    assert mode(broker_dir) == 0o2750 and broker_dir.stat().st_gid == MOSQUITTO_GID
    passwd = broker_dir / "passwd"
    assert mode(passwd) == 0o640 and passwd.stat().st_gid == MOSQUITTO_GID
    assert passwd.read_text().startswith("gateway:")
    # Debian's main file untouched; the settings are a drop-in that names the installed files.
    assert (root / "etc/mosquitto/mosquitto.conf").read_text() == DEBIAN_MAIN_CONF
    dropin = (root / "etc/mosquitto/conf.d/onekey-gateway.conf").read_text()
    assert "password_file /var/lib/onekey/village-broker/passwd" in dropin
    assert "acl_file /var/lib/onekey/village-broker/acl" in dropin
    assert "listener 1883 0.0.0.0" in dropin
    options = {line.split()[0] for line in dropin.splitlines() if line and not line.startswith("#")}
    assert not options & {"persistence_location", "log_dest", "pid_file", "user"}, "Debian's own"
    unit = (root / "etc/systemd/system/onekey-gateway.service").read_text()
    assert f"ExecStart={onekey_bin()} gateway run --config /var/lib/onekey/gateway/gateway.toml" in unit
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "onekey-gateway.service").is_symlink()
    assert (wants / "onekey-broker-reload.path").is_symlink()
    assert (root / "etc/systemd/system/timers.target.wants/onekey-backup@gateway.timer").is_symlink()


def test_second_install_changes_nothing(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    install_into(root, "gateway")
    before = snapshot(root)
    result = install_into(root, "gateway")
    assert snapshot(root) == before
    assert result.written == []


def test_centre_install_leaves_a_configuration_whose_files_exist(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    install_into(root, "centre", broker_port=8883, server_hosts=("centre.example.cn",))
    pki = root / "var/lib/onekey/pki"
    # The CA's key and the centre's client key: the onekey user's alone.
    for name in ("ca.key", "centre.key"):
        assert mode(pki / name) == 0o600, name
    # Mosquitto reads its own key and the CRL through its group.
    assert mode(pki / "centre-broker.key") == 0o640
    assert (pki / "centre-broker.key").stat().st_gid == MOSQUITTO_GID
    assert (pki / "ca.crl").exists()
    config = load_config(root / "var/lib/onekey/centre/centre.toml")
    for p in (config.key_path, config.broker_ca, config.broker_cert, config.broker_key):
        assert p.exists(), p
    dropin = (root / "etc/mosquitto/conf.d/onekey-centre.conf").read_text()
    assert "crlfile /var/lib/onekey/pki/ca.crl" in dropin
    assert "require_certificate true" in dropin
    timers = root / "etc/systemd/system/timers.target.wants"
    assert (timers / "onekey-crl.timer").is_symlink()
    before = snapshot(root)
    install_into(root, "centre", broker_port=8883, server_hosts=("centre.example.cn",))
    assert snapshot(root) == before


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("role", ["gateway", "centre"])
def test_installed_units_pass_systemd_analyze_verify(tmp_path: Path, role: str) -> None:
    root = debian_root(tmp_path)
    install_into(root, role)
    units = tmp_path / "units"
    units.mkdir()
    for p in (root / "etc/systemd/system").glob("onekey-*"):
        if not p.is_file():
            continue
        # A template is verified as the instance the install enables.
        name = p.name.replace("@.", f"@{role}.")
        (units / name).write_text(p.read_text())
    files = sorted(str(p) for p in units.iterdir())
    res = subprocess.run(
        ["systemd-analyze", "verify", *files], capture_output=True, text=True, timeout=60, check=False
    )
    # verify exits 0 on some mistakes (an unknown value is "ignoring"): refuse any complaint
    # about our units. Complaints about the host's own units (no sysinit.target in a
    # container) are not ours.
    ours = [line for line in (res.stdout + res.stderr).splitlines() if "onekey" in line]
    assert res.returncode == 0 and not ours, res.stdout + res.stderr


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="unknown role"):
        install(Options(role="speaker", root=debian_root(tmp_path)), say=lambda _: None)


def test_root_without_mosquitto_says_to_install_it(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    (root / "etc/group").write_text("root:x:0:\n")
    with pytest.raises(InstallError, match="Mosquitto installed"):
        install_into(root, "gateway")
