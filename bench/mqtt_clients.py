"""MQTT clients side by side, in one run, against one real Mosquitto on loopback.

Compared: `transport.mqtt.MqttClient` (ours: paho driven from the asyncio loop), `aiomqtt` (the
maintained library of the same design) and, as the anchor, paho's own threaded loop
(`loop_start()`: what paho does with no asyncio on top). Each client publishes as a device
(`btn-bench`, its own up topic) and receives as the gateway (`gateway`, `ok/v1/dev/+/up/#`),
QoS 1 both ways, through a broker configured as the village broker is (`transport.brokers`).

  round trip  one message at a time: from the publish call to the subscriber's receipt, the next
              one only after that (--messages in total; p50, p99, max)
  burst       --burst messages published without waiting, then time until the subscriber has
              them all (messages per second, and process CPU per message: on a Pi, CPU is the
              scarce thing)

The clients take turns (--rounds rounds, each client once per round, in a rotating order), so
that a slow moment of the machine is spread over all of them rather than spent on one.
`MqttClient manual-ack` is ours as the gateway runs it: each message PUBACKed by the caller.
aiomqtt is installed for this bench only (`.venv/bin/pip install aiomqtt`); without it the
bench says so and exits with status 2.

Usage: python bench/mqtt_clients.py [--messages 2000] [--burst 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench._common import percentile
from transport.brokers import MOSQUITTO, VillageBroker
from transport.mqtt import MqttClient
from transport.procs import free_port

HOST = "127.0.0.1"
PUB, SUB = "btn-bench", "gateway"
PASSWORDS = {PUB: "bench-device-secret", SUB: "bench-gateway-secret"}
TOPIC = f"ok/v1/dev/{PUB}/up/alarm"
FILTER = "ok/v1/dev/+/up/#"
# About a device frame: 64 hex digits of MAC, a space, a small JSON body.
PAYLOAD = b"0" * 64 + b' {"t":"alarm","d":"btn-bench","c":1234567,"up":987654321,"ts":1767225600}'
WARMUP = 50


class Pair(Protocol):
    """A publisher and a subscriber of one client library, connected and subscribed."""

    async def round_trip(self) -> float: ...
    async def burst(self, n: int) -> None: ...
    async def close(self) -> None: ...


# -- ours ------------------------------------------------------------------------------------


class OnekeyPair:
    def __init__(self, port: int, manual_ack: bool) -> None:
        self.pub = MqttClient(PUB, HOST, port, username=PUB, password=PASSWORDS[PUB])
        self.sub = MqttClient(
            SUB, HOST, port, username=SUB, password=PASSWORDS[SUB], manual_ack=manual_ack
        )
        self._it: AsyncIterator[Any] | None = None

    async def open(self) -> None:
        await self.sub.connect()
        await self.sub.subscribe(FILTER, qos=1)
        await self.pub.connect()
        self._it = self.sub.messages()

    async def _next(self) -> None:
        assert self._it is not None
        msg = await anext(self._it)
        self.sub.ack(msg)  # nothing unless manual_ack

    async def round_trip(self) -> float:
        t0 = time.perf_counter()
        puback = self.pub.publish_nowait(TOPIC, PAYLOAD, qos=1)
        await self._next()
        t1 = time.perf_counter()
        await puback
        return t1 - t0

    async def burst(self, n: int) -> None:
        pubacks = [self.pub.publish_nowait(TOPIC, PAYLOAD, qos=1) for _ in range(n)]
        for _ in range(n):
            await self._next()
        await asyncio.gather(*pubacks)

    async def close(self) -> None:
        await self.pub.disconnect()
        await self.sub.disconnect()


# -- aiomqtt ---------------------------------------------------------------------------------


class AiomqttPair:
    def __init__(self, port: int) -> None:
        import aiomqtt

        # The same in-flight window as ours and the anchor (paho's default is 20). Its logger
        # warns at every publish once more than 10 are pending: quiet, or the burst is a flood.
        quiet = logging.getLogger("bench.aiomqtt")
        quiet.setLevel(logging.ERROR)
        self.pub = aiomqtt.Client(HOST, port, username=PUB, password=PASSWORDS[PUB], identifier=PUB,
                                  max_inflight_messages=1000, logger=quiet)
        self.sub = aiomqtt.Client(HOST, port, username=SUB, password=PASSWORDS[SUB], identifier=SUB,
                                  max_inflight_messages=1000, logger=quiet)
        self._it: Any = None

    async def open(self) -> None:
        await self.sub.__aenter__()
        await self.sub.subscribe(FILTER, qos=1)
        await self.pub.__aenter__()
        self._it = aiter(self.sub.messages)

    async def round_trip(self) -> float:
        t0 = time.perf_counter()
        puback = asyncio.ensure_future(self.pub.publish(TOPIC, PAYLOAD, qos=1))
        await anext(self._it)
        t1 = time.perf_counter()
        await puback
        return t1 - t0

    async def burst(self, n: int) -> None:
        # aiomqtt's publish is a coroutine that returns on PUBACK: pipelining means one task
        # per message (what the gateway's forward window would have to do).
        pubacks = [asyncio.ensure_future(self.pub.publish(TOPIC, PAYLOAD, qos=1)) for _ in range(n)]
        for _ in range(n):
            await anext(self._it)
        await asyncio.gather(*pubacks)

    async def close(self) -> None:
        await self.pub.__aexit__(None, None, None)
        await self.sub.__aexit__(None, None, None)


# -- anchor: paho's threaded loop ------------------------------------------------------------


class PahoThreadsPair:
    def __init__(self, port: int) -> None:
        self.port = port
        self.received: queue.SimpleQueue[float] = queue.SimpleQueue()
        self.pub = self._client(PUB)
        self.sub = self._client(SUB)
        self.sub.on_message = lambda _c, _u, _m: self.received.put(time.perf_counter())

    @staticmethod
    def _client(user: str) -> paho.Client:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=user)
        c.username_pw_set(user, PASSWORDS[user])
        c.max_inflight_messages_set(1000)
        return c

    async def open(self) -> None:
        subscribed = threading.Event()
        self.sub.on_subscribe = lambda *_a: subscribed.set()
        for c in (self.sub, self.pub):
            c.connect(HOST, self.port)
            c.loop_start()
        self.sub.subscribe(FILTER, qos=1)
        await asyncio.to_thread(subscribed.wait, 10)

    async def round_trip(self) -> float:
        # Blocking waits on purpose: this is paho without asyncio, the anchor.
        t0 = time.perf_counter()
        info = self.pub.publish(TOPIC, PAYLOAD, qos=1)
        t1 = self.received.get(timeout=10)
        info.wait_for_publish(10)
        return t1 - t0

    async def burst(self, n: int) -> None:
        infos = [self.pub.publish(TOPIC, PAYLOAD, qos=1) for _ in range(n)]
        for _ in range(n):
            self.received.get(timeout=30)
        for info in infos:
            info.wait_for_publish(10)

    async def close(self) -> None:
        for c in (self.pub, self.sub):
            c.disconnect()
            c.loop_stop()


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Result:
    rtt: list[float] = field(default_factory=list)
    burst_s: list[float] = field(default_factory=list)
    burst_cpu_s: list[float] = field(default_factory=list)


async def run_chunk(make: Callable[[], Awaitable[Pair]], res: Result, messages: int, burst: int) -> None:
    pair = await make()
    try:
        for _ in range(WARMUP):
            await pair.round_trip()
        for _ in range(messages):
            res.rtt.append(await pair.round_trip())
        cpu0, t0 = time.process_time(), time.perf_counter()
        await pair.burst(burst)
        res.burst_s.append(time.perf_counter() - t0)
        res.burst_cpu_s.append(time.process_time() - cpu0)
    finally:
        await pair.close()


def makers(port: int) -> dict[str, Callable[[], Awaitable[Pair]]]:
    async def onekey(manual: bool) -> Pair:
        p = OnekeyPair(port, manual)
        await p.open()
        return p

    async def aio() -> Pair:
        p = AiomqttPair(port)
        await p.open()
        return p

    async def threads() -> Pair:
        p = PahoThreadsPair(port)
        await p.open()
        return p

    return {
        "MqttClient (onekey)": lambda: onekey(False),
        "MqttClient manual-ack": lambda: onekey(True),
        "aiomqtt": aio,
        "paho loop_start (anchor)": threads,
    }


async def bench(port: int, messages: int, burst: int, rounds: int) -> dict[str, Result]:
    make = makers(port)
    results = {name: Result() for name in make}
    names = list(make)
    per_round = max(1, messages // rounds)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            await run_chunk(make[name], results[name], per_round, burst)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return results


def report(results: dict[str, Result], burst: int) -> None:
    print(f"{'client':<26} {'round trip p50':>15} {'p99':>9} {'max':>9}   "
          f"{'burst of ' + str(burst):>14} {'msg/s':>8} {'CPU/msg':>9}")
    for name, r in results.items():
        b = percentile(r.burst_s, 50)
        cpu = percentile(r.burst_cpu_s, 50) / burst
        print(
            f"{name:<26} {percentile(r.rtt, 50) * 1e3:>12.3f} ms {percentile(r.rtt, 99) * 1e3:>6.3f} ms "
            f"{max(r.rtt) * 1e3:>6.3f} ms   {b * 1e3:>11.1f} ms {burst / b:>8.0f} {cpu * 1e6:>6.1f} µs"
        )
    print(f"round trips per client: {len(next(iter(results.values())).rtt)}; "
          "burst: median of the rounds")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000, help="round trips per client")
    ap.add_argument("--burst", type=int, default=2000, help="messages per pipelined burst")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    try:
        import aiomqtt  # noqa: F401
    except ImportError:
        print(
            "aiomqtt is not installed, so it cannot be compared. Install it for this bench only "
            "(it is not a dependency of the project): .venv/bin/pip install aiomqtt",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="onekey-bench-") as tmp:
        broker = VillageBroker(Path(tmp) / "broker", free_port(HOST), HOST)
        for user, password in PASSWORDS.items():
            broker.add_user(user, password)
        with broker:
            results = asyncio.run(bench(broker.port, args.messages, args.burst, args.rounds))
    print(f"paho-mqtt {package_version('paho-mqtt')}, aiomqtt {package_version('aiomqtt')}, "
          f"{mosquitto_version()} configured by transport.brokers (village broker), loopback")
    report(results, args.burst)
    return 0


def package_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def mosquitto_version() -> str:
    out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "mosquitto"


if __name__ == "__main__":
    sys.exit(main())
