"""okmqtt, the firmware's MQTT client, on the MicroPython unix port against a broker that stops
reading: a write to the stalled socket must end in bounded time (the link is closed and its
owner reconnects) instead of waiting for ever."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

pytestmark = pytest.mark.integration

CONNACK = b"\x20\x02\x00\x00"


@contextmanager
def stalled_broker() -> Iterator[int]:
    """Answers a client's CONNECT and then never reads again (a hung broker whose TCP
    connection stays open). Its receive buffer is small, so the client's writes soon find the
    socket full. A second connection is answered too (the client's reconnect). Yields the
    port."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted one
    srv.bind((fw.HOST, 0))
    srv.listen(2)
    srv.settimeout(30)
    stop = threading.Event()

    def serve() -> None:
        conns = []
        try:
            for _ in range(2):
                conn, _ = srv.accept()
                conns.append(conn)
                conn.recv(256)  # the CONNECT
                conn.sendall(CONNACK)  # and nothing read after it
            stop.wait(30)
        except OSError:
            pass
        finally:
            for conn in conns:
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        srv.close()
        t.join(5)


WRITER = r"""
import sys, json, asyncio
from time import ticks_ms, ticks_diff
from okmqtt import Client

async def main():
    cl = Client("btn-0001", "127.0.0.1", int(sys.argv[1]), keepalive_s=60, write_timeout_ms=1000)
    await cl.connect()
    payload = b"x" * 500
    n = 0
    try:
        while True:
            t0 = ticks_ms()
            await cl.publish(b"ok/v1/dev/btn-0001/up/hb", payload, 0)
            n += 1
    except OSError as ex:
        took = ticks_diff(ticks_ms(), t0)
        print(json.dumps({"sent": n, "error": str(ex), "took_ms": took, "up": cl.up}))
    await cl.close()
    # The client is usable again: a new connection, as the link task makes after a failure.
    await cl.connect()
    print(json.dumps({"reconnected": cl.up}))
    await cl.close()

asyncio.run(main())
"""


def test_a_write_to_a_broker_that_stopped_reading_times_out_and_closes_the_link(tmp_path: Path) -> None:
    script = fw.write_script(tmp_path, "writer.py", WRITER)
    with stalled_broker() as port:
        t0 = time.monotonic()
        out, again = fw.micropython_json_lines(script, str(port), timeout=30)
        elapsed = time.monotonic() - t0
    # The socket filled; the blocked write gave up after write_timeout_ms (1 s) with the link
    # marked down, for its owner to close and reconnect.
    assert out["sent"] > 10 and "write timed out" in out["error"], out
    assert 1000 <= out["took_ms"] < 3000 and out["up"] is False, out
    assert again == {"reconnected": True}
    assert elapsed < 20
