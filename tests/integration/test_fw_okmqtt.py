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


RESOLVER = r"""
import sys, json, asyncio
import okmqtt
from okmqtt import Client
from socket import getaddrinfo

PORT = int(sys.argv[1])
seen = []
lookups = []

def counting_getaddrinfo(*args):
    lookups.append(args[0])
    return getaddrinfo(*args)

okmqtt.getaddrinfo = counting_getaddrinfo  # the name okmqtt resolves with

async def answer(r, w):
    await r.read(256)  # the CONNECT
    seen.append(1)
    w.write(b"\x20\x02\x00\x00")  # CONNACK, accepted
    await w.drain()
    await r.read(1)  # until the client closes
    w.close()

async def attempt(cl):
    try:
        await cl.connect(2000)
        await cl.close()
        return "ok"
    except OSError:
        return "refused"

async def main():
    cl = Client("btn-0001", "localhost", PORT, keepalive_s=60)
    out = []
    srv = await asyncio.start_server(answer, "127.0.0.1", PORT)
    for _ in range(3):
        out.append([await attempt(cl), len(lookups)])
    srv.close()
    await srv.wait_closed()
    out.append([await attempt(cl), len(lookups)])  # nothing listens: the address is dropped
    srv = await asyncio.start_server(answer, "127.0.0.1", PORT)
    out.append([await attempt(cl), len(lookups)])
    srv.close()
    await srv.wait_closed()
    print(json.dumps({"attempts": out, "accepted": len(seen), "names": lookups}))

asyncio.run(main())
"""


def test_the_broker_name_is_resolved_once_and_again_only_after_a_failed_connect(tmp_path: Path) -> None:
    script = fw.write_script(tmp_path, "resolver.py", RESOLVER)
    (out,) = fw.micropython_json_lines(script, str(fw.free_port()), timeout=30)
    assert out["attempts"] == [["ok", 1], ["ok", 1], ["ok", 1], ["refused", 1], ["ok", 2]], out
    assert out["accepted"] == 4 and out["names"] == ["localhost", "localhost"]
