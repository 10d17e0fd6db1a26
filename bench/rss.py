"""The gateway's memory (RSS) with many connected devices: goal at most 60 MB with 500.

Real processes: both Mosquitto brokers, the centre and the gateway (`onekey gateway run`, admin
API included). The devices are protocol-level (harness.protodevice: the shared codec over one
MQTT connection each, with its own broker login and key), all in this process, each sending a
signed heartbeat every --hb-s seconds through the village broker. The gateway's VmRSS is read
from /proc/PID/status:
  idle          gateway up, no device connected
  connected     every device connected and heartbeating, after --hold-s seconds (max seen)
  burst         while every device sends one alarm, until all are `received` (max seen)
  after         --hold-s seconds after the burst, still heartbeating
  peak (VmHWM)  the kernel's high-water mark of the gateway's RSS over the whole run
Anchor: an idle `python -c` with the gateway's imports (onekey.cli, gateway.service,
gateway.admin, which loads Starlette and uvicorn, and the command line's parser as `onekey
gateway run` builds it, importing the gateway command's module only), measured in the same
run: what the interpreter and the libraries take before the gateway holds anything; and the
gateway's own modules alone, for comparison.
With --tracemalloc the gateway runs under tracemalloc (a wrapper around `onekey gateway run`,
nothing in the product changes; tracing itself costs memory, so its RSS figures are not the
figure) and what its Python heap holds at the end of the burst is printed by package and by
line.
Usage: python bench/rss.py [--devices 500] [--hb-s 5] [--hold-s 20] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import progress
from harness.protodevice import ProtoDevice
from harness.stack import HOST, LocalStack
from transport.procs import ManagedProcess

GOAL_MB = 60.0
ROOT = Path(__file__).resolve().parent.parent
# Runs `onekey ...` under tracemalloc; on SIGUSR1 writes what is allocated, by package and by
# line, to the file named first.
TRACED = r"""
import runpy, signal, sys, tracemalloc
tracemalloc.start(1)
out, root = sys.argv[1], sys.argv[2]
def where(path):
    if "site-packages/" in path:
        return path.split("site-packages/")[1].split("/")[0]
    if path.startswith(root + "/"):
        return "ours: " + path[len(root) + 1:].split("/")[0]
    return "stdlib" if "/lib/python" in path else path
def dump(*_):
    snap = tracemalloc.take_snapshot()
    pkgs = {}
    for st in snap.statistics("filename"):
        key = where(st.traceback[0].filename)
        pkgs[key] = pkgs.get(key, 0) + st.size
    with open(out, "w") as f:
        f.write(f"traced {sum(pkgs.values()) / 2**20:.1f} MB\n")
        for k, v in sorted(pkgs.items(), key=lambda kv: -kv[1])[:15]:
            f.write(f"  {v / 2**20:6.2f} MB  {k}\n")
        f.write("top lines:\n")
        for st in snap.statistics("lineno")[:12]:
            fr = st.traceback[0]
            f.write(f"  {st.size / 2**20:6.2f} MB  {fr.filename.split('site-packages/')[-1]}:{fr.lineno}\n")
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["onekey", *sys.argv[3:]]
runpy.run_module("onekey.cli", run_name="__main__", alter_sys=True)
"""
# What the gateway process imports: its modules, the admin API, and the command line's parser
# (`onekey gateway run` builds the gateway command's parser only; the others are names).
ANCHOR_IMPORTS = (
    "import onekey.cli, gateway.service, gateway.admin; onekey.cli.build_parser(['gateway'])"
)
# The gateway's own modules alone: no admin API (Starlette, uvicorn), no other command.
NO_ADMIN_IMPORTS = "import onekey.cli, gateway.service"


def status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f} MB"


def anchor_kb(imports: str = ANCHOR_IMPORTS) -> int:
    """VmRSS of an idle interpreter that has imported what the gateway imports."""
    proc = subprocess.Popen(
        [sys.executable, "-c",
         f"{imports}; import time; print('ready', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the anchor interpreter did not start")
        return status_kb(proc.pid, "VmRSS")
    finally:
        proc.kill()
        proc.wait()


class Sampler:
    """The gateway's VmRSS every 0.2 s while a phase runs; the largest value seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, status_kb(self.pid, "VmRSS"))
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self.peak = status_kb(self.pid, "VmRSS")
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.peak = max(self.peak, status_kb(self.pid, "VmRSS"))
        return self.peak


async def heartbeats(devices: list[ProtoDevice], every_s: float) -> None:
    """Each device's signed heartbeat (QoS 0, §4) every `every_s`, spread over the period."""
    start = time.monotonic()
    n = 0
    while True:
        for i, d in enumerate(devices):
            due = start + n * every_s + i * every_s / len(devices)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            topic, payload, _c = d.frame("hb", bat=90, rssi=-60, fw="proto-1", up=n * int(every_s))
            d.client.publish_nowait(topic, payload, qos=0)
        n += 1


def wait_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def traced_gateway(stack: LocalStack, report: Path) -> None:
    """Replace the stack's gateway by one running under tracemalloc."""
    assert stack.gateway_proc is not None
    stack.gateway_proc.stop()
    stack.gateway_proc = ManagedProcess(
        [sys.executable, "-c", TRACED, str(report), str(ROOT), "gateway", "run", "--config",
         str(stack.gateway_config)],
        stack.root / "gateway-traced.log", name="gateway",
    )
    stack.gateway_proc.start()
    stack.wait_gateway_links()


async def run(
    stack: LocalStack, n_devices: int, hb_s: float, hold_s: float, report: Path | None
) -> dict[str, int]:
    assert stack.village_broker is not None and stack.gateway_proc is not None
    pid = stack.gateway_proc.pid
    assert pid is not None
    stack.wait_admin()
    out = {
        "anchor": await asyncio.to_thread(anchor_kb),
        "no_admin": await asyncio.to_thread(anchor_kb, NO_ADMIN_IMPORTS),
    }
    await asyncio.sleep(2.0)  # the gateway settles after start (admin API imported)
    out["idle"] = status_kb(pid, "VmRSS")

    devices = []
    for i in range(n_devices):
        key, password = stack.register_device(f"pd-{i:04d}", f"h-{i:04d}", reload=False)
        devices.append(ProtoDevice(f"pd-{i:04d}", key, HOST, stack.village_broker.port, password))
        progress("register devices", i + 1, n_devices)
    stack.village_broker.reload()
    sampler = Sampler(pid)
    sampler.start()
    for start in range(0, n_devices, 50):
        await asyncio.gather(*(d.connect() for d in devices[start : start + 50]))
        progress("connect devices", min(start + 50, n_devices), n_devices)
    beat = asyncio.create_task(heartbeats(devices, hb_s))
    await asyncio.sleep(hold_s)
    out["connected"] = await sampler.stop()
    out["connected_now"] = status_kb(pid, "VmRSS")
    seen = stack.gateway_metrics().get("counts", {}).get("heartbeats", 0)
    out["heartbeats"] = int(seen)

    sampler.start()
    frames = [(d, *d.frame("alarm")) for d in devices]
    t0 = time.monotonic()
    await asyncio.gather(*(d.client.publish_nowait(t, p, qos=1) for d, t, p, _c in frames))
    for d, _t, _p, c in frames:
        await d.wait_ack(c, "received", timeout=120)
    out["burst_ms"] = int((time.monotonic() - t0) * 1000)
    out["burst"] = await sampler.stop()
    if report is not None:
        os.kill(pid, signal.SIGUSR1)  # the traced gateway writes its report
        await asyncio.to_thread(wait_file, report, 60.0)

    await asyncio.sleep(hold_s)
    out["after"] = status_kb(pid, "VmRSS")
    out["hwm"] = status_kb(pid, "VmHWM")
    beat.cancel()
    for d in devices:
        await d.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--hb-s", type=float, default=5.0, help="each device's heartbeat period")
    ap.add_argument("--hold-s", type=float, default=20.0, help="time connected before reading")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="run the gateway under tracemalloc and print what its heap holds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onekey-rss-") as tmp, LocalStack(Path(tmp)) as stack:
        stack.setup()
        stack.start()
        report = Path(tmp) / "tracemalloc.txt" if args.tracemalloc else None
        if report is not None:
            traced_gateway(stack, report)
        r = asyncio.run(run(stack, args.devices, args.hb_s, args.hold_s, report))
        if report is not None:
            print("tracemalloc, the gateway's Python heap after the burst:")
            print(report.read_text() if report.exists() else "  (no report written)")
    print(f"devices: {args.devices} protocol-level, one MQTT connection each, a heartbeat every "
          f"{args.hb_s:g} s ({r['heartbeats']} stored by the gateway in {args.hold_s:g} s)")
    print(f"anchor: idle python -c '{ANCHOR_IMPORTS}': {mb(r['anchor'])}")
    print(f"  the gateway's modules alone, python -c '{NO_ADMIN_IMPORTS}': {mb(r['no_admin'])}")
    print(f"gateway idle, no device:        {mb(r['idle'])}")
    print(f"gateway, {args.devices} connected (max):   {mb(r['connected'])}  (now {mb(r['connected_now'])})")
    print(f"gateway, burst of {args.devices} alarms (max): {mb(r['burst'])}  "
          f"(all received in {r['burst_ms']} ms)")
    print(f"gateway after the burst:        {mb(r['after'])}")
    print(f"gateway peak (VmHWM):           {mb(r['hwm'])}  goal <= {GOAL_MB:.0f} MB: "
          f"{'met' if r['hwm'] / 1024 <= GOAL_MB else 'NOT met'}")
    print(f"gateway above the anchor:       {mb(r['hwm'] - r['anchor'])} at peak")
    return 0 if r["hwm"] / 1024 <= GOAL_MB else 1


if __name__ == "__main__":
    sys.exit(main())
