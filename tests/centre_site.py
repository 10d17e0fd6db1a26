"""A centre against a real centre broker (Mosquitto, TLS, client certificates), with a test
gateway that holds an enrolled key and its own client certificate. Shared by the centre's
integration tests: `open_site` builds it, `centre_running` runs the centre in the test's event
loop, `gateway` and `next_signed` play the gateway's side."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from centre.accounts import Accounts, UnknownAccount
from centre.auth import Role
from centre.cli import uvicorn_server
from centre.config import CentreConfig, load_config
from centre.enrol import enrol_gateway, init_centre
from centre.store import Store
from harness.fakegateway import wait_until
from protocol.signed import verify_frame
from transport.brokers import CentreBroker, client_tls
from transport.keys import load_public_hex, public_hex
from transport.mqtt import MqttClient, TlsFiles
from transport.pki import create_ca, issue_client, issue_server
from transport.procs import free_port

HOST = "127.0.0.1"
GW = "gw-1"


@dataclass(frozen=True)
class Site:
    broker: CentreBroker
    config: CentreConfig
    centre_pub: str
    gw_key: Ed25519PrivateKey
    gw_tls: TlsFiles


@contextlib.contextmanager
def open_site(
    tmp_path: Path, *, villages: Sequence[str] | None = None, fast_reconnect: bool = False
) -> Iterator[Site]:
    """Certificates, a centre directory, gateway GW enrolled, the broker started."""
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
    if fast_reconnect:
        # Reconnect quickly after the broker comes back, so that a test stays short.
        cfg = dataclasses.replace(cfg, reconnect_min_s=0.1, reconnect_max_s=0.5)
    gw_key = Ed25519PrivateKey.generate()
    enrol_gateway(cfg, GW, public_hex(gw_key), name="Xiaocun", villages=villages)
    broker.start()
    try:
        yield Site(broker, cfg, pub, gw_key, client_tls(issue_client(ca, pki, GW)))
    finally:
        broker.stop()


async def poll(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling the HTTP API
            await asyncio.sleep(0.02)


async def connected(http: httpx.AsyncClient, want: bool) -> bool:
    return bool((await http.get("/api/metrics")).json()["connected"]) is want


async def admin_token(cfg: CentreConfig) -> str:
    """A new API token of the site's admin account (made the first time)."""
    async with Store(cfg.db_path) as store:
        accounts = Accounts(store, cfg.auth)
        try:
            staff = await accounts.by_username("site-admin")
        except UnknownAccount:
            staff = await accounts.add(
                "test", "site-admin", "Site admin", Role.ADMIN, secrets.token_urlsafe(16)
            )
        return (await accounts.create_token("test", staff.id, "site")).secret


@contextlib.asynccontextmanager
async def centre_running(cfg: CentreConfig) -> AsyncIterator[httpx.AsyncClient]:
    """The centre as `onekey centre run` runs it (uvicorn, lifespan), in this event loop. The
    client sends an admin API token."""
    token = await admin_token(cfg)
    server = uvicorn_server(cfg)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), within=10)
        assert server.started, "the centre did not start"
        base = f"http://{cfg.http_host}:{cfg.http_port}"
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, timeout=5, headers=auth) as http:
            await poll(lambda: connected(http, True))
            yield http
    finally:
        server.should_exit = True
        async with asyncio.timeout(15):
            await task


@contextlib.asynccontextmanager
async def gateway(site: Site, topic: str, persistent: bool = False) -> AsyncIterator[MqttClient]:
    """The test's gateway, subscribed to one of its down topics."""
    client = MqttClient(
        f"{GW}-test", HOST, site.broker.port, tls=site.gw_tls, clean_session=not persistent
    )
    await client.connect()
    try:
        await client.subscribe(topic, qos=1)
        yield client
    finally:
        await client.disconnect()


async def next_signed(
    site: Site, client: MqttClient, topic: str, within: float = 10.0
) -> dict[str, Any]:
    """The next message on `topic`, after checking the centre's signature (§6)."""
    async with asyncio.timeout(within), contextlib.aclosing(client.messages()) as it:
        async for msg in it:
            assert msg.topic == topic
            return verify_frame(load_public_hex(site.centre_pub), msg.topic, msg.payload)
    raise AssertionError("the gateway's connection ended")
