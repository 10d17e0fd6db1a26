"""A running broker and a whole local system keep their state private under umask 000: every
directory 0700, every key, password, token and database 0600 (issue 7, fault 8)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.stack import HOST, LocalStack
from transport.brokers import VillageBroker
from transport.mqtt import MqttClient
from transport.procs import free_port

pytestmark = pytest.mark.integration

# Files under a stack's directory that anyone may read: certificates and configuration that
# names no secret (passwords and keys are in files of their own).
PUBLIC_SUFFIXES = (".crt", ".pem", ".toml", ".conf", ".json", ".log", ".pid")
PUBLIC_NAMES = ("acl", "ca.crt", "cert.pem")


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_running_village_broker_keeps_its_directory_private(tmp_path: Path) -> None:
    broker = VillageBroker(tmp_path / "village", free_port(HOST), HOST)
    broker.add_user("btn-1", "btn-1-secret")
    broker.start()
    try:
        async with MqttClient(
            "btn-1", HOST, broker.port, username="btn-1", password="btn-1-secret",
            clean_session=False,
        ) as dev:
            await dev.subscribe("ok/v1/dev/btn-1/down/#")
    finally:
        broker.stop()  # a graceful stop writes the persistence file
    assert mode(broker.dir) == 0o700
    assert mode(broker.password_path) == 0o600
    assert mode(broker.dir / "mosquitto.db") & 0o077 == 0


def test_local_stack_run_directory_is_private(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "run" / "demo")
    stack.setup()
    secrets = [
        stack.root / "gateway" / "gateway.db",
        stack.root / "gateway" / "gateway.key",
        stack.root / "gateway" / "village-broker.pass",
        stack.root / "centre" / "centre.key",
        stack.root / "pki" / "ca.key",
        stack.root / "village-broker" / "passwd",
    ]
    for p in secrets:
        assert mode(p) == 0o600, f"{p} is {mode(p):o}"
    for p in [stack.root.parent, *(d for d in stack.root.rglob("*") if d.is_dir()), stack.root]:
        assert mode(p) == 0o700, f"{p} is {mode(p):o}"
    for p in stack.root.rglob("*"):
        if p.is_file() and not p.name.endswith(PUBLIC_SUFFIXES) and p.name not in PUBLIC_NAMES:
            assert mode(p) & 0o077 == 0, f"{p} is {mode(p):o}"
