"""The alarm path on an installed onekey, run by scripts/arm64-check.sh inside the arm64 root.

Uses only what `pip install onekey` (no extras) puts in the virtual environment and Debian's
mosquitto: the local stack makes a CA, the gateway's Ed25519 key, its TOML configuration and
broker passwords, starts both Mosquitto brokers (the centre one with TLS), `onekey centre run`
and `onekey gateway run`; a protocol-level button (no MicroPython) presses once and waits for
`stored` (gateway, SQLite), `received` (centre, over TLS) and `acked` (a staff member at the
centre). Prints one key=value line per step with its time, and the ELF machine of every compiled
extension the gateway loads (aarch64 on a Pi). Every wait is bounded; exits 1 on any failure.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.protodevice import ProtoDevice
from harness.stack import HOST, LocalStack
from transport.brokers import MOSQUITTO

# Emulated arm64 (qemu-user) runs Python about ten times slower than the host: generous bounds.
START_TIMEOUT_S = 180.0
ACK_TIMEOUT_S = 60.0

# The compiled extensions behind the gateway's dependencies (the rest is pure Python).
EXTENSIONS = {
    "cryptography": "cryptography.hazmat.bindings._rust",
    "pydantic-core": "pydantic_core._pydantic_core",
    "cffi": "_cffi_backend",
    "argon2-cffi-bindings": "_argon2_cffi_bindings._ffi",
}
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0x03: "i386"}

T0 = time.monotonic()


def step(what: str, **fields: object) -> None:
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    print(f"smoke: step={what} t={time.monotonic() - T0:.1f}s{extra}", flush=True)


def elf_machine(path: str) -> str:
    head = Path(path).read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        return "not-elf"
    machine = int.from_bytes(head[18:20], "little")
    return ELF_MACHINES.get(machine, hex(machine))


def check_extensions() -> None:
    for dist, module in EXTENSIONS.items():
        mod = importlib.import_module(module)
        so = str(mod.__file__)
        step("extension", dist=dist, file=Path(so).name, elf=elf_machine(so))


async def alarm_round_trip(stack: LocalStack) -> None:
    assert stack.village_broker is not None
    key, password = stack.register_device("btn-arm64", "h-arm64")
    dev = ProtoDevice("btn-arm64", key, HOST, stack.village_broker.port, password)
    await dev.connect()
    try:
        sent = time.monotonic()
        c = await dev.send("alarm", up=1)
        for state in ("stored", "received"):
            got = await dev.wait_ack(c, state, timeout=ACK_TIMEOUT_S)
            step(f"ack_{state}", ms=round((got - sent) * 1000))
        alarm_id = f"{stack.gateway_id}:btn-arm64:{c}"
        alarm = await asyncio.to_thread(stack.api, "GET", f"/api/alarms/{alarm_id}")
        step("centre_has_alarm", id=alarm_id, household=alarm["household"])
        await asyncio.to_thread(
            stack.api, "POST", f"/api/alarms/{alarm_id}/ack", {"by": "arm64", "note": "smoke"}
        )
        got = await dev.wait_ack(c, "acked", timeout=ACK_TIMEOUT_S)
        step("ack_acked", ms=round((got - sent) * 1000))
    finally:
        await dev.close()


def main() -> int:
    step("start", machine=platform.machine(), python=platform.python_version())
    for name, path in (("python", os.path.realpath(sys.executable)), ("mosquitto", MOSQUITTO)):
        step("binary", program=name, path=path, elf=elf_machine(path))
    check_extensions()
    with tempfile.TemporaryDirectory(prefix="onekey-smoke-") as tmp:
        stack = LocalStack(Path(tmp) / "stack", resend_after_s=5.0)
        try:
            stack.setup()
            step("setup", made="ca,gateway_key,gateway_toml,broker_passwords")
            stack.start_brokers()
            step("brokers", mosquitto="village+centre(TLS)")
            stack.start_centre(timeout=START_TIMEOUT_S)
            step("centre_running", http_port=stack.http_port)
            stack.start_gateway(timeout=START_TIMEOUT_S)
            step("gateway_links_up", village="up", centre="up")
            asyncio.run(alarm_round_trip(stack))
            stats = subprocess.run(
                [sys.executable, "-m", "onekey.cli", "gateway", "stats",
                 "--config", str(stack.gateway_config)],
                capture_output=True, text=True, timeout=START_TIMEOUT_S, check=True,
            )
            counts = json.loads(stats.stdout).get("counts", {})
            step("gateway_stats", stored_alarm=counts.get("stored_alarm"),
                 forwarded=counts.get("forwarded"), acks_out=counts.get("acks_out"))
            if counts.get("stored_alarm") != 1:
                print(stats.stdout, flush=True)
                return 1
        except Exception as exc:
            step("failed", error=type(exc).__name__, detail=str(exc).replace("\n", " "))
            for log in sorted((Path(tmp) / "stack").glob("*.log")):
                print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-15:]))
            return 1
        finally:
            stack.stop()
    step("done", result="ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
