"""A protocol-level speaker: checks broadcast copies (§8.2.1) with the shared codec and answers
with the §8.3 reports, over a real MQTT connection.

Used where real firmware would cost too much (hundreds of speakers in the broadcast benchmark).
It "plays" a broadcast by waiting `play_ms` and keeps no queue and nothing on flash: the queue
rules (§8.2.2) are the firmware's and are tested against the firmware.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from device_fw import okproto
from transport.mqtt import MqttClient, MqttError, Will


@dataclass
class PlayLog:
    # broadcast id -> time.monotonic() when its played report was sent
    played: dict[str, float] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    rejected: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ProtoSpeaker:
    def __init__(
        self, device_id: str, key: bytes, host: str, port: int, password: str, *, play_ms: int = 0
    ) -> None:
        self.id = device_id
        self.key = key
        self.play_ms = play_ms
        self.client = MqttClient(
            device_id,
            host,
            port,
            username=device_id,
            password=password,
            clean_session=False,
            will=Will(okproto.topic_up(device_id, "will"), b"offline"),
        )
        self.log = PlayLog()
        # Reports share the heartbeat watermark at the gateway: start above anything earlier.
        self.counter = time.time_ns() // 1_000_000
        self.last_bc = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.client.connect()
        await self.client.subscribe(f"ok/v1/dev/{self.id}/down/#", qos=1)
        self._reader = asyncio.create_task(self._read())
        await self.report_hb()

    async def close(self) -> None:
        for t in (self._reader, *self._tasks):
            if t is not None:
                t.cancel()
        await self.client.disconnect()

    async def power_cut(self) -> None:
        """Vanish without a goodbye: the broker publishes the will."""
        for t in (self._reader, *self._tasks):
            if t is not None:
                t.cancel()
        await self.client.abort()

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    async def report_hb(self) -> None:
        topic, payload = okproto.encode_up(self.key, self.id, "hb", self._next(), {"fw": "proto"})
        await self.client.publish(topic, payload, qos=0)

    async def report(self, bc_id: str, state: str) -> None:
        topic, payload = okproto.encode_up(
            self.key, self.id, "bcr", self._next(), {"id": bc_id, "s": state}
        )
        self.log.states[bc_id] = state
        if state == "played":
            self.log.played[bc_id] = time.monotonic()
        self.log.changed.set()
        await self.client.publish(topic, payload, qos=1)

    async def _read(self) -> None:
        try:
            async for msg in self.client.messages():
                if not msg.topic.endswith("/down/bc"):
                    continue
                try:
                    body = okproto.open_down(self.key, self.id, msg.topic, msg.payload)
                except okproto.ProtocolError:
                    self.log.rejected += 1
                    continue
                c = int(body["c"])
                if c <= self.last_bc or int(body["exp"]) <= time.time_ns() // 1_000_000:
                    self.log.rejected += 1
                    continue
                self.last_bc = c
                task = asyncio.create_task(self._handle(body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except MqttError:
            pass

    async def _handle(self, body: dict[str, object]) -> None:
        bc_id = str(body["id"])
        known = self.log.states.get(bc_id)
        if known is not None:
            await self.report(bc_id, known)  # a copy of one it has: say where it stands
            return
        if body["mt"] == "Cancel":
            ref = str(body.get("ref"))
            await self.report(bc_id, "received")
            if self.log.states.get(ref) not in (None, "played"):
                await self.report(ref, "cancelled")
            return
        await self.report(bc_id, "received")
        await self.report(bc_id, "playing")
        if self.play_ms:
            await asyncio.sleep(self.play_ms / 1000)
        if self.log.states.get(bc_id) == "playing":
            await self.report(bc_id, "played")

    async def wait_played(self, bc_id: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while bc_id not in self.log.played:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.id}: {bc_id} not played within {timeout}s")
            self.log.changed.clear()
            try:
                await asyncio.wait_for(self.log.changed.wait(), timeout=min(left, 0.5))
            except TimeoutError:
                pass
        return self.log.played[bc_id]
