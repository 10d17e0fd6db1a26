"""The centre service against a real centre broker (Mosquitto, TLS, client certificates): a
test gateway publishes signed events and gets the centre's signed acks back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.fakegateway import event_body, signed_conf, signed_event, signed_heartbeat
from tests import centre_site
from tests.centre_site import GW, Site, centre_running, next_signed, open_site, poll
from transport.mqtt import MqttClient

pytestmark = pytest.mark.integration

ACK_TOPIC = f"ok/v1/gw/{GW}/down/ack"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with open_site(tmp_path) as s:
        yield s


def gateway(site: Site) -> contextlib.AbstractAsyncContextManager[MqttClient]:
    return centre_site.gateway(site, ACK_TOPIC)


async def next_ack(site: Site, client: MqttClient, within: float = 10.0) -> dict[str, Any]:
    """The next ack; an `acked` one is confirmed (§6.6) as a gateway does once it has it."""
    ack = await next_signed(site, client, ACK_TOPIC, within)
    if ack["s"] == "acked":
        await client.publish(*signed_conf(site.gw_key, GW, acks=[(ack["id"], "acked")]), qos=1)
    return ack


async def test_signed_event_is_stored_acked_and_relayed_to_the_gateway(site: Site) -> None:
    async with centre_running(site.config) as http, gateway(site) as gw:
        await gw.publish(*signed_event(site.gw_key, event_body(GW, "btn-1", 7, household="h-3")))
        ack = await next_ack(site, gw)
        assert ack["id"] == "gw-1:btn-1:7" and ack["s"] == "received"

        (alarm,) = (await http.get("/api/alarms", params={"state": "open"})).json()
        assert (alarm["id"], alarm["household"], alarm["received_at"]) == (
            "gw-1:btn-1:7", "h-3", ack["at"]
        )

        r = await http.post(
            "/api/alarms/gw-1:btn-1:7/ack", json={"by": "Li", "note": "doctor on the way"}
        )
        assert r.status_code == 200 and r.json()["state"] == "acked"
        ack = await next_ack(site, gw)
        assert (ack["id"], ack["s"], ack["by"], ack["note"]) == (
            "gw-1:btn-1:7", "acked", "Site admin", "doctor on the way"
        )

        async def no_pending() -> bool:
            return bool((await http.get("/api/metrics")).json()["pending_downlinks"] == 0)

        await poll(no_pending)

        # The gateway re-sends (it missed the ack, say): stored once, answered with the state.
        await gw.publish(*signed_event(site.gw_key, event_body(GW, "btn-1", 7, household="h-3")))
        ack = await next_ack(site, gw)
        assert (ack["s"], ack["by"]) == ("acked", "Site admin")
        assert len((await http.get("/api/alarms")).json()) == 1

        await gw.publish(*signed_heartbeat(site.gw_key, GW, ts=1, outbox=0, devices=4))

        async def gateway_online() -> bool:
            (g,) = (await http.get("/api/gateways")).json()
            return bool(g["online"]) and g["devices"] == 4

        await poll(gateway_online)


async def test_forged_event_is_not_stored_and_is_counted(site: Site) -> None:
    async with centre_running(site.config) as http, gateway(site) as gw:
        forger = Ed25519PrivateKey.generate()
        await gw.publish(*signed_event(forger, event_body(GW, "btn-1", 9)))

        async def counted() -> bool:
            m = (await http.get("/api/metrics")).json()
            return bool(m["rejected"].get("bad_signature") == 1)

        await poll(counted)
        assert (await http.get("/api/alarms/gw-1:btn-1:9")).status_code == 404
        # A good event afterwards still goes through, and is the first ack the gateway sees.
        await gw.publish(*signed_event(site.gw_key, event_body(GW, "btn-1", 10)))
        ack = await next_ack(site, gw)
        assert (ack["id"], ack["s"]) == ("gw-1:btn-1:10", "received")


async def test_event_sent_while_the_centre_is_down_is_handled_after_restart(site: Site) -> None:
    async with centre_running(site.config):
        pass  # the centre's persistent session and subscriptions now exist at the broker
    async with gateway(site) as gw:
        await gw.publish(*signed_event(site.gw_key, event_body(GW, "btn-2", 3)))
        async with centre_running(site.config) as http:
            ack = await next_ack(site, gw)
            assert (ack["id"], ack["s"]) == ("gw-1:btn-2:3", "received")
            r = await http.get("/api/alarms/gw-1:btn-2:3")
            assert r.status_code == 200 and r.json()["state"] == "open"
