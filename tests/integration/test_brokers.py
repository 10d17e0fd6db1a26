"""Village and centre brokers enforce who may connect and which topics each client may use."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from transport.brokers import BrokerError, CentreBroker, VillageBroker
from transport.mqtt import MqttClient, MqttConnectError, MqttError, TlsFiles
from transport.pki import create_ca, issue_client, issue_server
from transport.procs import free_port

try:
    from conftest_brokers import (  # type: ignore[import-not-found, unused-ignore]
        HOST,
        Pki,
        centre_broker_fixture,
        centre_pki_fixture,
        next_message,
        nothing_arrives,
        village_broker_fixture,
        village_client,
    )
except ImportError:
    from tests.integration.conftest_brokers import (
        HOST,
        Pki,
        centre_broker_fixture,
        centre_pki_fixture,
        next_message,
        nothing_arrives,
        village_broker_fixture,
        village_client,
    )

__all__ = ["centre_broker_fixture", "centre_pki_fixture", "village_broker_fixture"]

pytestmark = pytest.mark.integration


# -- village broker ----------------------------------------------------------------------------


async def test_village_refuses_anonymous_client(village_broker: VillageBroker) -> None:
    client = MqttClient("anon", village_broker.host, village_broker.port)
    with pytest.raises(MqttConnectError, match="refused"):
        await client.connect(timeout=5)
    assert not client.connected


async def test_village_refuses_wrong_password(village_broker: VillageBroker) -> None:
    client = MqttClient(
        "btn-1", village_broker.host, village_broker.port, username="btn-1", password="wrong"
    )
    with pytest.raises(MqttConnectError, match="refused"):
        await client.connect(timeout=5)


async def test_device_alarm_reaches_gateway(village_broker: VillageBroker) -> None:
    async with (
        village_client(village_broker, "gateway") as gw,
        village_client(village_broker, "btn-1") as dev,
    ):
        await gw.subscribe("ok/v1/dev/+/up/#")
        await dev.publish("ok/v1/dev/btn-1/up/alarm", b"alarm-1")
        msg = await next_message(gw)
        assert (msg.topic, msg.payload, msg.qos) == ("ok/v1/dev/btn-1/up/alarm", b"alarm-1", 1)


async def test_device_cannot_publish_as_another_device(village_broker: VillageBroker) -> None:
    async with (
        village_client(village_broker, "gateway") as gw,
        village_client(village_broker, "btn-1") as dev,
    ):
        await gw.subscribe("ok/v1/dev/+/up/#")
        # MQTT 3.1.1 has no way to refuse a publish: Mosquitto acks it and drops it.
        await dev.publish("ok/v1/dev/btn-2/up/alarm", b"forged")
        await dev.publish("ok/v1/dev/btn-1/up/alarm", b"genuine")
        msg = await next_message(gw)
        assert (msg.topic, msg.payload) == ("ok/v1/dev/btn-1/up/alarm", b"genuine")
        await nothing_arrives(gw, within=0.3)


async def test_device_reads_only_its_own_down_topics(village_broker: VillageBroker) -> None:
    async with (
        village_client(village_broker, "gateway") as gw,
        village_client(village_broker, "btn-1") as dev,
    ):
        await dev.subscribe("ok/v1/dev/+/down/#")
        await gw.publish("ok/v1/dev/btn-2/down/ack", b"for btn-2")
        await gw.publish("ok/v1/dev/btn-1/down/ack", b"for btn-1")
        msg = await next_message(dev)
        assert (msg.topic, msg.payload) == ("ok/v1/dev/btn-1/down/ack", b"for btn-1")
        await nothing_arrives(dev, within=0.3)


async def test_removed_user_is_cut_off_by_reload(village_broker: VillageBroker) -> None:
    connected = village_client(village_broker, "btn-2")
    await connected.connect()
    village_broker.remove_user("btn-2")
    village_broker.reload()
    # Mosquitto 2 re-checks connected clients on reload and drops this one.
    with pytest.raises(MqttError, match="lost"):
        async with asyncio.timeout(5):
            await connected.closed()
    await connected.disconnect()
    with pytest.raises(MqttConnectError, match="refused"):
        await village_client(village_broker, "btn-2").connect(timeout=5)
    async with village_client(village_broker, "btn-1") as still_there:
        assert still_there.connected


async def test_added_user_can_connect_after_reload(village_broker: VillageBroker) -> None:
    village_broker.add_user("btn-3", "btn-3-secret")
    village_broker.reload()
    client = MqttClient(
        "btn-3", HOST, village_broker.port, username="btn-3", password="btn-3-secret"
    )
    async with client:
        assert client.connected


async def test_persistent_session_survives_broker_restart(village_broker: VillageBroker) -> None:
    dev = village_client(village_broker, "btn-1", clean_session=False)
    await dev.connect()
    await dev.subscribe("ok/v1/dev/btn-1/down/#")
    await dev.disconnect()
    async with village_client(village_broker, "gateway") as gw:
        await gw.publish("ok/v1/dev/btn-1/down/ack", b"stored")
    village_broker.restart()
    dev = village_client(village_broker, "btn-1", clean_session=False)
    async with dev:
        assert dev.session_present
        msg = await next_message(dev)
        assert (msg.topic, msg.payload) == ("ok/v1/dev/btn-1/down/ack", b"stored")


def test_start_reports_mosquitto_log_when_it_cannot_listen(
    tmp_path: Path, village_broker: VillageBroker
) -> None:
    clash = VillageBroker(tmp_path / "clash", village_broker.port, HOST)
    try:
        with pytest.raises(BrokerError, match="did not start") as info:
            clash.start(timeout=5)
        assert "Address already in use" in str(info.value)
        assert not clash.running
    finally:
        clash.stop()


def test_village_acl_lists_service_users(tmp_path: Path) -> None:
    broker = VillageBroker(tmp_path, 1883, service_users=["gateway", "svc-monitor"])
    text = broker.write_acl().read_text()
    assert "user svc-monitor\ntopic read ok/v1/dev/+/up/#" in text
    assert "pattern write ok/v1/dev/%u/up/#" in text
    with pytest.raises(BrokerError):
        broker.write_acl(["bad/name"])


# -- centre broker -----------------------------------------------------------------------------


def tls_client(broker: CentreBroker, cn: str, tls: TlsFiles) -> MqttClient:
    return MqttClient(cn, broker.host, broker.port, tls=tls)


async def test_gateway_event_reaches_centre(centre_broker: CentreBroker, centre_pki: Pki) -> None:
    async with (
        tls_client(centre_broker, "centre", centre_pki.client("centre")) as centre,
        tls_client(centre_broker, "gw-1", centre_pki.client("gw-1")) as gw,
    ):
        await centre.subscribe("ok/v1/gw/+/up/#")
        await gw.publish("ok/v1/gw/gw-1/up/event", b"event-1")
        msg = await next_message(centre)
        assert (msg.topic, msg.payload) == ("ok/v1/gw/gw-1/up/event", b"event-1")

        await gw.subscribe("ok/v1/gw/gw-1/down/#")
        await centre.publish("ok/v1/gw/gw-1/down/ack", b"ack-1")
        msg = await next_message(gw)
        assert (msg.topic, msg.payload) == ("ok/v1/gw/gw-1/down/ack", b"ack-1")


async def test_gateway_cannot_publish_as_another_gateway(
    centre_broker: CentreBroker, centre_pki: Pki
) -> None:
    async with (
        tls_client(centre_broker, "centre", centre_pki.client("centre")) as centre,
        tls_client(centre_broker, "gw-1", centre_pki.client("gw-1")) as gw,
    ):
        await centre.subscribe("ok/v1/gw/+/up/#")
        await gw.publish("ok/v1/gw/gw-2/up/event", b"forged")
        await gw.publish("ok/v1/gw/gw-1/up/event", b"genuine")
        msg = await next_message(centre)
        assert (msg.topic, msg.payload) == ("ok/v1/gw/gw-1/up/event", b"genuine")
        await nothing_arrives(centre, within=0.3)


async def test_identity_comes_from_certificate_not_username(
    centre_broker: CentreBroker, centre_pki: Pki
) -> None:
    """A gateway cannot claim to be the centre by sending the user name `centre`."""
    async with (
        tls_client(centre_broker, "centre", centre_pki.client("centre")) as centre,
        MqttClient(
            "gw-1",
            centre_broker.host,
            centre_broker.port,
            username="centre",
            tls=centre_pki.client("gw-1"),
        ) as gw,
    ):
        await centre.subscribe("ok/v1/gw/+/up/#")
        await gw.publish("ok/v1/gw/gw-2/up/event", b"forged")
        await gw.publish("ok/v1/gw/gw-1/up/event", b"genuine")
        msg = await next_message(centre)
        assert msg.payload == b"genuine"


async def test_centre_refuses_client_without_certificate(
    centre_broker: CentreBroker, centre_pki: Pki
) -> None:
    client = MqttClient(
        "gw-1", centre_broker.host, centre_broker.port, tls=TlsFiles(ca=centre_pki.ca.cert)
    )
    with pytest.raises(MqttConnectError):
        await client.connect(timeout=5)
    assert not client.connected


async def test_centre_refuses_certificate_from_another_ca(
    tmp_path: Path, centre_broker: CentreBroker, centre_pki: Pki
) -> None:
    other_ca = create_ca(tmp_path / "other")
    rogue = issue_client(other_ca, tmp_path / "other", "gw-1")
    client = MqttClient(
        "gw-1",
        centre_broker.host,
        centre_broker.port,
        tls=TlsFiles(ca=centre_pki.ca.cert, cert=rogue.cert, key=rogue.key),
    )
    with pytest.raises(MqttConnectError):
        await client.connect(timeout=5)


async def test_client_trusting_another_ca_fails_closed(
    tmp_path: Path, centre_broker: CentreBroker, centre_pki: Pki
) -> None:
    other_ca = create_ca(tmp_path / "other")
    good = issue_client(centre_pki.ca, centre_pki.dir, "gw-1")
    client = MqttClient(
        "gw-1",
        centre_broker.host,
        centre_broker.port,
        tls=TlsFiles(ca=other_ca.cert, cert=good.cert, key=good.key),
    )
    with pytest.raises(MqttConnectError, match="failed verification"):
        await client.connect(timeout=5)
    assert not client.connected


async def test_client_checks_broker_host_name(tmp_path: Path, centre_pki: Pki) -> None:
    """A certificate that does not name the address dialled is refused (127.0.0.2 is not in
    the default SAN)."""
    server = issue_server(centre_pki.ca, centre_pki.dir, "centre-broker")
    broker = CentreBroker(tmp_path / "centre2", free_port("127.0.0.2"), server, "127.0.0.2")
    broker.start()
    try:
        client = MqttClient("gw-1", broker.host, broker.port, tls=centre_pki.client("gw-1"))
        with pytest.raises(MqttConnectError, match="failed verification"):
            await client.connect(timeout=5)
    finally:
        broker.stop()

