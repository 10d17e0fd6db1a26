"""A protocol-level device: speaks §2-§5 with the shared codec over a real MQTT connection.

Used where real firmware would cost too much (hundreds of devices in a burst benchmark) and to
send what real firmware never would (bad MACs, replays, foreign topics). It is not firmware: it
keeps nothing on flash.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from device_fw import okproto
from transport.mqtt import MqttClient, MqttError


@dataclass
class AckLog:
    # ref -> state -> time.monotonic() of arrival
    seen: dict[int, dict[str, float]] = field(default_factory=dict)
    rejected: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ProtoDevice:
    def __init__(
        self, device_id: str, key: bytes, host: str, port: int, password: str, *, clean: bool = True
    ) -> None:
        self.id = device_id
        self.key = key
        self.client = MqttClient(
            device_id, host, port, username=device_id, password=password, clean_session=clean
        )
        self.acks = AckLog()
        self.counter = 0
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.client.connect()
        await self.client.subscribe(okproto.topic_down(self.id), qos=1)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.client.disconnect()

    async def _read(self) -> None:
        try:
            async for msg in self.client.messages():
                try:
                    body = okproto.open_down(self.key, self.id, msg.topic, msg.payload)
                except okproto.ProtocolError:
                    self.acks.rejected += 1
                    continue
                self.acks.seen.setdefault(int(body["ref"]), {}).setdefault(
                    str(body["s"]), time.monotonic()
                )
                self.acks.changed.set()
        except MqttError:
            pass

    def frame(self, kind: str, counter: int | None = None, **fields: Any) -> tuple[str, bytes, int]:
        if counter is None:
            self.counter += 1
            counter = self.counter
        topic, payload = okproto.encode_up(self.key, self.id, kind, counter, fields)
        return topic, payload, counter

    async def send(self, kind: str = "alarm", counter: int | None = None, **fields: Any) -> int:
        topic, payload, c = self.frame(kind, counter, **fields)
        await self.client.publish(topic, payload, qos=1)
        return c

    async def publish_raw(self, topic: str, payload: bytes, qos: int = 1) -> None:
        await self.client.publish(topic, payload, qos=qos)

    async def wait_ack(self, ref: int, state: str, timeout: float = 10.0) -> float:
        """Waits for an ack; returns its monotonic arrival time."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.acks.seen.get(ref, {}).get(state)
            if got is not None:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.id}: no {state!r} ack for counter {ref} in {timeout}s")
            self.acks.changed.clear()
            try:
                await asyncio.wait_for(self.acks.changed.wait(), timeout=min(left, 0.5))
            except TimeoutError:
                pass
