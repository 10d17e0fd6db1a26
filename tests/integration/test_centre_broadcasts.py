"""Broadcasts through a real centre broker (Mosquitto, TLS, client certificates): the test
plays the gateway. It receives the centre's signed copy on `ok/v1/gw/{gw}/down/bc`, checks the
signature with the centre's public key, answers with signed speaker reports, and sees them in
the API; a broadcast posted while the broker is down arrives once the broker is back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from centre.testing import signed_reports, wait_until
from onekey.brokers import CentreBroker, client_tls
from onekey.cli import main
from onekey.mqtt import MqttClient, TlsFiles
from onekey.pki import create_ca, issue_client, issue_server
from onekey.procs import free_port
from onekey.signing import load_public_hex, public_hex, verify_frame

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
GW = "gw-1"
BC_TOPIC = f"ok/v1/gw/{GW}/down/bc"


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
    # Reconnect quickly after the broker comes back, so that the test stays short.
    cfg = dataclasses.replace(load_config(path), reconnect_min_s=0.1, reconnect_max_s=0.5)
    gw_key = Ed25519PrivateKey.generate()
    enrol_gateway(cfg, GW, public_hex(gw_key), name="Xiaocun", villages=["v-xiaocun"])
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
            await poll(lambda: connected(http, True))
            yield http
    finally:
        server.should_exit = True
        async with asyncio.timeout(15):
            await task


async def connected(http: httpx.AsyncClient, want: bool) -> bool:
    return bool((await http.get("/api/metrics")).json()["connected"]) is want


@contextlib.asynccontextmanager
async def gateway(site: Site, persistent: bool = False) -> AsyncIterator[MqttClient]:
    """The test's gateway: subscribed to its broadcast topic."""
    client = MqttClient(
        f"{GW}-test", HOST, site.broker.port, tls=site.gw_tls, clean_session=not persistent
    )
    await client.connect()
    try:
        await client.subscribe(BC_TOPIC, qos=1)
        yield client
    finally:
        await client.disconnect()


async def next_broadcast(site: Site, client: MqttClient, within: float = 10.0) -> dict[str, Any]:
    """The next copy for this gateway, after checking the centre's signature (§6)."""
    async with asyncio.timeout(within), contextlib.aclosing(client.messages()) as it:
        async for msg in it:
            assert msg.topic == BC_TOPIC
            return verify_frame(load_public_hex(site.centre_pub), msg.topic, msg.payload)
    raise AssertionError("the gateway's connection ended")


def broadcast(**kw: Any) -> dict[str, Any]:
    return {
        "by": "Li Wei",
        "urgency": "Immediate",
        "severity": "Extreme",
        "certainty": "Observed",
        "valid_for_s": 600,
        "area": [{"village": "v-xiaocun"}],
        "text": "山洪预警：请立即撤离到安全地带。",
        "clip": "siren",
        **kw,
    }


async def test_a_broadcast_reaches_the_gateway_signed_and_its_reports_come_back(
    site: Site, tmp_path: Path
) -> None:
    async with centre_running(site.config) as http, gateway(site) as gw:
        r = await http.post("/api/broadcasts", json=broadcast())
        assert r.status_code == 201, r.text
        bc_id = r.json()["id"]
        copy = await next_broadcast(site, gw)
        assert (copy["id"], copy["gw"], copy["msgType"], copy["severity"], copy["clip"]) == (
            bc_id, GW, "Alert", "Extreme", "siren"
        )
        assert copy["area"] == [{"village": "v-xiaocun", "groups": [], "speakers": []}]
        assert copy["text"] == "山洪预警：请立即撤离到安全地带。"

        at = copy["sent"]
        await gw.publish(*signed_reports(site.gw_key, GW, bc_id, [
            ("spk-1", "queued", at + 10), ("spk-2", "queued", at + 10),
            ("spk-1", "received", at + 50), ("spk-1", "playing", at + 60),
        ]), qos=1)
        await gw.publish(*signed_reports(site.gw_key, GW, bc_id, [
            ("spk-1", "played", at + 9000), ("spk-2", "offline", at + 20),
            ("spk-1", "queued", at + 9500),  # late: changes nothing
        ]), qos=1)

        async def reported() -> bool:
            d = (await http.get(f"/api/broadcasts/{bc_id}")).json()
            states = {s["device"]: (s["state"], s["at"]) for s in d["speakers"]}
            return states == {"spk-1": ("played", at + 9000), "spk-2": ("offline", at + 20)}

        await poll(reported)
        d = (await http.get(f"/api/broadcasts/{bc_id}")).json()
        assert d["state"] == "sent" and d["gateways"][0]["state"] == "sent"
        assert d["summary"]["speakers"] == {"played": 1, "offline": 1}

        # A forged report is refused and counted; the state stays.
        forger = Ed25519PrivateKey.generate()
        await gw.publish(*signed_reports(forger, GW, bc_id, [("spk-2", "played", at + 30)]), qos=1)

        async def refused() -> bool:
            m = (await http.get("/api/metrics")).json()
            return bool(m["rejected"].get("bad_signature") == 1)

        await poll(refused)
        assert await reported()

        # CAP out through the command line, and back in as a new broadcast.
        xml_path = tmp_path / "alert.xml"
        base = str(http.base_url).rstrip("/")
        rc = await asyncio.to_thread(
            main, ["cap", "export", bc_id, "--api", base, "-o", str(xml_path)]
        )
        assert rc == 0
        xml = xml_path.read_text(encoding="utf-8")
        assert f"<identifier>{bc_id}</identifier>" in xml
        xml_path.write_text(xml.replace(bc_id, "imported-7"), encoding="utf-8")
        rc = await asyncio.to_thread(
            main, ["cap", "import", str(xml_path), "--by", "Zhao", "--api", base]
        )
        assert rc == 0
        imported = await next_broadcast(site, gw)
        assert (imported["id"], imported["sender"], imported["text"]) == (
            "imported-7", copy["sender"], copy["text"]
        )

        # Staff cancel the first: the gateway gets a signed Cancel that references it.
        r = await http.post(f"/api/broadcasts/{bc_id}/cancel", json={"by": "Zhao", "note": "ok"})
        assert r.status_code == 200, r.text
        cancel = await next_broadcast(site, gw)
        assert (cancel["msgType"], cancel["references"], cancel["expires"]) == (
            "Cancel", [bc_id], copy["expires"]
        )
        assert (await http.get(f"/api/broadcasts/{bc_id}")).json()["state"] == "cancelled"


async def test_a_broadcast_posted_while_the_broker_is_down_is_delivered_when_it_returns(
    site: Site,
) -> None:
    async with centre_running(site.config) as http:
        async with gateway(site, persistent=True):
            pass  # the gateway's session and subscription now wait at the broker
        await asyncio.to_thread(site.broker.stop)
        await poll(lambda: connected(http, False))

        r = await http.post("/api/broadcasts", json=broadcast(text="broker down test"))
        assert r.status_code == 201, r.text
        bc_id = r.json()["id"]
        assert r.json()["state"] == "sending"
        assert (await http.get("/api/metrics")).json()["pending_downlinks"] == 1

        await asyncio.to_thread(site.broker.start)
        async with gateway(site, persistent=True) as gw:
            copy = await next_broadcast(site, gw, within=20)
            assert (copy["id"], copy["text"]) == (bc_id, "broker down test")

        async def sent() -> bool:
            d = (await http.get(f"/api/broadcasts/{bc_id}")).json()
            return bool(d["state"] == "sent")

        await poll(sent)
        assert (await http.get("/api/metrics")).json()["pending_downlinks"] == 0
