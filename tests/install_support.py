"""A directory tree shaped like a Debian machine with Mosquitto installed, for `onekey install
--root` tests, and a Mosquitto started from Debian's main file plus the installed drop-in."""

from __future__ import annotations

import sys
from pathlib import Path

from onekey.install import Options, Result, install
from transport.brokers import MOSQUITTO
from transport.procs import ManagedProcess, free_port

DEBIAN_MAIN_CONF = """\
# Place your local configuration in /etc/mosquitto/conf.d/
#
# A full description of the configuration file is at
# /usr/share/doc/mosquitto/examples/mosquitto.conf.example

pid_file /run/mosquitto/mosquitto.pid

persistence true
persistence_location /var/lib/mosquitto/

log_dest file /var/log/mosquitto/mosquitto.log

include_dir /etc/mosquitto/conf.d
"""
MOSQUITTO_UID, MOSQUITTO_GID = 101, 104


def debian_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/mosquitto/conf.d").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        f"mosquitto:x:{MOSQUITTO_UID}:{MOSQUITTO_GID}::/var/lib/mosquitto:/usr/sbin/nologin\n"
    )
    (root / "etc/group").write_text(f"root:x:0:\ndialout:x:20:\nmosquitto:x:{MOSQUITTO_GID}:\n")
    (root / "etc/mosquitto/mosquitto.conf").write_text(DEBIAN_MAIN_CONF)
    return root


def onekey_bin() -> str:
    # The console script beside this interpreter (the virtual environment's).
    found = Path(sys.executable).parent / "onekey"
    assert found.exists(), f"{found}: the onekey command is not installed in this environment"
    return str(found)


def install_into(root: Path, role: str, **kw: object) -> Result:
    return install(Options(role=role, root=root, onekey_bin=onekey_bin(), **kw), say=lambda _: None)  # type: ignore[arg-type]


def uid_of(root: Path, name: str) -> int:
    for line in (root / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == name:
            return int(parts[2])
    raise KeyError(name)


def start_installed_mosquitto(root: Path, run_dir: Path) -> ManagedProcess:
    """Mosquitto as Debian's unit starts it, with Debian's main file and the installed drop-in,
    everything re-rooted under `root` (the drop-in names target paths such as /var/lib/onekey)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    dropins = run_dir / "conf.d"
    dropins.mkdir(exist_ok=True)
    for f in (root / "etc/mosquitto/conf.d").iterdir():
        (dropins / f.name).write_text(f.read_text().replace("/var/lib/onekey", str(root / "var/lib/onekey")))
    main = (
        (root / "etc/mosquitto/mosquitto.conf").read_text()
        .replace("/run/mosquitto/mosquitto.pid", str(run_dir / "mosquitto.pid"))
        .replace("/var/lib/mosquitto/", str(run_dir) + "/")
        .replace("/var/log/mosquitto/mosquitto.log", str(run_dir / "mosquitto.log"))
        .replace("/etc/mosquitto/conf.d", str(dropins))
    )
    # Tests run as root; Debian's broker drops to the mosquitto user, which does not exist here.
    conf = run_dir / "mosquitto.conf"
    conf.write_text("user root\n" + main)
    proc = ManagedProcess([MOSQUITTO, "-c", str(conf)], run_dir / "stdout.log", name="mosquitto-installed")
    proc.start()
    return proc


__all__ = ["free_port"]
