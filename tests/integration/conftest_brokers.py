"""Fixtures that run real Mosquitto brokers on free loopback ports in a test's tmp_path.

Import the fixture functions into a test module to use them; each fixture stops its broker
whatever the test does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from transport.brokers import CentreBroker, VillageBroker, client_tls
from transport.mqtt import Message, MqttClient, TlsFiles
from transport.pki import CaFiles, create_ca, issue_client, issue_server
from transport.procs import free_port

HOST = "127.0.0.1"
PASSWORDS = {"gateway": "gateway-secret", "btn-1": "btn-1-secret", "btn-2": "btn-2-secret"}


@dataclass(frozen=True)
class Pki:
    ca: CaFiles
    dir: Path

    def client(self, cn: str) -> TlsFiles:
        return client_tls(issue_client(self.ca, self.dir, cn))


@pytest.fixture(name="village_broker")
def village_broker_fixture(tmp_path: Path) -> Iterator[VillageBroker]:
    broker = VillageBroker(tmp_path / "village", free_port(HOST), HOST)
    for name, password in PASSWORDS.items():
        broker.add_user(name, password)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(name="centre_pki")
def centre_pki_fixture(tmp_path: Path) -> Pki:
    d = tmp_path / "pki"
    return Pki(create_ca(d), d)


@pytest.fixture(name="centre_broker")
def centre_broker_fixture(tmp_path: Path, centre_pki: Pki) -> Iterator[CentreBroker]:
    server = issue_server(centre_pki.ca, centre_pki.dir, "centre-broker")
    broker = CentreBroker(tmp_path / "centre", free_port(HOST), server, HOST)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def village_client(broker: VillageBroker, user: str, **kw: object) -> MqttClient:
    return MqttClient(
        user,
        broker.host,
        broker.port,
        username=user,
        password=PASSWORDS[user],
        **kw,  # type: ignore[arg-type]
    )


async def next_message(client: MqttClient, timeout: float = 5.0) -> Message:
    async with asyncio.timeout(timeout), contextlib.aclosing(client.messages()) as it:
        async for msg in it:
            return msg
    raise AssertionError("messages() ended without a message")


async def nothing_arrives(client: MqttClient, within: float) -> None:
    """Assert that no message arrives within `within` seconds (a bounded negative check)."""
    try:
        msg = await next_message(client, within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message on {msg.topic}: {msg.payload!r}")
