"""In-process fan-out of what changed at the centre, for the console's server push.

Publishers (ingest on commit of a new event, alarm lifecycle changes, escalation steps,
broadcast progress, gateway health) call `hub.publish(topic, data)` after their transaction
committed; each connected console holds a bounded queue. A console too slow to drain its queue
is dropped (its stream ends, the page reconnects and reloads state), so one stuck browser never
holds memory or delays the others.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

QUEUE_LIMIT = 256


@dataclass(frozen=True)
class Change:
    topic: str  # "alarm", "escalation", "broadcast", "gateway", "device", ...
    data: dict[str, Any]


@dataclass
class LiveHub:
    _subscribers: set[asyncio.Queue[Change | None]] = field(default_factory=set)
    dropped: int = 0

    def publish(self, topic: str, data: dict[str, Any]) -> None:
        change = Change(topic, data)
        for q in list(self._subscribers):
            try:
                q.put_nowait(change)
            except asyncio.QueueFull:
                # Too slow: end its stream (None) so it reconnects and reloads.
                self._subscribers.discard(q)
                self.dropped += 1
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)

    def close(self) -> None:
        """End every console's stream (the centre is stopping): each gets its end marker now
        rather than holding the server's shutdown until its connection is cut."""
        for q in list(self._subscribers):
            self._subscribers.discard(q)
            while not q.empty():
                q.get_nowait()
            q.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[Change | None]:
        q: asyncio.Queue[Change | None] = asyncio.Queue(QUEUE_LIMIT)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Change | None]) -> None:
        self._subscribers.discard(q)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
