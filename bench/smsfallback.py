"""Uplink loss to SMS: how long the second path takes, in the virtual modem set-up.

A local stack (real Mosquitto, centre, gateway) whose gateway has a virtual SIM7600
(`harness.vmodem`) and a centre with another; `harness.smsrelay` plays the network between
them (polled every 10 ms). Per round: the centre broker is stopped (the uplink is lost, t0), a
protocol-level button sends an alarm at once, and the clock runs until
  centre modem out   the gateway's modem accepted the §10 text for the centre (its +CMGS)
  centre modem in    the centre's modem driver delivered it as an incoming SMS
  centre ingested    `centre.smsin` committed it (the alarm is on the console)
  first contact      the gateway's modem accepted the SMS to the household's first contact
then the broker is started again and the alarm's `received` awaited. The gateway's threshold
`link_down_s` is part of every figure; the figures less it are the second path's own time.
Anchor, in the same run: the driver's own `send_sms` round trip against a virtual modem for the
same two kinds of text (the §10 text, two GSM 7-bit parts; a contact's text, UCS2).

Usage: python bench/smsfallback.py [--rounds 10] [--link-down-s 2]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import percentile
from centre.ingest import Metrics
from centre.live import LiveHub
from centre.smsin import SmsIngest
from centre.store import Store
from harness.protodevice import ProtoDevice
from harness.smsrelay import SmsRelay
from harness.stack import HOST, LocalStack
from harness.vmodem import VModemProcess, read_sent
from modem import IncomingSms, Modem

CENTRE_NUMBER = "+8613800000000"
GATEWAY_NUMBER = "+8613900000099"
LEADER = "13800138001"


def at_of(row: dict[str, object]) -> float:
    return dt.datetime.fromisoformat(str(row["at"])).timestamp()


def show(name: str, values: list[float]) -> None:
    p50, top = percentile(values, 50), max(values)
    print(f"  {name:<22} p50 {p50:8.1f} ms   max {top:8.1f} ms   (n={len(values)})")


async def anchor(directory: Path, rounds: int) -> dict[str, list[float]]:
    vm = VModemProcess(directory)
    vm.start()
    m = Modem(vm.port)
    try:
        await m.start()
        texts = {"gsm7 2 parts (§10 text)": "OK1 A " + "x" * 170,
                 "ucs2 2 parts (contact)": "【一键报警】" + "张" * 70}
        out: dict[str, list[float]] = {k: [] for k in texts}
        for _ in range(rounds):
            for name, text in texts.items():
                t0 = time.perf_counter()
                await m.send_sms(LEADER, text)
                out[name].append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        await m.close()
        vm.stop()


async def run(root: Path, rounds: int, link_down_s: float) -> int:
    stack = LocalStack(root / "stack", resend_after_s=2.0)
    await asyncio.to_thread(stack.setup)  # it runs event loops of its own
    gw_vm = VModemProcess(root / "gw-modem")
    c_vm = VModemProcess(root / "centre-modem")
    gw_vm.start()
    c_vm.start()
    text = stack.gateway_config.read_text()
    text += (f'\n[modem]\nport = "{gw_vm.port}"\ncentre_number = "{CENTRE_NUMBER}"\n'
             f"link_down_s = {link_down_s}\nreceipt_deadline_s = 3600.0\n")
    stack.gateway_config.write_text(text)
    try:
        await asyncio.to_thread(stack.start)
        assert stack.centre_broker is not None and stack.village_broker is not None
        stack.api("PUT", "/api/households/h-001", {
            "village": stack.village, "group": "g3", "name": "张秀英", "address": "三组5号",
            "contacts": [{"kind": "leader", "name": "李联户长", "phone": LEADER}],
        })
        deadline = time.monotonic() + 30
        while stack.gateway_metrics().get("gauges", {}).get("contacts_version", 0) == 0:
            if time.monotonic() > deadline:
                print("the contact list never reached the gateway", file=sys.stderr)
                return 1
            await asyncio.sleep(0.05)
        key, password = stack.register_device("btn-bench", "h-001")
        dev = ProtoDevice("btn-bench", key, HOST, stack.village_broker.port, password)
        await dev.connect()
        store = Store(stack.centre_dir / "centre.db")
        await store.open()
        handler = SmsIngest(store, Metrics(), LiveHub())
        m = Modem(c_vm.port)
        await m.start()
        arrived: dict[str, float] = {}
        ingested: dict[str, float] = {}

        async def read() -> None:
            async for ev in m.events():
                if isinstance(ev, IncomingSms):
                    eid = ev.text.split(" ")[2]
                    arrived[eid] = time.time()
                    await handler.handle_incoming(ev)
                    ingested[eid] = time.time()

        reader = asyncio.create_task(read())
        relay = SmsRelay(gw_vm.dir, {CENTRE_NUMBER: c_vm.dir}, GATEWAY_NUMBER)
        figures: dict[str, list[float]] = {k: [] for k in (
            "centre modem out", "centre modem in", "centre ingested", "first contact")}
        try:
            for n in range(rounds):
                seen = len(read_sent(gw_vm.dir))
                stack.centre_broker.stop()
                t0 = time.time()
                c = await dev.send("alarm")
                await dev.wait_ack(c, "stored")
                eid = f"{stack.gateway_id}:btn-bench:{c}"
                while eid not in ingested or len(read_sent(gw_vm.dir)) < seen + 2:
                    relay.step()
                    if time.time() - t0 > link_down_s + 30:
                        print(f"round {n}: no SMS within {link_down_s + 30:g} s", file=sys.stderr)
                        return 1
                    await asyncio.sleep(0.01)
                rows = {str(r["to"]): r for r in read_sent(gw_vm.dir)[seen:]}
                figures["centre modem out"].append((at_of(rows[CENTRE_NUMBER]) - t0) * 1000)
                figures["centre modem in"].append((arrived[eid] - t0) * 1000)
                figures["centre ingested"].append((ingested[eid] - t0) * 1000)
                figures["first contact"].append((at_of(rows[LEADER]) - t0) * 1000)
                stack.centre_broker.start()
                await dev.wait_ack(c, "received", timeout=60)
                print(f"round {n + 1}/{rounds}", file=sys.stderr, flush=True)
        finally:
            reader.cancel()
            await m.close()
            await store.close()
            await dev.close()
        anchors = await anchor(root / "anchor-modem", 30)
        print(f"uplink loss to SMS, link_down_s = {link_down_s:g} s ({rounds} rounds):")
        for name, values in figures.items():
            show(name, values)
        print(f"  the same less link_down_s ({link_down_s * 1000:.0f} ms):")
        for name, values in figures.items():
            show(name, [v - link_down_s * 1000 for v in values])
        print("anchor: the modem driver's send_sms round trip against a virtual modem (30 each):")
        for name, values in anchors.items():
            show(name, values)
        return 0
    finally:
        stack.stop()
        gw_vm.stop()
        c_vm.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--link-down-s", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onekey-bench-") as tmp:
        return asyncio.run(run(Path(tmp), args.rounds, args.link_down_s))


if __name__ == "__main__":
    sys.exit(main())
