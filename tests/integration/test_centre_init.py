"""`onekey centre init` without TLS files leaves a configuration that runs: it creates a CA with
the centre's client certificate and the centre broker's server certificate, and the centre
connects to a broker started with them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from centre.config import load_config
from onekey.cli import main as onekey_main
from tests.centre_site import centre_running
from transport.brokers import CentreBroker
from transport.pki import CaFiles, CertFiles, crl_path
from transport.procs import free_port

pytestmark = pytest.mark.integration
HOST = "127.0.0.1"


async def test_init_without_tls_files_creates_a_ca_and_the_centre_connects(tmp_path: Path) -> None:
    d = tmp_path / "centre"
    port = free_port(HOST)
    argv = [
        "centre", "init", "--dir", str(d), "--http-port", str(free_port(HOST)),
        "--broker-port", str(port), "--server-host", "centre.example.cn",
    ]
    assert await asyncio.to_thread(onekey_main, argv) == 0  # the command runs its own loop
    cfg = load_config(d / "centre.toml")
    for p in (cfg.broker_ca, cfg.broker_cert, cfg.broker_key):
        assert p.is_file(), p
    pki = d / "pki"
    server = CertFiles(ca=pki / "ca.crt", cert=pki / "centre-broker.crt", key=pki / "centre-broker.key")
    crl = crl_path(CaFiles(cert=pki / "ca.crt", key=pki / "ca.key"))
    with CentreBroker(tmp_path / "broker", port, server, HOST, crl=crl):
        async with centre_running(cfg) as http:
            health = (await http.get("/healthz")).json()
            assert health == {"status": "ok", "broker": True}


def test_init_refuses_tls_files_that_do_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "centre"
    tls = ["--ca", "ca.pem", "--cert", "c.pem", "--key", "k.pem"]
    rc = onekey_main(["centre", "init", "--dir", str(d), *tls])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (d / "centre.toml").exists()
