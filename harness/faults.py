"""A fault campaign: SIGKILLs of the gateway, the centre and both brokers at random moments
while devices raise alarms and staff acknowledge them; then the proof that nothing was lost,
duplicated or reordered, and that every acknowledgement reached its device.

Used by `bench/faults.py` (hundreds of kills) and by a shorter test in the suite. Everything is
bounded: a number of kills, a settle time, and a hard deadline.

The devices are protocol-level buttons (`CampaignDevice`) that behave as the firmware does
where it matters here (a flash outbox re-sent until `stored`, a persistent session, the §4.3
heartbeat with the events still open), plus optional firmware buttons on the unix port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import urllib.error
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from device_fw import okproto
from harness.stack import HOST, LocalStack
from transport.mqtt import MqttClient, MqttError

log = logging.getLogger("onekey.harness.faults")

TARGETS = ("gateway", "centre", "village_broker", "centre_broker")
_ORDER = {"sending": 0, "stored": 1, "received": 2, "acked": 3}
RESEND_S = 1.5
HEARTBEAT_S = 3.0


class CampaignDevice:
    """A protocol-level button that keeps every alarm until the gateway has it (`stored`), re-sends
    it byte for byte, one at a time in counter order, reconnects after any loss of the broker,
    and says in a heartbeat which of its alarms have not reached their final state (§4.3)."""

    def __init__(self, device_id: str, key: bytes, password: str, port: int) -> None:
        self.id = device_id
        self.key = key
        self.password = password
        self.port = port
        self.counter = 0
        self.frames: dict[int, tuple[str, bytes]] = {}
        self.state: dict[int, str] = {}
        self.connects = 0
        self._client: MqttClient | None = None

    def raise_alarm(self) -> int:
        self.counter += 1
        c = self.counter
        self.frames[c] = okproto.encode_up(self.key, self.id, "alarm", c, {"up": c})
        self.state[c] = "sending"
        if self._head() == c:
            self._send_now(c)
        return c

    def _head(self) -> int | None:
        """The oldest alarm not yet stored: the only one on the wire (§5.5), so that a broker
        that loses a message it had acknowledged cannot let a newer alarm overtake it."""
        waiting = [c for c, s in self.state.items() if s == "sending"]
        return min(waiting) if waiting else None

    def open_events(self) -> list[list[Any]]:
        return [[c, s] for c, s in sorted(self.state.items()) if s != "acked"][-8:]

    def _send_now(self, c: int) -> None:
        client = self._client
        if client is not None and client.connected:
            topic, payload = self.frames[c]
            with contextlib.suppress(MqttError):
                client.publish_nowait(topic, payload, qos=1)

    def _heartbeat(self, client: MqttClient) -> None:
        self.counter += 1
        fields: dict[str, Any] = {"ob": sum(1 for s in self.state.values() if s == "sending")}
        ev = self.open_events()
        if ev:
            fields["ev"] = ev
        topic, payload = okproto.encode_up(self.key, self.id, "hb", self.counter, fields)
        with contextlib.suppress(MqttError):
            client.publish_nowait(topic, payload, qos=0)

    def _on_down(self, topic: str, payload: bytes) -> None:
        try:
            body = okproto.open_down(self.key, self.id, topic, payload)
        except okproto.ProtocolError:
            return
        ref, s = int(body.get("ref", -1)), str(body.get("s"))
        old = self.state.get(ref)
        if old is not None and _ORDER.get(s, -1) > _ORDER[old]:
            self.state[ref] = s
            head = self._head()
            if old == "sending" and head is not None:
                self._send_now(head)

    async def run(self) -> None:
        while True:
            client = MqttClient(
                self.id, HOST, self.port, username=self.id, password=self.password,
                clean_session=False, keepalive=5,
            )
            try:
                await client.connect(timeout=3)
                await client.subscribe(okproto.topic_down(self.id), qos=1)
                self._client = client
                self.connects += 1
                self._heartbeat(client)
                pump = asyncio.create_task(self._pump(client))
                try:
                    async for msg in client.messages():
                        self._on_down(msg.topic, msg.payload)
                finally:
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pump
            except (MqttError, TimeoutError, OSError):
                pass
            finally:
                self._client = None
                with contextlib.suppress(MqttError):
                    await client.disconnect()
            await asyncio.sleep(0.2 + random.random() * 0.3)

    async def _pump(self, client: MqttClient) -> None:
        last_hb = time.monotonic()
        while True:
            head = self._head()
            if head is not None:
                self._send_now(head)
            if time.monotonic() - last_hb >= HEARTBEAT_S:
                self._heartbeat(client)
                last_hb = time.monotonic()
            await asyncio.sleep(RESEND_S)


@dataclass
class CampaignResult:
    kills: Counter[str] = field(default_factory=Counter)
    alarms: int = 0
    firmware_alarms: int = 0
    at_centre: int = 0
    staff_acks: int = 0
    lost: list[str] = field(default_factory=list)
    phantom: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    acks_not_shown: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    settle_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.phantom or self.duplicates or self.out_of_order or self.acks_not_shown
        )

    def summary(self) -> str:
        kills = ", ".join(f"{k} {n}" for k, n in sorted(self.kills.items()))
        return (
            f"kills: {sum(self.kills.values())} ({kills}); alarms: {self.alarms} protocol-level, "
            f"{self.firmware_alarms} firmware presses; at the centre: {self.at_centre}; staff acks: "
            f"{self.staff_acks}; lost {len(self.lost)}, phantom {len(self.phantom)}, duplicates "
            f"{len(self.duplicates)}, out of order {len(self.out_of_order)}, acks not shown "
            f"{len(self.acks_not_shown)}; {self.elapsed_s:.1f} s of faults, {self.settle_s:.1f} s "
            f"to settle"
        )


class FaultCampaign:
    """`run()` once. The stack must be set up and started; the campaign restarts what it kills."""

    def __init__(
        self,
        stack: LocalStack,
        *,
        kills: int,
        devices: int = 10,
        firmware: int = 0,
        targets: tuple[str, ...] = TARGETS,
        gap_s: tuple[float, float] = (0.3, 1.5),
        down_s: tuple[float, float] = (0.0, 1.0),
        alarm_every_s: float = 0.5,
        ack_share: float = 0.5,
        settle_timeout_s: float = 90.0,
        seed: int = 1,
        progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        self.stack = stack
        self.kills = kills
        self.n_devices = devices
        self.n_firmware = firmware
        self.targets = targets
        self.gap_s = gap_s
        self.down_s = down_s
        self.alarm_every_s = alarm_every_s
        self.ack_share = ack_share
        self.settle_timeout_s = settle_timeout_s
        self.rng = random.Random(seed)
        self.progress = progress
        self.devices: list[CampaignDevice] = []
        self.acked_ids: set[str] = set()
        self.result = CampaignResult()
        self._faults_over = False

    # -- the parts

    def _restart(self, target: str) -> None:
        s = self.stack
        if target == "gateway":
            assert s.gateway_proc is not None
            s.gateway_proc.kill()
            time.sleep(self.rng.uniform(*self.down_s))
            s.start_gateway(wait_centre=False)
        elif target == "centre":
            assert s.centre_proc is not None
            s.centre_proc.kill()
            time.sleep(self.rng.uniform(*self.down_s))
            s.start_centre()
        elif target == "village_broker":
            assert s.village_broker is not None
            s.village_broker.kill()
            time.sleep(self.rng.uniform(*self.down_s))
            s.village_broker.start()
            s.village_pid_file.write_text(f"{s.village_broker.pid}\n")
        elif target == "centre_broker":
            assert s.centre_broker is not None
            s.centre_broker.kill()
            time.sleep(self.rng.uniform(*self.down_s))
            s.centre_broker.start()
        else:
            raise ValueError(f"unknown target {target!r}")

    async def _killer(self) -> None:
        for i in range(self.kills):
            await asyncio.sleep(self.rng.uniform(*self.gap_s))
            target = self.rng.choice(self.targets)
            log.info("event=campaign_kill n=%d target=%s", i + 1, target)
            await asyncio.to_thread(self._restart, target)
            self.result.kills[target] += 1
            self.progress(i + 1, self.kills)

    async def _presses(self) -> None:
        while not self._faults_over:
            dev = self.rng.choice(self.devices)
            dev.raise_alarm()
            self.result.alarms += 1
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.alarm_every_s)

    async def _firmware_presses(self) -> None:
        buttons = list(self.stack.buttons.values())
        while buttons and not self._faults_over:
            await asyncio.sleep(self.rng.uniform(2.0, 4.0))
            button = self.rng.choice(buttons)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(button.press)
                self.result.firmware_alarms += 1

    def _alarms(self) -> list[dict[str, Any]]:
        try:
            rows: list[dict[str, Any]] = self.stack.api("GET", "/api/alarms?limit=1000&kind=alarm")
        except (OSError, urllib.error.URLError, ValueError):
            return []
        return rows

    async def _staff(self) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(0.3, 1.0))
            if self._faults_over:
                continue
            rows = await asyncio.to_thread(self._alarms)
            for row in rows:
                if row["state"] != "open" or row["id"] in self.acked_ids:
                    continue
                if self.rng.random() > self.ack_share:
                    continue
                try:
                    await asyncio.to_thread(
                        self.stack.api, "POST", f"/api/alarms/{row['id']}/ack", {"by": "duty"}
                    )
                except (OSError, urllib.error.URLError, ValueError):
                    break  # the centre is down: try again later
                self.acked_ids.add(row["id"])
                self.result.staff_acks += 1

    # -- the run

    async def run(self) -> CampaignResult:
        s = self.stack
        assert s.village_broker is not None
        for i in range(self.n_devices):
            dev_id = f"btn-f{i:03d}"
            key, password = s.register_device(dev_id, f"h-f{i:03d}")
            self.devices.append(CampaignDevice(dev_id, key, password, s.village_broker.port))
        for i in range(self.n_firmware):
            s.add_button(f"btn-fw{i:02d}", f"h-fw{i:02d}").start()
        tasks = [asyncio.create_task(d.run()) for d in self.devices]
        started = time.monotonic()
        workers = [
            asyncio.create_task(self._presses()),
            asyncio.create_task(self._firmware_presses()),
            asyncio.create_task(self._staff()),
        ]
        try:
            await self._killer()
            self._faults_over = True
            self.result.elapsed_s = time.monotonic() - started
            settle_start = time.monotonic()
            await self._settle()
            self.result.settle_s = time.monotonic() - settle_start
        finally:
            for t in [*workers, *tasks]:
                t.cancel()
            for t in [*workers, *tasks]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        return self.result

    def _firmware_state(self) -> dict[str, dict[int, str]]:
        out: dict[str, dict[int, str]] = {}
        for dev_id, button in self.stack.buttons.items():
            try:
                status = button.status()
            except Exception:  # a firmware process that does not answer counts as not shown
                continue
            out[dev_id] = {int(m["c"]): str(m["state"]) for m in status.get("msgs", [])}
        return out

    async def _settle(self) -> None:
        deadline = time.monotonic() + self.settle_timeout_s
        while True:
            rows = await asyncio.to_thread(self._alarms)
            fw = await asyncio.to_thread(self._firmware_state)
            self._judge(rows, fw)
            if self.result.ok or time.monotonic() > deadline:
                return
            await asyncio.sleep(1.0)

    def _judge(self, rows: list[dict[str, Any]], fw: dict[str, dict[int, str]]) -> None:
        r = self.result
        r.lost, r.phantom, r.duplicates, r.out_of_order, r.acks_not_shown = [], [], [], [], []
        ids = Counter(row["id"] for row in rows)
        r.duplicates = [i for i, n in ids.items() if n > 1]
        r.at_centre = len(ids)
        by_device: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_device.setdefault(row["device"], []).append(row)
        for dev in self.devices:
            got = {row["counter"]: row for row in by_device.get(dev.id, [])}
            sent = set(dev.frames)
            r.lost += [f"{dev.id}:{c}" for c in sorted(sent - set(got))]
            r.phantom += [f"{dev.id}:{c}" for c in sorted(set(got) - sent)]
        for dev_id, dev_rows in by_device.items():
            ordered = sorted(dev_rows, key=lambda row: row["counter"])
            seqs = [row["seq"] for row in ordered]
            if seqs != sorted(seqs):
                r.out_of_order.append(f"{dev_id}: counters {[row['counter'] for row in ordered]} "
                                      f"stored as seq {seqs}")
        states = {d.id: d.state for d in self.devices} | fw
        gw = self.stack.gateway_id
        for eid in self.acked_ids:
            _gw, dev_id, counter = eid.split(":")
            if _gw != gw:
                continue
            shown = states.get(dev_id, {}).get(int(counter))
            if shown is None and dev_id in fw:
                continue  # the firmware forgets old entries once acked and replaced
            if shown != "acked":
                r.acks_not_shown.append(f"{eid} shows {shown}")
        for dev_id, msgs in fw.items():
            have = {row["counter"] for row in by_device.get(dev_id, [])}
            r.lost += [
                f"{dev_id}:{c}" for c, s in msgs.items()
                if s in ("stored", "received", "acked") and c not in have
            ]
