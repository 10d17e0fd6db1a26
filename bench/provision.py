"""Time to provision a board end to end, on virtual boards (`onekey vboard`: the MicroPython
unix port, heap 96K, behind a pseudo-terminal, driven through the raw REPL).

Each run provisions a fresh virtual board (empty flash: the whole firmware is sent) against a
local system on loopback (Mosquitto, gateway with its admin API, centre), then provisions the
same board again (the firmware is already there: only identity and self-test). Printed per
step, median and max over the runs, with the bytes sent.
Usage: python bench/provision.py [--boards 5] [--role button]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.stack import LocalStack
from harness.vboard import VBoardProcess
from provisioning.flow import STEPS, Options, Summary, provision
from provisioning.gwadmin import GatewayAdmin, load_token
from provisioning.progress import Progress

UART_BAUD = 115200


def run(admin: GatewayAdmin, port: str, role: str, household: str) -> tuple[Summary, float]:
    start = time.perf_counter()
    s = provision(Options(port=port, role=role, household=household, admin=admin),
                  Progress(STEPS, quiet=True))
    return s, time.perf_counter() - start


def table(title: str, runs: list[tuple[Summary, float]]) -> None:
    print(f"\n{title} ({len(runs)} runs)")
    print(f"{'step':<10} {'median':>9} {'max':>9}")
    for step in STEPS:
        vals = [s.timings.get(step, 0.0) * 1000 for s, _ in runs]
        print(f"{step:<10} {statistics.median(vals):>7.0f}ms {max(vals):>7.0f}ms")
    totals = [t * 1000 for _, t in runs]
    print(f"{'total':<10} {statistics.median(totals):>7.0f}ms {max(totals):>7.0f}ms")
    s = runs[0][0]
    wire = statistics.median(x.wire_bytes for x, _ in runs)
    print(f"files sent {s.files_sent}, file data {s.bytes_sent / 1024:.1f} KB, "
          f"over the port {wire / 1024:.1f} KB (a {UART_BAUD}-baud UART would need "
          f"{wire * 10 / UART_BAUD:.1f} s for that alone)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boards", type=int, default=5)
    ap.add_argument("--role", default="button", choices=("button", "speaker"))
    args = ap.parse_args()
    first: list[tuple[Summary, float]] = []
    again: list[tuple[Summary, float]] = []
    with tempfile.TemporaryDirectory(prefix="onekey-bench-") as tmp:
        with LocalStack(Path(tmp) / "stack", resend_after_s=2.0) as stack:
            stack.setup()
            stack.start()
            stack.wait_admin()
            admin = GatewayAdmin(stack.admin_url, load_token(stack.admin_token_file))
            for i in range(args.boards):
                vb = VBoardProcess(Path(tmp) / f"vb{i}", name=f"bench-{i}")
                try:
                    port = vb.start()
                    first.append(run(admin, port, args.role, f"h-{i:03d}"))
                    again.append(run(admin, port, args.role, f"h-{i:03d}"))
                finally:
                    vb.stop()
                print(f"board {i + 1}/{args.boards}: {first[-1][1]:.2f} s, again {again[-1][1]:.2f} s",
                      file=sys.stderr, flush=True)
    table("fresh board: firmware, identity, self-test", first)
    table("the same board again: firmware already there", again)
    return 0


if __name__ == "__main__":
    sys.exit(main())
