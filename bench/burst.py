"""Burst: many alarms from many devices within one second, durability on.

The devices are protocol-level (harness.protodevice: the shared codec over a real MQTT
connection each, with its own broker credentials and key), not firmware: a few hundred
MicroPython processes would measure the host, not the gateway. The gateway, both brokers and
the centre are the real processes. Times are from the first publish:
  all stored    the last device received its "stored" ack (committed to SQLite, WAL, FULL)
  all committed at centre  the centre's commit time (received_at) of the last alarm
  all at centre the last device received its "received" ack (committed at the centre, the ack
                relayed back by the gateway)
Usage: python bench/burst.py [--alarms 1000] [--devices 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fsync_commits_per_second, progress
from harness.protodevice import ProtoDevice
from harness.stack import HOST, LocalStack


async def run(stack: LocalStack, n_alarms: int, n_devices: int) -> None:
    assert stack.village_broker is not None
    devices = []
    for i in range(n_devices):
        key, password = stack.register_device(f"pd-{i:04d}", f"h-{i:04d}", reload=False)
        devices.append(ProtoDevice(f"pd-{i:04d}", key, HOST, stack.village_broker.port, password))
        progress("register devices", i + 1, n_devices)
    stack.village_broker.reload()
    for start in range(0, n_devices, 50):
        await asyncio.gather(*(d.connect() for d in devices[start : start + 50]))
        progress("connect devices", min(start + 50, n_devices), n_devices)
    await asyncio.sleep(2.5)  # let the gateway's registry catch up before the clock starts
    before = stack.gateway_metrics().get("gauges", {})
    frames = []
    for i in range(n_alarms):
        d = devices[i % n_devices]
        topic, payload, counter = d.frame("alarm")
        frames.append((d, topic, payload, counter))
    t0 = time.monotonic()
    t0_wall_ms = time.time() * 1000  # the centre's received_at is wall-clock ms, same host
    futs = [d.client.publish_nowait(topic, payload, qos=1) for d, topic, payload, _c in frames]
    await asyncio.gather(*futs)
    t_sent = time.monotonic() - t0
    stored = [await d.wait_ack(c, "stored", timeout=60) for d, _t, _p, c in frames]
    t_stored = max(stored) - t0
    received = [await d.wait_ack(c, "received", timeout=120) for d, _t, _p, c in frames]
    t_centre = max(received) - t0
    await asyncio.sleep(1.0)
    after = stack.gateway_metrics().get("gauges", {})
    rows = await asyncio.to_thread(stack.api, "GET", "/api/alarms?limit=1000&kind=alarm")
    ours = [r for r in rows if r["device"].startswith("pd-")]
    at_centre = len(ours)
    t_committed = max(r["received_at"] for r in ours) - t0_wall_ms if ours else float("nan")
    commits = after.get("store_commits", 0) - before.get("store_commits", 0)
    ops = after.get("store_ops", 0) - before.get("store_ops", 0)
    for d in devices:
        await d.close()
    print(f"alarms: {n_alarms} from {n_devices} protocol-level devices (one MQTT connection each)")
    print(f"all published (broker PUBACK): {t_sent * 1000:.0f} ms")
    print(f"all stored at gateway:         {t_stored * 1000:.0f} ms  -> {n_alarms / t_stored:.0f} alarms/s")
    print(f"all committed at centre:       {t_committed:.0f} ms  (the centre's received_at)")
    print(f"all at centre:                 {t_centre * 1000:.0f} ms  -> {n_alarms / t_centre:.0f} alarms/s")
    print(f"centre holds {at_centre} of {n_alarms}; gateway SQLite commits {commits} for {ops} writes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alarms", type=int, default=1000)
    ap.add_argument("--devices", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onekey-bench-") as tmp, LocalStack(
        Path(tmp), forward_window=1000
    ) as stack:
        stack.setup()
        stack.start()
        asyncio.run(run(stack, args.alarms, args.devices))
        print(f"raw SQLite fsync commits/s on this disk (WAL, FULL, 1 row each): "
              f"{fsync_commits_per_second(Path(tmp)):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
