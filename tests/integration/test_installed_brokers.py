"""What `onekey install` leaves runs: the real Mosquitto, started the way Debian's unit starts
it (Debian's main file plus the installed drop-in), accepts the gateway's login and refuses
others; the centre broker refuses a gateway certificate once `onekey pki revoke` has put it in
the CRL and the broker reloaded."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import pytest

from onekey.cli import main as onekey_main
from tests.install_support import debian_root, install_into, start_installed_mosquitto
from transport.mqtt import MqttClient, MqttConnectError, TlsFiles
from transport.procs import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("systemd-sysusers") is None,
        reason="installing sets file owners (root) and uses systemd-sysusers",
    ),
]
HOST = "127.0.0.1"


async def test_installed_village_broker_takes_the_gateway_login_only(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    port = free_port(HOST)
    install_into(root, "gateway", broker_host=HOST, broker_port=port)
    proc = start_installed_mosquitto(root, tmp_path / "run")
    try:
        await proc.async_wait_port(HOST, port, 10)
        password = (root / "var/lib/onekey/gateway/village-broker.pass").read_text().strip()
        gw = MqttClient("gateway", HOST, port, username="gateway", password=password)
        await gw.connect(timeout=5)
        await gw.disconnect()
        for user, pw in (("gateway", "wrong"), (None, None)):
            other = MqttClient("x", HOST, port, username=user, password=pw)
            with pytest.raises(MqttConnectError, match="refused"):
                await other.connect(timeout=5)
    finally:
        proc.stop()


async def test_revoked_gateway_certificate_is_refused_after_reload(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    port = free_port(HOST)
    install_into(root, "centre", broker_host=HOST, broker_port=port)
    pki_dir = root / "var/lib/onekey/pki"
    assert onekey_main(["pki", "issue", "--dir", str(pki_dir), "--client", "gw-a"]) == 0
    assert onekey_main(["pki", "issue", "--dir", str(pki_dir), "--client", "gw-b"]) == 0

    def tls(cn: str) -> TlsFiles:
        return TlsFiles(ca=pki_dir / "ca.crt", cert=pki_dir / f"{cn}.crt", key=pki_dir / f"{cn}.key")

    async def connects(cn: str) -> bool:
        client = MqttClient(cn, HOST, port, tls=tls(cn))
        try:
            await client.connect(timeout=5)
        except MqttConnectError:
            return False
        await client.disconnect()
        return True

    proc = start_installed_mosquitto(root, tmp_path / "run")
    try:
        await proc.async_wait_port(HOST, port, 10)
        assert await connects("centre") and await connects("gw-a") and await connects("gw-b")
        assert onekey_main(["pki", "revoke", "--dir", str(pki_dir), "--name", "gw-a",
                            "--reason", "stolen"]) == 0
        log = tmp_path / "run/mosquitto.log"
        reloads = log.read_text().count("Reloading config")
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if log.read_text().count("Reloading config") > reloads:
                break
            await asyncio.sleep(0.05)
        assert not await connects("gw-a")
        assert await connects("gw-b") and await connects("centre")
    finally:
        proc.stop()
