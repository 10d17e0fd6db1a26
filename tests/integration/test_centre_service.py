"""The centre service against a real centre broker (Mosquitto, TLS, client certificates): a
test gateway publishes signed events and gets the centre's signed acks back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from centre.cli import uvicorn_server
from centre.config import CentreConfig, load_config
from centre.enrol import enrol_gateway, init_centre
from centre.testing import event_body, signed_event, signed_heartbeat, wait_until
from onekey.brokers import CentreBroker, client_tls
from onekey.mqtt import MqttClient, TlsFiles
from onekey.pki import create_ca, issue_client, issue_server
from onekey.procs import free_port
from onekey.signing import load_public_hex, public_hex, verify_frame

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
GW = "gw-1"
ACK_TOPIC = f"ok/v1/gw/{GW}/down/ack"


@dataclass(frozen=True)
class Site:
    broker: CentreBroker
    config: CentreConfig
    centre_pub: str
    gw_key: Ed25519PrivateKey
    gw_tls: TlsFiles


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    pki = tmp_path / "pki"
    ca = create_ca(pki)
    broker = CentreBroker(
        tmp_path / "broker", free_port(HOST), issue_server(ca, pki, "centre-broker"), HOST
    )
    centre_cert = issue_client(ca, pki, "centre")
    path, pub = init_centre(
        tmp_path / "centre",
        http_port=free_port(HOST),
        broker_port=broker.port,
        ca=centre_cert.ca,
        cert=centre_cert.cert,
        tls_key=centre_cert.key,
    )
    cfg = load_config(path)
    gw_key = Ed25519PrivateKey.generate()
    enrol_gateway(cfg, GW, public_hex(gw_key), name="Xiaocun")
    broker.start()
    try:
        yield Site(broker, cfg, pub, gw_key, client_tls(issue_client(ca, pki, GW)))
    finally:
        broker.stop()


async def poll(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling the HTTP API
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def centre_running(cfg: CentreConfig) -> AsyncIterator[httpx.AsyncClient]:
    """The centre as `onekey centre run` runs it (uvicorn, lifespan), in this event loop."""
    server = uvicorn_server(cfg)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), within=10)
        assert server.started, "the centre did not start"
        base = f"http://{cfg.http_host}:{cfg.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:

            async def connected() -> bool:
                return bool((await http.get("/api/metrics")).json()["connected"])

            await poll(connected)
            yield http
    finally:
        server.should_exit = True
        async with asyncio.timeout(15):
            await task


@contextlib.asynccontextmanager
async def gateway(site: Site) -> AsyncIterator[MqttClient]:
    client = MqttClient(f"{GW}-test", HOST, site.broker.port, tls=site.gw_tls)
    await client.connect()
    try:
        await client.subscribe(ACK_TOPIC, qos=1)
        yield client
    finally:
        await client.disconnect()


async def next_ack(site: Site, client: MqttClient, within: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(within), contextlib.aclosing(client.messages()) as it:
        async for msg in it:
            assert msg.topic == ACK_TOPIC
            return verify_frame(load_public_hex(site.centre_pub), msg.topic, msg.payload)
    raise AssertionError("the gateway's connection ended")


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
            "gw-1:btn-1:7", "acked", "Li", "doctor on the way"
        )

        async def no_pending() -> bool:
            return (await http.get("/api/metrics")).json()["pending_downlinks"] == 0

        await poll(no_pending)

        # The gateway re-sends (it missed the ack, say): stored once, answered with the state.
        await gw.publish(*signed_event(site.gw_key, event_body(GW, "btn-1", 7, household="h-3")))
        ack = await next_ack(site, gw)
        assert (ack["s"], ack["by"]) == ("acked", "Li")
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
