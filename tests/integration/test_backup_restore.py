"""`onekey gateway backup` on a running gateway under load, and `onekey gateway restore`."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness.protodevice import ProtoDevice
from harness.stack import LocalStack

pytestmark = pytest.mark.integration


def onekey(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onekey.cli", *args],
        capture_output=True, text=True, timeout=60,
    )


def counters(db: Path, device: str) -> set[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT counter FROM events WHERE device = ?", (device,))}
    finally:
        conn.close()


async def test_backup_of_a_running_gateway_under_load_restores_every_committed_event(
    stack: LocalStack, proto_device: ProtoDevice, tmp_path: Path
) -> None:
    config = str(stack.gateway_config)
    committed = []
    for _ in range(5):
        c = await proto_device.send("alarm", up=1)
        await proto_device.wait_ack(c, "stored")
        committed.append(c)

    async def load() -> None:
        # Alarms keep arriving while the copy is taken.
        while True:
            await proto_device.send("alarm", up=1)
            await asyncio.sleep(0.01)

    loader = asyncio.create_task(load())
    try:
        await asyncio.sleep(0.1)
        done = await asyncio.to_thread(onekey, "gateway", "backup", "--config", config)
    finally:
        loader.cancel()
    assert done.returncode == 0, done.stderr
    assert "event=backup kind=gateway" in done.stderr and "integrity=ok" in done.stderr
    copies = sorted((stack.gateway_dir / "backups").glob("gateway-*Z.db"))
    assert len(copies) == 1 and copies[0].stat().st_mode & 0o777 == 0o600
    assert (stack.gateway_dir / "backups").stat().st_mode & 0o777 == 0o700

    # While the gateway runs, restore refuses and says how to stop it; nothing is touched.
    refused = await asyncio.to_thread(onekey, "gateway", "restore", "--config", config, str(copies[0]))
    assert refused.returncode == 2
    assert "is running" in refused.stderr and "stop it first" in refused.stderr, refused.stderr

    assert stack.gateway_proc is not None
    stack.gateway_proc.stop()
    live = counters(stack.gateway_dir / "gateway.db", "btn-proto")
    restored = await asyncio.to_thread(onekey, "gateway", "restore", "--config", config, str(copies[0]))
    assert restored.returncode == 0, restored.stderr
    in_copy = counters(stack.gateway_dir / "gateway.db", "btn-proto")
    assert set(committed) <= in_copy <= live
    asides = list(stack.gateway_dir.glob("gateway.db.before-restore-*"))
    assert len(asides) == 1 and counters(asides[0], "btn-proto") == live

    # The gateway runs again on the restored database.
    await asyncio.to_thread(stack.start_gateway)
    c = await proto_device.send("alarm", up=1)
    await proto_device.wait_ack(c, "stored")


async def test_centre_backup_runs_beside_the_centre_and_restore_waits_until_it_stops(
    stack: LocalStack, proto_device: ProtoDevice
) -> None:
    c = await proto_device.send("alarm", up=1)
    await proto_device.wait_ack(c, "received")
    config = str(stack.centre_config)
    done = await asyncio.to_thread(onekey, "centre", "backup", "--config", config, "--keep", "1")
    assert done.returncode == 0, done.stderr
    (copy,) = sorted((stack.centre_dir / "backups").glob("centre-*Z.db"))
    refused = await asyncio.to_thread(onekey, "centre", "restore", "--config", config, str(copy))
    assert refused.returncode == 2 and "onekey centre run" in refused.stderr, refused.stderr
    wrong = stack.gateway_dir / "gateway.db"
    assert stack.centre_proc is not None
    stack.centre_proc.stop()
    refused = await asyncio.to_thread(onekey, "centre", "restore", "--config", config, str(wrong))
    assert refused.returncode == 2 and "is not a centre database" in refused.stderr, refused.stderr
    restored = await asyncio.to_thread(onekey, "centre", "restore", "--config", config, str(copy))
    assert restored.returncode == 0, restored.stderr
    await asyncio.to_thread(stack.start_centre)
    alarm = await asyncio.to_thread(stack.api, "GET", f"/api/alarms/gw-demo:btn-proto:{c}")
    assert alarm["kind"] == "alarm"


def test_a_second_gateway_or_centre_on_the_same_database_refuses_to_start(
    stack: LocalStack,
) -> None:
    gw = onekey("gateway", "run", "--config", str(stack.gateway_config))
    assert gw.returncode == 2 and "another gateway running" in gw.stderr, gw.stderr
    centre = onekey("centre", "run", "--config", str(stack.centre_config))
    assert centre.returncode != 0 and "another centre running" in centre.stderr, centre.stderr
    assert stack.gateway_proc is not None and stack.gateway_proc.running
    assert stack.centre_proc is not None and stack.centre_proc.running
