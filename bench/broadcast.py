"""An Extreme/Immediate broadcast to hundreds of speakers: how long until the centre knows every
speaker played it.

Everything is real but the speakers' bodies: both Mosquitto brokers (the centre's with TLS), the
centre (FastAPI, SQLite) and the gateway as separate processes. `--firmware N` speakers run the
real firmware in the MicroPython unix port (heap limit as on an ESP32, the simulated TTS module
taking `--ms-per-char` per character); the rest are protocol-level speakers (harness.protospeaker:
the shared codec over one MQTT connection each, "playing" for `--play-ms`).

The clock starts just before `POST /api/broadcasts` and, per speaker, stops at the centre's
`reported_at` of its `played` report (the centre's receive time). Usage:
    python bench/broadcast.py [--speakers 500] [--firmware 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import percentile, progress
from harness.protospeaker import ProtoSpeaker
from harness.stack import HOST, LocalStack

TEXT = "山洪预警：请立即撤离到高处。"


async def start_speakers(
    stack: LocalStack, n: int, n_fw: int, ms_per_char: int, play_ms: int
) -> tuple[list[ProtoSpeaker], list[Any]]:
    assert stack.village_broker is not None
    protos: list[ProtoSpeaker] = []
    firmware: list[Any] = []
    for i in range(n_fw):
        spk = stack.add_speaker(f"fw-{i:04d}", f"h-f{i:04d}", reload=False, sim_ms_per_char=ms_per_char)
        firmware.append(spk)
        progress("register firmware speakers", i + 1, n_fw)
    for i in range(n - n_fw):
        dev = f"ps-{i:04d}"
        key, password = stack.register_device(dev, f"h-p{i:04d}", role="speaker", reload=False)
        protos.append(ProtoSpeaker(dev, key, HOST, stack.village_broker.port, password, play_ms=play_ms))
        progress("register protocol speakers", i + 1, n - n_fw)
    stack.village_broker.reload()
    for i, spk in enumerate(firmware):
        await asyncio.to_thread(spk.start)
        progress("start firmware speakers", i + 1, n_fw)
    for start in range(0, len(protos), 50):
        await asyncio.gather(*(p.connect() for p in protos[start : start + 50]))
        progress("connect protocol speakers", min(start + 50, len(protos)), len(protos))
    return protos, firmware


async def one_run(stack: LocalStack, n: int, timeout: float) -> dict[str, float]:
    t0_ms = time.time_ns() // 1_000_000
    t0 = time.monotonic()
    created = await asyncio.to_thread(
        stack.api,
        "POST",
        "/api/broadcasts",
        {
            "by": "bench",
            "urgency": "Immediate",
            "severity": "Extreme",
            "confirm_extreme": True,  # to a whole village: confirmed, as staff would
            "certainty": "Observed",
            "valid_for_s": 600,
            "area": [{"village": stack.village}],
            "text": TEXT,
        },
    )
    bc_id = created["id"]
    while True:
        detail = await asyncio.to_thread(stack.api, "GET", f"/api/broadcasts/{bc_id}")
        played = [s for s in detail["speakers"] if s["state"] == "played"]
        if len(played) >= n:
            break
        if time.monotonic() - t0 > timeout:
            states: dict[str, int] = {}
            for s in detail["speakers"]:
                states[s["state"]] = states.get(s["state"], 0) + 1
            raise TimeoutError(f"{bc_id}: after {timeout}s only {len(played)}/{n} played: {states}")
        await asyncio.sleep(0.05)
    per = {s["device"]: (s["reported_at"] - t0_ms) / 1000 for s in played}
    fw = [v for d, v in per.items() if d.startswith("fw-")]
    out = {
        "all": max(per.values()),
        "p50": percentile(list(per.values()), 50),
        "p99": percentile(list(per.values()), 99),
    }
    if fw:
        out["fw_p50"] = percentile(fw, 50)
        out["fw_max"] = max(fw)
    return out


async def run(stack: LocalStack, args: argparse.Namespace) -> None:
    protos, firmware = await start_speakers(
        stack, args.speakers, args.firmware, args.ms_per_char, args.play_ms
    )
    await asyncio.sleep(3.0)  # every speaker's first heartbeat is in; the gateway knows them
    results = []
    try:
        for r in range(args.runs):
            res = await one_run(stack, args.speakers, timeout=60)
            results.append(res)
            extra = (
                f"  firmware p50 {res['fw_p50']:.3f} s, max {res['fw_max']:.3f} s"
                if "fw_p50" in res else ""
            )
            print(
                f"run {r + 1}: all {args.speakers} played at centre {res['all']:.3f} s;"
                f" per speaker p50 {res['p50']:.3f} s, p99 {res['p99']:.3f} s{extra}",
                flush=True,
            )
            await asyncio.sleep(1.0)
    finally:
        for p in protos:
            await p.close()
        for spk in firmware:
            await asyncio.to_thread(spk.stop)
    print(
        f"speakers: {args.speakers} ({args.firmware} real firmware in MicroPython, "
        f"{args.speakers - args.firmware} protocol-level); text {len(TEXT)} characters, "
        f"firmware TTS {args.ms_per_char} ms/char, protocol speakers play {args.play_ms} ms"
    )
    best = min(results, key=lambda x: x["all"])
    worst = max(results, key=lambda x: x["all"])
    print(f"all played at centre: best {best['all']:.3f} s, worst {worst['all']:.3f} s (target 2 s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speakers", type=int, default=500)
    ap.add_argument("--firmware", type=int, default=20, help="how many run the real firmware")
    ap.add_argument("--ms-per-char", type=int, default=5, help="simulated TTS speed (firmware)")
    ap.add_argument("--play-ms", type=int, default=70, help="protocol speakers' play time")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onekey-bench-") as tmp, LocalStack(Path(tmp)) as stack:
        stack.setup()
        stack.start()
        asyncio.run(run(stack, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
