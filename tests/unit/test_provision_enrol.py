"""`onekey enrol`: a gateway's keys, certificate and pinned centre key, repeatable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from centre.enrol import init_centre
from centre.store import Store
from gateway.config import load_config
from provisioning.enrol import enrol
from provisioning.errors import EnrolmentError
from transport import pki


@pytest.fixture
def centre_dir(tmp_path: Path) -> Path:
    d = tmp_path / "centre"
    ca = pki.create_ca(d / "pki")
    tls = pki.issue_client(ca, d / "pki", "centre")
    init_centre(d, broker_host="centre.example.org", broker_port=8883,
                ca=tls.ca, cert=tls.cert, tls_key=tls.key)
    return d


def gateways(centre_dir: Path) -> dict[str, str]:
    async def read() -> dict[str, str]:
        async with Store(centre_dir / "centre.db") as store:
            return {g.id: g.public_key for g in await store.list_gateways()}

    return asyncio.run(read())


def test_enrol_writes_a_working_gateway_configuration(tmp_path: Path, centre_dir: Path) -> None:
    state = tmp_path / "gw"
    e = enrol(gateway_id="gw-xiaocun", village="v-xiaocun", centre_dir=centre_dir, state_dir=state)
    assert e.config_written
    cfg = load_config(e.config)
    assert cfg.gateway_id == "gw-xiaocun" and cfg.village == "v-xiaocun"
    assert cfg.centre_public_key == e.centre_key
    assert (cfg.centre_broker.host, cfg.centre_broker.port) == ("centre.example.org", 8883)
    for f in (cfg.centre_broker.ca, cfg.centre_broker.cert, cfg.centre_broker.key, cfg.key_path):
        assert f.is_file()
    assert (cfg.centre_broker.key.stat().st_mode & 0o777) == 0o600
    cert = pki.load_cert(cfg.centre_broker.cert)
    assert pki.common_name(cert) == "gw-xiaocun"
    assert gateways(centre_dir) == {"gw-xiaocun": e.public_key}


def test_enrol_again_changes_nothing(tmp_path: Path, centre_dir: Path) -> None:
    state = tmp_path / "gw"
    first = enrol(gateway_id="gw-1", village="v-1", centre_dir=centre_dir, state_dir=state)
    before = first.config.read_text()
    again = enrol(gateway_id="gw-1", village="v-1", centre_dir=centre_dir, state_dir=state)
    assert again.public_key == first.public_key and not again.config_written
    assert again.config.read_text() == before


def test_enrol_pins_a_new_centre_key_in_an_existing_configuration(tmp_path: Path, centre_dir: Path) -> None:
    state = tmp_path / "gw"
    first = enrol(gateway_id="gw-1", village="v-1", centre_dir=centre_dir, state_dir=state)
    text = first.config.read_text().replace(first.centre_key, "ab" * 32)
    first.config.write_text(text)
    enrol(gateway_id="gw-1", village="v-1", centre_dir=centre_dir, state_dir=state)
    assert load_config(first.config).centre_public_key == first.centre_key


def test_enrol_refuses_another_gateways_configuration(tmp_path: Path, centre_dir: Path) -> None:
    state = tmp_path / "gw"
    enrol(gateway_id="gw-1", village="v-1", centre_dir=centre_dir, state_dir=state)
    with pytest.raises(EnrolmentError, match="configuration of gateway gw-1"):
        enrol(gateway_id="gw-2", village="v-1", centre_dir=centre_dir, state_dir=state)
    assert list(gateways(centre_dir)) == ["gw-1"]  # refused before anything was enrolled


def test_enrol_needs_the_centres_ca(tmp_path: Path, centre_dir: Path) -> None:
    with pytest.raises(EnrolmentError, match="no CA in"):
        enrol(gateway_id="gw-1", village="v-1", centre_dir=centre_dir, state_dir=tmp_path / "gw",
              pki_dir=tmp_path / "empty")


@pytest.mark.parametrize("gw", ["centre", "GW 1"])
def test_enrol_refuses_ids_a_gateway_cannot_have(tmp_path: Path, centre_dir: Path, gw: str) -> None:
    with pytest.raises(EnrolmentError):
        enrol(gateway_id=gw, village="v-1", centre_dir=centre_dir, state_dir=tmp_path / "gw")
