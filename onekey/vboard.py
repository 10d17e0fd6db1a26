"""`onekey vboard`: a virtual board (MicroPython on a pseudo-terminal, harness/vboard.py) to
provision and test without hardware."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any


def add_commands(sub: Any) -> None:
    vb = sub.add_parser("vboard", help="a virtual board: MicroPython on a pseudo-terminal")
    vb.add_argument("--dir", type=Path, default=None,
                    help="its flash and logs (default ~/.cache/onekey/vboards/NAME)")
    vb.add_argument("--name", default="vb1", help="its name in `onekey provision list`")
    vb.add_argument("--uid", default=None, help="its unique id, hex (default: random, then kept)")
    vb.add_argument("--heapsize", default=None,
                    help="MicroPython heap (default 96K; with --frozen 56K, a plain ESP32's)")
    vb.add_argument("--frozen", action="store_true",
                    help="a plain ESP32 whose image has the firmware frozen in: the 32-bit port "
                         "built with the modules frozen (built once, about 25 s)")
    vb.set_defaults(func=_vboard)


def _vboard(args: argparse.Namespace) -> int:
    from harness.vboard import VirtualBoard

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    directory = args.dir or base / "onekey" / "vboards" / args.name
    vb = VirtualBoard(directory, name=args.name, uid=args.uid, heapsize=args.heapsize,
                      frozen=args.frozen)
    if args.frozen:
        # The image is built from the firmware the first time (about 25 s), then cached.
        print("virtual board: preparing the MicroPython image with the firmware frozen in", flush=True)
    port = vb.start()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        vb.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    kind = f", firmware frozen in, heap {vb.heapsize}" if vb.frozen else ""
    print(f"virtual board {args.name} (unique id {vb.uid}{kind}) on {port}", flush=True)
    print(f"  flash {vb.flash}, console log {vb.dir / 'console.log'}; Ctrl-C stops it", flush=True)
    try:
        vb.serve()
    finally:
        vb.stop()
    return 0
