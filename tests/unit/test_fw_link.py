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


LINK_RUNNER = r"""
import sys, json, asyncio
from okmqtt import Client
from link import Link

PORT = int(sys.argv[2])

class Hal:
    def __init__(self):
        self.log = []
    async def net_up(self):
        self.log.append("join")
        return True
    def net_down(self):
        self.log.append("leave")
    def net_ok(self):
        return True

class App:
    id = "btn-0001"
    def __init__(self):
        self.cfg = {"mqtt": {"host": "127.0.0.1", "port": PORT}, "keepalive_s": 30}
        self.hal = Hal()
        self.client = Client(self.id, "127.0.0.1", PORT)

async def refuse(r, w):
    await r.read(256)  # the CONNECT
    w.write(b"\x20\x02\x00\x05")  # CONNACK: not authorised
    await w.drain()
    w.close()

async def main():
    app = App()
    srv = None
    if sys.argv[1] == "refused":
        srv = await asyncio.start_server(refuse, "127.0.0.1", PORT)
    task = asyncio.create_task(Link(app).run())
    # The first attempts (backoff 0.25-0.5 s, then 0.5-1 s).
    await asyncio.sleep_ms(1300)
    task.cancel()
    if srv:
        srv.close()
    print(json.dumps(app.hal.log))

asyncio.run(main())
"""


def wifi_log(script: Path, case: str) -> list[str]:
    """The HAL's join/leave log (the last line; the link task logs its own lines before)."""
    proc = fw.run_micropython(script, case, str(fw.free_port()), heapsize="1M", timeout=30)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    log = json.loads(proc.stdout.splitlines()[-1])
    assert isinstance(log, list)
    return log


def test_a_failed_connect_leaves_the_access_point_but_a_broker_refusal_does_not(tmp_path: Path) -> None:
    script = fw.write_script(tmp_path, "linkrun.py", LINK_RUNNER)
    # Nothing listens: each failed connect leaves the access point before the next join.
    log = wifi_log(script, "unreachable")
    assert len(log) >= 4 and log[:4] == ["join", "leave", "join", "leave"], log
    # The broker answered (not authorised): the network works, the device stays joined.
    log = wifi_log(script, "refused")
    assert len(log) >= 2 and set(log) == {"join"}, log
