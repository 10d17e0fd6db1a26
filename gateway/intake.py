"""Checks each device message: framing, device, MAC, fields (okproto) and the replay rule (§5).

The event counter window (§5.5) needs the events table; the store applies it as it inserts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from device_fw import okproto
from gateway.registry import Device, Registry

STATUS_KINDS = ("hb", "bcr")


@dataclass(frozen=True)
class Accepted:
    device: Device
    kind: str
    counter: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str
    device_id: str | None


def _topic_device(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[3] if len(parts) > 3 and okproto.valid_id(parts[3]) else None


def check(registry: Registry, topic: str, payload: bytes) -> Accepted | Rejected:
    """Pure apart from the in-memory heartbeat watermark, which it advances on acceptance."""
    try:
        device_id, kind, body = okproto.open_up(topic, payload, registry.key_for)
    except okproto.ProtocolError as exc:
        detail = exc.detail
        dev_id = _topic_device(topic)
        if exc.reason == okproto.UNKNOWN_DEVICE and dev_id in registry.devices:
            detail = f"{dev_id} is revoked"
        return Rejected(exc.reason, detail, dev_id)
    device = registry.devices[device_id]
    counter = int(body["c"])
    if kind in STATUS_KINDS:
        # §5.3, §8.3: heartbeats and broadcast reports share one watermark.
        last = registry.hb_counter.get(device_id, 0)
        if counter <= last:
            return Rejected(okproto.REPLAY, f"{kind} counter {counter} <= {last}", device_id)
        registry.hb_counter[device_id] = counter
    else:
        floor = registry.event_floor.get(device_id, 0)
        if counter <= floor:
            return Rejected(okproto.REPLAY, f"event counter {counter} <= floor {floor}", device_id)
    return Accepted(device, kind, counter, body)
