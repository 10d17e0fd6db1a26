"""Reconnect backoff of the link task (device_fw/link.py) on the MicroPython unix port:
exponential from 0.5 s to 30 s, with half of each delay random."""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

RUNNER = r"""
import json
from link import backoff_ms
out = []
for fails in range(12):
    xs = [backoff_ms(fails) for _ in range(300)]
    out.append([fails, min(xs), max(xs), len(set(xs))])
print(json.dumps(out))
"""


def test_backoff_doubles_from_half_a_second_to_thirty_with_jitter(tmp_path: Path) -> None:
    script = fw.write_script(tmp_path, "backoff.py", RUNNER)
    # A roomy heap: this is about the delays, not about memory (the firmware's heap is tested
    # by the integration tests).
    (rows,) = fw.micropython_json_lines(script, heapsize="1M")
    for fails, lo, hi, distinct in rows:
        full = min(30000, 500 * 2**fails)
        assert full // 2 <= lo <= hi <= full, (fails, lo, hi)
        assert distinct > 50, "the delay is jittered"
    assert json.dumps(rows[-1][2]) and rows[-1][2] <= 30000
    assert rows[0][2] <= 500
