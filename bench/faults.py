"""Fault campaign: SIGKILLs of the gateway, the centre and both brokers at random moments during
load from protocol-level and firmware buttons, with staff acknowledging alarms; then the proof:
0 alarms lost, 0 duplicates, per-device order kept, every staff acknowledgement shown on its
device. Bounded by the number of kills and a settle timeout; exits 1 if any check fails.

Usage: python bench/faults.py [--kills 100] [--devices 10] [--firmware 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import progress
from harness.faults import TARGETS, FaultCampaign
from harness.stack import LocalStack


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--devices", type=int, default=10, help="protocol-level buttons")
    ap.add_argument("--firmware", type=int, default=2, help="firmware buttons (MicroPython)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--settle", type=float, default=120.0, help="seconds allowed to settle")
    args = ap.parse_args()
    # The devices' own "connection lost" lines are the faults being injected: not news here.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="onekey-faults-") as tmp:
        stack = LocalStack(Path(tmp) / "stack", resend_after_s=2.0)
        stack.setup()
        try:
            stack.start()
            campaign = FaultCampaign(
                stack,
                kills=args.kills,
                devices=args.devices,
                firmware=args.firmware,
                targets=tuple(args.targets.split(",")),
                settle_timeout_s=args.settle,
                seed=args.seed,
                progress=lambda done, total: progress("kills", done, total),
            )
            t0 = time.monotonic()
            result = asyncio.run(campaign.run())
            wall = time.monotonic() - t0
        finally:
            stack.stop()
    print(f"faults: {result.summary()}; {wall:.1f} s in all")
    for name in ("lost", "phantom", "duplicates", "out_of_order", "acks_not_shown"):
        items = getattr(result, name)
        if items:
            print(f"  {name}: {items[:20]}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
