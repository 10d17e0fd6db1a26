"""Both brokers bind the MQTT client id to the user name (issue 7, fault 4).

Without the binding, a device that connects with its own user name and another device's id
as client id takes over that device's connection, and with a clean session wipes the acks
the broker holds for it. The attacker here is an ordinary MQTT client that picks its client id
freely; the victim must stay connected and keep what is queued for it.
"""

from __future__ import annotations

import pytest

from transport.brokers import CentreBroker, VillageBroker
from transport.mqtt import MqttClient, MqttError

try:
    from conftest_brokers import (  # type: ignore[import-not-found, unused-ignore]
        PASSWORDS,
        Pki,
        centre_broker_fixture,
        centre_pki_fixture,
        next_message,
        village_broker_fixture,
        village_client,
    )
except ImportError:
    from tests.integration.conftest_brokers import (
        PASSWORDS,
        Pki,
        centre_broker_fixture,
        centre_pki_fixture,
        next_message,
        village_broker_fixture,
        village_client,
    )

__all__ = ["centre_broker_fixture", "centre_pki_fixture", "village_broker_fixture"]

pytestmark = pytest.mark.integration

DOWN = "ok/v1/dev/btn-2/down/ack"


def impostor(broker: VillageBroker, *, clean_session: bool) -> MqttClient:
    """Device btn-1's genuine login, with btn-2's id as client id."""
    return MqttClient(
        "btn-2", broker.host, broker.port, username="btn-1", password=PASSWORDS["btn-1"],
        clean_session=clean_session,
    )


async def still_connected(client: MqttClient, topic: str) -> None:
    """A QoS 1 round trip: fails if the broker has closed the client's connection."""
    try:
        await client.publish(topic, b"still here", qos=1, timeout=5)
    except MqttError as exc:
        raise AssertionError(f"{client.client_id} was disconnected: {exc}") from None
    assert client.connected and not client.closed().done()


async def test_device_cannot_take_over_another_devices_connection(
    village_broker: VillageBroker,
) -> None:
    async with village_client(village_broker, "btn-2", clean_session=False) as victim:
        await victim.subscribe("ok/v1/dev/btn-2/down/#")
        for clean in (True, False):
            async with impostor(village_broker, clean_session=clean):
                await still_connected(victim, "ok/v1/dev/btn-2/up/hb")


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
async def test_device_cannot_wipe_acks_queued_for_another_device(
    village_broker: VillageBroker, clean: bool
) -> None:
    victim = village_client(village_broker, "btn-2", clean_session=False)
    await victim.connect()
    await victim.subscribe("ok/v1/dev/btn-2/down/#")
    await victim.disconnect()
    async with village_client(village_broker, "gateway") as gw:
        await gw.publish(DOWN, b"ack while away")
    async with impostor(village_broker, clean_session=clean):
        pass
    victim = village_client(village_broker, "btn-2", clean_session=False)
    async with victim:
        assert victim.session_present
        msg = await next_message(victim)
        assert (msg.topic, msg.payload) == (DOWN, b"ack while away")


async def test_village_session_belongs_to_the_user_name(village_broker: VillageBroker) -> None:
    """The gateway's persistent session is its user name's, whatever client id it sends."""
    first = village_client(village_broker, "gateway", clean_session=False)
    first.client_id = "onekey-gw-old-name"
    await first.connect()
    await first.subscribe("ok/v1/dev/+/up/#")
    await first.disconnect()
    async with village_client(village_broker, "btn-1") as dev:
        await dev.publish("ok/v1/dev/btn-1/up/alarm", b"alarm while the gateway is away")
    again = village_client(village_broker, "gateway", clean_session=False)
    again.client_id = "anything-else"
    async with again:
        assert again.session_present
        msg = await next_message(again)
        assert msg.payload == b"alarm while the gateway is away"


# -- centre broker: the certificate's CN is the user name, and so the client id ---------------


def tls_client(
    broker: CentreBroker, client_id: str, cn: str, pki: Pki, *, clean_session: bool = True
) -> MqttClient:
    return MqttClient(
        client_id, broker.host, broker.port, tls=pki.client(cn), clean_session=clean_session
    )


async def test_gateway_cannot_take_over_the_centres_connection(
    centre_broker: CentreBroker, centre_pki: Pki
) -> None:
    async with tls_client(
        centre_broker, "centre", "centre", centre_pki, clean_session=False
    ) as centre:
        await centre.subscribe("ok/v1/gw/+/up/#")
        for clean in (True, False):
            async with tls_client(centre_broker, "centre", "gw-1", centre_pki, clean_session=clean):
                await still_connected(centre, "ok/v1/gw/gw-1/down/ack")


async def test_gateway_cannot_wipe_events_queued_for_the_centre(
    centre_broker: CentreBroker, centre_pki: Pki
) -> None:
    centre = tls_client(centre_broker, "centre", "centre", centre_pki, clean_session=False)
    await centre.connect()
    await centre.subscribe("ok/v1/gw/+/up/#")
    await centre.disconnect()
    async with tls_client(centre_broker, "gw-2", "gw-2", centre_pki) as gw2:
        await gw2.publish("ok/v1/gw/gw-2/up/event", b"event while the centre is away")
    async with tls_client(centre_broker, "centre", "gw-1", centre_pki, clean_session=True):
        pass
    centre = tls_client(centre_broker, "whatever", "centre", centre_pki, clean_session=False)
    async with centre:
        assert centre.session_present
        msg = await next_message(centre)
        assert msg.payload == b"event while the centre is away"


async def test_gateway_cannot_take_over_another_gateways_connection(
    centre_broker: CentreBroker, centre_pki: Pki
) -> None:
    async with tls_client(centre_broker, "gw-2", "gw-2", centre_pki, clean_session=False) as gw2:
        await gw2.subscribe("ok/v1/gw/gw-2/down/#")
        async with tls_client(centre_broker, "gw-2", "gw-1", centre_pki):
            await still_connected(gw2, "ok/v1/gw/gw-2/up/hb")
