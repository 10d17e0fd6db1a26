"""Fixtures that start a whole local system (real Mosquitto, centre, gateway) in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from harness.protodevice import ProtoDevice
from harness.stack import HOST, LocalStack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    s = LocalStack(tmp_path / "stack", resend_after_s=2.0)
    s.setup()
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
async def proto_device(stack: LocalStack) -> AsyncIterator[ProtoDevice]:
    key, password = stack.register_device("btn-proto", "h-proto")
    assert stack.village_broker is not None
    dev = ProtoDevice("btn-proto", key, HOST, stack.village_broker.port, password)
    await dev.connect()
    try:
        yield dev
    finally:
        await dev.close()
