"""Attack campaign over every link: forged, replayed, withheld-and-injected, cross-device,
client-id takeover, oversized, malformed and fuzzed messages against a local system with
protocol-level and firmware devices; then the proof: 0 accepted, 0 played, every refusal
counted, every service alive with flat memory and still serving genuine traffic. Bounded by the
number of messages and a time limit; exits 1 if any check fails.

Usage: python bench/attacks.py [--messages 10000] [--seed 1] [--speakers 3]
       [--firmware-speakers 1] [--firmware-buttons 1] [--time-limit 900]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import progress
from harness.attacks import AttackCampaign
from harness.stack import LocalStack


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000, help="attack messages, at least")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--speakers", type=int, default=3, help="protocol-level speakers")
    ap.add_argument("--firmware-speakers", type=int, default=1, help="speakers running the firmware")
    ap.add_argument("--firmware-buttons", type=int, default=1, help="buttons running the firmware")
    ap.add_argument("--firmware-shots", type=int, default=40,
                    help="messages to each firmware speaker (MicroPython checks them slowly)")
    ap.add_argument("--service-takeovers", type=int, default=6,
                    help="logins with the gateway's or the centre's client id at the centre broker")
    ap.add_argument("--time-limit", type=float, default=900.0, help="seconds for the attack phases")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onekey-attacks-") as tmp:
        stack = LocalStack(Path(tmp) / "stack", resend_after_s=2.0)
        stack.setup()
        try:
            stack.start()
            campaign = AttackCampaign(
                stack,
                messages=args.messages,
                seed=args.seed,
                speakers=args.speakers,
                firmware_speakers=args.firmware_speakers,
                firmware_buttons=args.firmware_buttons,
                firmware_shots=args.firmware_shots,
                service_takeovers=args.service_takeovers,
                time_limit_s=args.time_limit,
                progress=lambda done, total: progress("attacks", done, total),
            )
            result = asyncio.run(campaign.run())
        finally:
            stack.stop()
    print(result.report())
    failures = result.failures()
    if failures:
        print("\nFAILED:")
        for f in failures:
            print(f"  {f}")
        return 1
    print("\nOK: nothing accepted, nothing played, every service alive, memory flat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
