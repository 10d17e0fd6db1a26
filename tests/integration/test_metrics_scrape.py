"""Prometheus `/metrics` of the gateway (its admin API) and of the centre, scraped over real
HTTP on loopback and parsed with prometheus-client's own parser: the values move with what
happens, and a scrape without the bearer token is refused. Brokers are stand-ins: nothing here
needs Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from centre.api import create_app as centre_app
from centre.auth import Role
from centre.config import load_config as load_centre_config
from centre.enrol import add_staff_async, enrol_gateway_async, init_centre
from gateway import admin
from gateway.config import load_config, render_config
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store import EventRecord, Store
from harness.fakegateway import FakeBroker, event_body, signed_event, signed_heartbeat, wait_until
from protocol import uplink
from transport.keys import public_hex
from transport.procs import free_port
from transport.prom import MODEM_STATES

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def scrape(url: str, token: str) -> Samples:
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(url, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


async def refused(url: str) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(url)).status_code


@contextlib.asynccontextmanager
async def serving(app: object, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")  # type: ignore[arg-type]
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), 10)
        assert server.started, "the test server did not start"
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_gateway_metrics_are_scraped_and_move(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "village-broker.pass").write_text("pw\n")
    (tmp_path / "gateway.toml").write_text(render_config(
        gateway_id="gw-1", village="v-1", state_dir=tmp_path, centre_public_key="00" * 32,
        village_host="127.0.0.1", village_port=1883, centre_host="127.0.0.1", centre_port=8883,
        admin_port=port, broker_passwd=tmp_path / "village-broker.pass",
    ))
    cfg = load_config(tmp_path / "gateway.toml")
    assert cfg.admin is not None
    metrics = Metrics()
    store = Store(cfg.db_path, observe_commit=metrics.commit_seconds.observe)
    await store.start()
    served = asyncio.create_task(admin.serve(cfg, store, Registry(), metrics))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        await wait_until(lambda: cfg.admin is not None and cfg.admin.token_file.exists(), 10)
        token = cfg.admin.token_file.read_text().strip()

        async def answers() -> bool:
            try:
                return await refused(url) == 401
            except httpx.TransportError:
                return False

        deadline = asyncio.get_running_loop().time() + 10
        while not await answers():
            assert asyncio.get_running_loop().time() < deadline, "admin API not listening"
            await asyncio.sleep(0.05)

        before = await scrape(url, token)
        assert value(before, "onekey_gateway_events", state="stored") == 0
        assert value(before, "onekey_gateway_link_up", link="village") == 0
        assert value(before, "onekey_gateway_modem_state", onekey_gateway_modem_state="absent") == 1
        assert value(before, "onekey_gateway_store_ok") == 1
        commits = value(before, "onekey_gateway_store_commit_seconds_count")

        await store.insert_event(EventRecord("btn-1", 1, "alarm", None, "v-1", "h-1", 1, None, None))
        metrics.reject("bad_mac")
        metrics.reject("bad_mac")
        metrics.gauge("village_link", "up")
        metrics.set_modem_state("no_network")
        after = await scrape(url, token)
        assert value(after, "onekey_gateway_events", state="stored") == 1
        assert value(after, "onekey_gateway_outbox_events") == 1
        assert value(after, "onekey_gateway_rejected_total", reason="bad_mac") == 2
        assert value(after, "onekey_gateway_link_up", link="village") == 1
        assert value(after, "onekey_gateway_link_up", link="centre") == 0
        assert value(after, "onekey_gateway_modem_state", onekey_gateway_modem_state="absent") == 0
        assert value(
            after, "onekey_gateway_modem_state", onekey_gateway_modem_state="no_network"
        ) == 1
        assert value(after, "onekey_gateway_store_commit_seconds_count") == commits + 1
        assert value(after, "onekey_gateway_store_free_bytes") > 0
        with pytest.raises(ValueError, match="not one of"):
            metrics.set_modem_state("on fire")
    finally:
        served.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await served
        await store.close()


def test_metric_registries_are_per_instance() -> None:
    a, b = Metrics(), Metrics()
    a.reject("replay")
    a.set_modem_state("ok")
    assert b.rejected == {} and b.gauges["modem"] == "absent"


async def test_centre_metrics_are_scraped_with_an_operator_token_and_move(tmp_path: Path) -> None:
    gw_key = Ed25519PrivateKey.generate()
    path, _pub = init_centre(tmp_path / "centre", gateway_timeout_s=60)
    cfg = load_centre_config(path)
    await enrol_gateway_async(cfg, "gw-1", public_hex(gw_key), name="Xiaocun")
    token = await add_staff_async(
        cfg, "prometheus", "Prometheus", Role.OPERATOR, secrets.token_urlsafe(16),
        token_name="prometheus",
    )
    assert token is not None
    broker = FakeBroker()
    app = centre_app(cfg, client_factory=broker.factory)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    async with serving(app, port):
        await wait_until(lambda: bool(broker.clients) and broker.clients[-1].connected)
        assert await refused(url) == 401
        before = await scrape(url, token)
        assert value(before, "onekey_centre_events", state="open") == 0
        assert value(before, "onekey_centre_broker_up") == 1
        assert value(before, "onekey_centre_modem_state", onekey_centre_modem_state="absent") == 1
        commits = value(before, "onekey_centre_ingest_commit_seconds_count")

        metrics = app.state.metrics
        client = broker.clients[-1]
        client.deliver(*signed_event(gw_key, event_body("gw-1", "btn-1", 7)))
        full = uplink.StoreState(ok=False, full=True, failed=1, free_bytes=0)
        client.deliver(*signed_heartbeat(gw_key, "gw-1", ts=1, outbox=3, store=full))
        client.deliver("ok/v1/gw/gw-1/up/event", b"garbage")
        await wait_until(lambda: metrics.counts["heartbeats"] == 1 and metrics.counts["rejected"] == 1)
        metrics.set_modem_state("ok")
        after = await scrape(url, token)
        assert value(after, "onekey_centre_events", state="open") == 1
        assert value(after, "onekey_centre_events_received_total") == 1
        assert value(after, "onekey_centre_rejected_total", reason="malformed") == 1
        assert value(after, "onekey_centre_gateway_online", gw="gw-1") == 1
        assert value(after, "onekey_centre_gateway_outbox_events", gw="gw-1") == 3
        assert value(after, "onekey_centre_gateway_store_ok", gw="gw-1") == 0
        assert value(after, "onekey_centre_gateway_store_free_bytes", gw="gw-1") == 0
        assert value(after, "onekey_centre_modem_state", onekey_centre_modem_state="ok") == 1
        assert value(after, "onekey_centre_ingest_commit_seconds_count") > commits


def test_the_modem_gauge_knows_every_state_of_the_modem_driver() -> None:
    from modem import driver

    states = {driver.STARTING, driver.OK, driver.NO_NETWORK, driver.SIM_MISSING, driver.GONE}
    assert set(MODEM_STATES) == states | {"absent"}
